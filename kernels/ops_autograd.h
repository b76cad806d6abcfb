// The layers' call path in C++: the membrane's forward and backward as one
// torch::autograd::Function, registered as the operator membrane_autograd of each backend.
//
// A layer call then costs one operator call from Python, and its backward runs without Python:
// the autograd engine calls backward() below directly, which runs the backward kernels and turns
// the per-neuron gradient of alpha into the gradients of alpha or of tau itself (a scalar tau's
// the fast CUDA backward kernel sums itself: TauSums in kernel_args.h). Gradients of states that
// need none (v0, i0: the layers' states after reset_states) are neither allocated nor stored.
// Given tau (an ops.Decay), forward computes alpha = exp(-1/tau) from tau's values at every call,
// as sinabs does (so bit-identical to its alpha, and never stale, whichever way tau was changed):
// on CUDA inside the membrane kernels (Decay below).
// Surrogates evaluated in PyTorch (SurrogateKind::Given) keep the Python Function of
// exodus_jit/ops/functional.py, which calls the same Ops.
#pragma once

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/custom_function.h>

#include <array>
#include <vector>

#include "ops_impl.h"

namespace exodus {

// Positions of membrane_autograd's arguments (backward returns one gradient per argument).
enum MembraneArg : int {
  kArgU, kArgV0, kArgAlpha, kArgThreshold, kArgSubtract, kArgMinV, kArgTau, kArgOptions, kArgI0, kArgAlphaSyn,
  kArgTauSyn, kArgCount
};

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = c10::optional<at::Tensor>;

// membrane_autograd's constant options, packed by Python into one CPU float64 tensor once per
// MembraneCall (exodus_jit/ops/_registry.py membrane_options, same layout): the dispatcher's
// conversion of Python arguments costs per argument, most for lists (measured on the 2-core box:
// 8.0 us per call with the options as 14 scalars and lists, ~3 us as one tensor). Layout:
// reset_value, spike_kind, max_spikes, reset_kind, norm_input, surrogate_kind, record, sum_out,
// zero_states, the number of surrogate parameters and those, the number of feature dimensions and
// those.
struct MembraneOptions {
  double reset_value;
  int64_t spike_kind, max_spikes, reset_kind;
  bool norm_input;
  int64_t surrogate_kind;
  bool record, sum_out;
  bool zero_states;  // also return zeros in the states' shape, for the layer's next reset_states
  at::ArrayRef<double> surrogate_params;  // views of the options tensor
  c10::SmallVector<int64_t, 5> features;

  explicit MembraneOptions(const at::Tensor& packed) {
    TORCH_CHECK_VALUE(packed.device().is_cpu() && packed.scalar_type() == at::kDouble && packed.dim() == 1 &&
                          packed.is_contiguous(),
                      "membrane_autograd's options must be a contiguous 1-d CPU float64 tensor");
    const double* v = packed.data_ptr<double>();
    const int64_t n = packed.numel();
    auto count_at = [&](int64_t i) {
      TORCH_CHECK_VALUE(i < n && v[i] >= 0 && v[i] == static_cast<double>(static_cast<int64_t>(v[i])),
                        "membrane_autograd's options are malformed");
      return static_cast<int64_t>(v[i]);
    };
    const int64_t params = count_at(9);
    const int64_t dims = count_at(10 + params);
    TORCH_CHECK_VALUE(n == 11 + params + dims, "membrane_autograd's options are malformed");
    reset_value = v[0];
    spike_kind = static_cast<int64_t>(v[1]);
    max_spikes = static_cast<int64_t>(v[2]);
    reset_kind = static_cast<int64_t>(v[3]);
    norm_input = v[4] != 0.0;
    surrogate_kind = static_cast<int64_t>(v[5]);
    record = v[6] != 0.0;
    sum_out = v[7] != 0.0;
    zero_states = v[8] != 0.0;
    surrogate_params = at::ArrayRef<double>(v + 10, params);
    for (int64_t d = 0; d < dims; ++d) features.push_back(count_at(11 + params + d));
  }
};

// A parameter (of any shape broadcastable to the neuron shape) in the kernels' form: (1,) or (F',)
// in the state dtype. As ops.functional._feature_param.
inline at::Tensor kernel_param(const at::Tensor& value, at::ScalarType st, at::IntArrayRef features) {
  const at::Tensor typed = value.to(st);
  if (typed.numel() == 1) return typed.reshape({1});
  return typed.expand(features).reshape({-1});
}

// Values of an alpha computed from tau lie in [0, 1]: checked where reading them is free (the
// CPU; read directly, tensor ops would cost more than the check).
inline void check_decay(const at::Tensor& alpha, const char* name) {
  if (!alpha.device().is_cpu()) return;
  const at::Tensor values = alpha.contiguous();
  bool bad = false;
  with_state_type(values.scalar_type(), [&](auto zero) {
    using A = decltype(zero);
    const A* v = values.data_ptr<A>();
    for (int64_t i = 0; i < values.numel(); ++i) bad |= !(v[i] >= A(0) && v[i] <= A(1));  // NaN too
  });
  TORCH_CHECK_VALUE(!bad, name, " must lie in [0, 1] (alpha = exp(-1/tau)), got values outside");
}

// alpha = exp(-1/tau) for the kernels, and what tau's gradient needs, all from tau's values now.
// Where the backend's kernels compute alpha from tau themselves (CUDA: Param::from_tau, the same
// operations as PyTorch's, so the same bits) and tau is one value or one per neuron in the state
// dtype, that is tau itself: no launch before the membrane's, nothing more to keep. Otherwise
// with PyTorch's operations, as sinabs computes alpha (torch.exp(-1.0 / tau) is reciprocal,
// times -1, exp), keeping what the gradient needs.
struct Decay {
  at::Tensor alpha;          // the kernel parameter: alpha, or tau when from_tau
  bool from_tau = false;
  at::Tensor decay;          // not from_tau: alpha in tau's shape and dtype
  at::Tensor reciprocal_sq;  // not from_tau: (1/tau)^2 in tau's shape and dtype
};

template <class Backend>
Decay decay_of(const at::Tensor& tau, at::ScalarType st, at::IntArrayRef features) {
  if (Backend::kDecayInKernels && tau.scalar_type() == st && tau.is_contiguous() &&
      (tau.numel() == 1 || tau.sizes() == features))
    return {tau, true, at::Tensor(), at::Tensor()};
  const at::Tensor reciprocal = tau.reciprocal();
  const at::Tensor decay = reciprocal.mul(-1.0).exp();
  return {kernel_param(decay, st, features), false, decay, reciprocal.mul(reciprocal)};
}

// The gradient of tau from the per-neuron (B, F') gradient of alpha. From tau in the kernels:
// the backend's one launch (a deterministic sum, then autograd's arithmetic). Otherwise with the
// operations, in the order, that autograd runs backward through
// kernel_param(exp(reciprocal(tau) * -1)), so it equals the gradient of the paths that
// differentiate alpha with autograd, to the bit.
template <class Backend>
at::Tensor decay_grad(const at::Tensor& per_neuron, const at::Tensor& tau, const Decay& d, at::IntArrayRef features) {
  if constexpr (Backend::kDecayInKernels) {
    if (d.from_tau) return Backend::decay_grad(per_neuron, tau);
  }
  const at::Tensor g_alpha =
      (tau.numel() == 1 ? per_neuron.sum() : per_neuron.sum(0).reshape(features).sum_to_size(tau.sizes()))
          .reshape(tau.sizes());
  // .to(tau's dtype), exp's backward, the reciprocal's (the two signs cancel exactly)
  return g_alpha.to(tau.scalar_type()).mul(d.decay).mul(d.reciprocal_sq);
}

// A (B, F') per-neuron gradient summed into its parameter's (1,) or (F',) shape.
inline at::Tensor reduce_param_grad(const at::Tensor& per_neuron, const at::Tensor& param) {
  if (param.numel() == 1) return per_neuron.sum().reshape(param.sizes());
  return per_neuron.sum(0).reshape(param.sizes());
}

template <class Backend>
struct MembraneFunction : torch::autograd::Function<MembraneFunction<Backend>> {
  // Saved tensors, in this order; absent optional ones are saved undefined.
  enum Saved { kSavedCkpt, kSavedU, kSavedV0, kSavedAlpha, kSavedThreshold, kSavedSubtract, kSavedMinV, kSavedI0,
               kSavedAlphaSyn, kSavedTau, kSavedDecay, kSavedReciprocalSq, kSavedTauSyn, kSavedDecaySyn,
               kSavedReciprocalSqSyn };

  static variable_list forward(AutogradContext* ctx, const at::Tensor& u, const at::Tensor& v0,
                               const OptTensor& alpha_given, const at::Tensor& threshold, const at::Tensor& subtract,
                               const OptTensor& min_v, const OptTensor& tau, const at::Tensor& options,
                               const OptTensor& i0, const OptTensor& alpha_syn_given, const OptTensor& tau_syn,
                               bool save) {
    const MembraneOptions o(options);
    const at::IntArrayRef features = o.features;
    TORCH_CHECK_VALUE(o.surrogate_kind != static_cast<int64_t>(SurrogateKind::Given),
                      "membrane_autograd evaluates built-in surrogates only");
    TORCH_CHECK_VALUE(alpha_given.has_value() != tau.has_value(), "give alpha or tau");
    TORCH_CHECK_VALUE(!i0.has_value() || alpha_syn_given.has_value() != tau_syn.has_value(),
                      "with i0, give alpha_syn or tau_syn");
    const at::ScalarType st = state_type(u.scalar_type());
    // alphas from taus: computed now, so changes of tau's values (also through .data) always show
    const Decay decay = tau.has_value() ? decay_of<Backend>(*tau, st, features) : Decay{};
    const Decay decay_syn = tau_syn.has_value() && i0.has_value() ? decay_of<Backend>(*tau_syn, st, features) : Decay{};
    const at::Tensor alpha = tau.has_value() ? decay.alpha : *alpha_given;
    OptTensor alpha_syn;
    if (i0.has_value()) alpha_syn = decay_syn.alpha.defined() ? decay_syn.alpha : *alpha_syn_given;
    if (tau.has_value() && !decay.from_tau) check_decay(alpha, "alpha");
    if (decay_syn.alpha.defined() && !decay_syn.from_tau) check_decay(*alpha_syn, "alpha_syn");

    const int64_t save_kind = static_cast<int64_t>(save ? SaveKind::Checkpoints : SaveKind::Nothing);
    // the per-neuron outputs in the states' shape (B, *features), not (B, F) for Python to view
    // (a layer would clone such views: a launch per state); the zeros too, written by the kernel:
    // a layer's next reset_states takes them as its states instead of launching a fill of its own
    c10::SmallVector<int64_t, 6> state_shape{u.size(0)};
    state_shape.append(features.begin(), features.end());
    // no placeholder tensors for what is not computed: returned are only the outputs computed
    // (Outputs), so each call allocates and wraps no more than it needs
    ForwardOutputs f = Ops<Backend>::template forward_outputs<false>(
        ForwardRequest{state_shape, o.zero_states}, u, v0, alpha, threshold, subtract, min_v, o.reset_value, o.spike_kind,
        o.max_spikes, o.reset_kind, o.norm_input, save_kind, o.record, o.sum_out, i0, alpha_syn, decay.from_tau,
        decay_syn.from_tau);
    const at::Tensor& ckpt = f.saved;
    ctx->set_materialize_grads(false);  // unused outputs get undefined gradients, not zeros to read
    if (save) {
      ctx->save_for_backward({ckpt, u, v0, alpha, threshold, subtract, min_v.value_or(at::Tensor()),
                              i0.value_or(at::Tensor()), alpha_syn.value_or(at::Tensor()),
                              tau.value_or(at::Tensor()), decay.decay, decay.reciprocal_sq,
                              tau_syn.value_or(at::Tensor()), decay_syn.decay, decay_syn.reciprocal_sq});
      ctx->saved_data["options"] = options;
      ctx->saved_data["from_tau"] = static_cast<int64_t>(decay.from_tau) | static_cast<int64_t>(decay_syn.from_tau) << 1;
      ctx->saved_data["edges"] = edge_indices(alpha_given, min_v, tau, i0, alpha_syn_given, tau_syn);
    }
    variable_list outputs{f.out, f.v_final};
    if (o.sum_out) outputs.push_back(f.out_sum);
    if (o.record) outputs.push_back(f.w_rec);
    if (i0.has_value()) outputs.push_back(f.i_final);
    if (f.v_zero.defined()) {
      variable_list zeros{f.v_zero};
      if (f.i_zero.defined()) zeros.push_back(f.i_zero);
      ctx->mark_non_differentiable(zeros);
      outputs.insert(outputs.end(), zeros.begin(), zeros.end());
    }
    return outputs;
  }

  // Where each output of forward is in its list (and so its gradient in backward's), -1 where
  // forward does not return it: out and v_final always, then out_sum, w_rec, i_final as
  // computed, then the zero states (no gradients).
  struct Outputs {
    int out = 0, v_final = 1, out_sum = -1, w_rec = -1, i_final = -1, v_zero = -1, i_zero = -1;
    Outputs(const MembraneOptions& o, bool syn) {
      int next = 2;
      if (o.sum_out) out_sum = next++;
      if (o.record) w_rec = next++;
      if (syn) i_final = next++;
      if (o.zero_states) v_zero = next++;
      if (o.zero_states && syn) i_zero = next++;
    }
  };

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // nothing saved: only inputs without gradients (threshold, subtract, min_v) asked for them
    if (!ctx->saved_data.count("options")) return variable_list(kArgCount + 1);
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor options = ctx->saved_data["options"].toTensor();
    const MembraneOptions o(options);
    const at::IntArrayRef features = o.features;
    const std::vector<int64_t> edges = ctx->saved_data["edges"].toIntVector();
    auto needs = [&](int arg) { return edges[arg] >= 0 && ctx->needs_input_grad(edges[arg]); };
    // saved tensors absent when undefined; gradients also when empty (those of empty placeholder outputs)
    auto saved_or_none = [](const at::Tensor& t) { return t.defined() ? OptTensor(t) : OptTensor(); };
    auto grad_or_none = [](const at::Tensor& t) { return t.defined() && t.numel() > 0 ? OptTensor(t) : OptTensor(); };

    const at::Tensor& u = saved[kSavedU];
    const at::Tensor& alpha_syn = saved[kSavedAlphaSyn];
    const bool syn = alpha_syn.defined();
    const Outputs outputs(o, syn);
    auto grad_of = [&](int output) { return output >= 0 ? grads[output] : at::Tensor(); };
    // the per-neuron outputs' gradients come in the states' shape (B, *features): as (B, F)
    auto state_grad = [&](int output) {
      const OptTensor g = grad_or_none(grad_of(output));
      return g.has_value() ? OptTensor(g->reshape({u.size(0), u.size(2)})) : g;
    };
    at::Tensor g_out = grads[outputs.out];
    if (!g_out.defined()) {
      // only other outputs' gradients came: a stride-0 zero costs no memory traffic
      g_out = at::zeros({}, u.options()).expand(u.sizes());
    }
    const at::Tensor& alpha = saved[kSavedAlpha];  // tau where the kernels compute alpha from it
    const int64_t from_tau = ctx->saved_data["from_tau"].toInt();
    const Decay decay{alpha, (from_tau & 1) != 0, saved[kSavedDecay], saved[kSavedReciprocalSq]};
    const Decay decay_syn{alpha_syn, (from_tau & 2) != 0, saved[kSavedDecaySyn], saved[kSavedReciprocalSqSyn]};
    const bool alpha_grad = needs(kArgAlpha) || needs(kArgTau);
    const bool alpha_syn_grad = syn && (needs(kArgAlphaSyn) || needs(kArgTauSyn));
    // no placeholder tensors for the gradients not computed; scalar taus' gradients summed in the
    // backward kernel where the backend can (TauSums), saving a launch, a memset and allocations
    BackwardRequest request;
    request.v0_grad = needs(kArgV0);
    request.i0_grad = needs(kArgI0);
    request.sum_tau = needs(kArgTau);  // where tau is scalar and alpha from_tau (backward_grads checks)
    request.sum_tau_syn = needs(kArgTauSyn);
    const BackwardGrads g = Ops<Backend>::template backward_grads<false>(
        request, g_out, state_grad(outputs.out_sum), grad_or_none(grad_of(outputs.w_rec)),
        state_grad(outputs.v_final), saved[kSavedCkpt], u, saved[kSavedV0], alpha,
        saved[kSavedThreshold], saved[kSavedSubtract], saved_or_none(saved[kSavedMinV]), o.reset_value, o.spike_kind,
        o.max_spikes, o.reset_kind, o.norm_input, o.surrogate_kind, o.surrogate_params, c10::nullopt, alpha_grad,
        syn ? state_grad(outputs.i_final) : OptTensor(), saved_or_none(saved[kSavedI0]),
        saved_or_none(alpha_syn), alpha_syn_grad, decay.from_tau, decay_syn.from_tau);

    variable_list result(kArgCount);
    if (needs(kArgU)) result[kArgU] = g.g_u;
    if (needs(kArgV0)) result[kArgV0] = g.g_v0;
    if (needs(kArgAlpha)) result[kArgAlpha] = reduce_param_grad(g.g_alpha, alpha);
    if (needs(kArgTau))
      result[kArgTau] = g.g_tau.defined() ? g.g_tau : decay_grad<Backend>(g.g_alpha, saved[kSavedTau], decay, features);
    if (needs(kArgI0)) result[kArgI0] = g.g_i0;
    if (needs(kArgAlphaSyn)) result[kArgAlphaSyn] = reduce_param_grad(g.g_alpha_syn, alpha_syn);
    if (needs(kArgTauSyn))
      result[kArgTauSyn] = g.g_tau_syn.defined()
                               ? g.g_tau_syn
                               : decay_grad<Backend>(g.g_alpha_syn, saved[kSavedTauSyn], decay_syn, features);
    result.emplace_back();  // the `save` flag
    return result;
  }

  // For each argument, its index among the autograd edges (the tensor arguments present), or -1.
  static std::vector<int64_t> edge_indices(const OptTensor& alpha, const OptTensor& min_v, const OptTensor& tau,
                                           const OptTensor& i0, const OptTensor& alpha_syn, const OptTensor& tau_syn) {
    std::vector<int64_t> edges(kArgCount, -1);
    int64_t next = 0;
    auto present = [](const OptTensor* t) { return t == nullptr || (t->has_value() && (*t)->defined()); };
    const std::array<std::pair<int, const OptTensor*>, kArgCount> order = {{{kArgU, nullptr}, {kArgV0, nullptr},
        {kArgAlpha, &alpha}, {kArgThreshold, nullptr}, {kArgSubtract, nullptr}, {kArgMinV, &min_v}, {kArgTau, &tau},
        {kArgOptions, nullptr}, {kArgI0, &i0}, {kArgAlphaSyn, &alpha_syn}, {kArgTauSyn, &tau_syn}}};
    for (const auto& [arg, t] : order)
      if (present(t)) edges[arg] = next++;
    return edges;
  }

  // The operator: decides whether backward will be needed (as autograd will: grad mode on and an
  // input that takes gradients), so forward keeps checkpoints only then.
  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> call(
      const at::Tensor& u, const at::Tensor& v0, const OptTensor& alpha, const at::Tensor& threshold,
      const at::Tensor& subtract, const OptTensor& min_v, const OptTensor& tau, const at::Tensor& options,
      const OptTensor& i0, const OptTensor& alpha_syn, const OptTensor& tau_syn) {
    auto takes_grad = [](const OptTensor& t) { return t.has_value() && t->defined() && t->requires_grad(); };
    const bool save = at::GradMode::is_enabled() &&
                      (u.requires_grad() || v0.requires_grad() || takes_grad(alpha) || takes_grad(tau) ||
                       takes_grad(i0) || takes_grad(alpha_syn) || takes_grad(tau_syn));
    const variable_list out =
        MembraneFunction::apply(u, v0, alpha, threshold, subtract, min_v, tau, options, i0, alpha_syn, tau_syn, save);
    // the outputs not computed are undefined tensors (None in Python)
    const Outputs at(MembraneOptions(options), i0.has_value());
    auto output = [&](int i) { return i >= 0 ? out[i] : at::Tensor(); };
    return {output(at.out),     output(at.w_rec),  output(at.v_final), output(at.out_sum),
            output(at.i_final), output(at.v_zero), output(at.i_zero)};
  }
};

}  // namespace exodus

// membrane_autograd in a backend namespace (beside EXODUS_DEFINE_OPS's operators): returns
// (output, recorded states or None, final state, output summed over time or None, final
// synaptic current or None, zeros in the states' shape for the next reset or None (the
// options' zero_states; i_syn's only with i0), likewise), differentiable in u, v0, alpha or tau, i0, alpha_syn or tau_syn.
// Give alpha in the kernels' form ((1,) or (F',), state dtype) or tau (any shape broadcastable
// to the neuron shape, the `features` of options); with i0 likewise alpha_syn or tau_syn.
// options: the constant options in one CPU float64 tensor (MembraneOptions).
#define EXODUS_DEFINE_AUTOGRAD_OPS(NAMESPACE, BACKEND)                                                          \
  TORCH_LIBRARY_FRAGMENT(NAMESPACE, m) {                                                                        \
    m.def("membrane_autograd(Tensor u, Tensor v0, Tensor? alpha, Tensor threshold, Tensor subtract, "          \
          "Tensor? min_v, Tensor? tau, Tensor options, Tensor? i0=None, Tensor? alpha_syn=None, "               \
          "Tensor? tau_syn=None) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",                  \
          &exodus::MembraneFunction<BACKEND>::call);                                                            \
  }
