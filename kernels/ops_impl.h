// Host side of the operators, shared by the CPU and CUDA extensions: checks tensors, allocates
// outputs, fills the kernel argument structs and hands them to a Backend's launchers.
//
// The public, documented checks live in Python (exodus_jit/ops); the TORCH_CHECKs here are the
// last line that keeps a bad call from ever reaching a kernel.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/accumulate.h>
#include <c10/util/strides.h>
#include <torch/library.h>

#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernel_args.h"

namespace exodus {

inline DType dtype_of(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::Float32;
    case at::kDouble: return DType::Float64;
    case at::kHalf: return DType::Float16;
    case at::kBFloat16: return DType::BFloat16;
    default: TORCH_CHECK_TYPE(false, name, " must be float32, float64, float16 or bfloat16, got ", t.scalar_type());
  }
}

inline at::ScalarType state_type(at::ScalarType data) { return data == at::kDouble ? at::kDouble : at::kFloat; }

inline void check_same_device(const at::Tensor& ref, const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " is on ", t.device(), " but the input is on ", ref.device());
}

inline Shape shape_of(const at::Tensor& x, const char* name) {
  TORCH_CHECK_VALUE(x.dim() == 3, name, " must be (batch, time, features), got ", x.dim(), " dimensions");
  return {x.size(0), x.size(1), x.size(2)};
}

inline View3 view3(const at::Tensor& t) { return {t.data_ptr(), t.stride(0), t.stride(1), t.stride(2)}; }

// A (B, F) or (B, T, F) state-typed tensor, made contiguous.
template <typename A>
const A* state_ptr(const at::Tensor& ref, const at::Tensor& t, at::IntArrayRef shape, const char* name,
                   std::vector<at::Tensor>& keep) {
  check_same_device(ref, t, name);
  TORCH_CHECK_VALUE(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == c10::CppTypeToScalarType<A>::value, name, " must be ",
                   c10::CppTypeToScalarType<A>::value, ", got ", t.scalar_type());
  keep.push_back(t.contiguous());
  return keep.back().data_ptr<A>();
}

template <typename A>
Param<A> param(const at::Tensor& ref, const at::Tensor& t, int64_t features, const char* name,
               std::vector<at::Tensor>& keep, bool from_tau = false) {
  check_same_device(ref, t, name);
  TORCH_CHECK_VALUE(t.numel() == 1 || t.numel() == features, name, " must have 1 or ", features,
                    " (one per feature) elements, got ", t.numel());
  TORCH_CHECK_TYPE(t.scalar_type() == c10::CppTypeToScalarType<A>::value, name, " must be ",
                   c10::CppTypeToScalarType<A>::value, ", got ", t.scalar_type());
  keep.push_back(t.contiguous());
  return {keep.back().data_ptr<A>(), t.numel() == 1 ? 0 : 1, from_tau};
}

template <typename A>
NeuronParams<A> neuron_params(const at::Tensor& u, int64_t features, const at::Tensor& alpha,
                              const at::Tensor& threshold, const at::Tensor& subtract,
                              const c10::optional<at::Tensor>& min_v, double reset_value, int64_t spike_kind,
                              int64_t max_spikes, int64_t reset_kind, bool norm_input,
                              std::vector<at::Tensor>& keep, bool alpha_from_tau) {
  TORCH_CHECK_VALUE(spike_kind >= 0 && spike_kind <= 3, "unknown spike_kind ", spike_kind);
  TORCH_CHECK_VALUE(reset_kind == 0 || reset_kind == 1, "unknown reset_kind ", reset_kind);
  NeuronParams<A> p;
  p.alpha = param<A>(u, alpha, features, alpha_from_tau ? "tau" : "alpha", keep, alpha_from_tau);
  p.threshold = param<A>(u, threshold, features, "threshold", keep);
  p.subtract = param<A>(u, subtract, features, "subtract_value", keep);
  p.min_v = min_v.has_value() ? param<A>(u, *min_v, features, "min_v_mem", keep) : Param<A>{nullptr, 0};
  p.reset_value = static_cast<A>(reset_value);
  p.max_spikes = static_cast<A>(max_spikes);
  p.spike = static_cast<SpikeKind>(spike_kind);
  p.reset = static_cast<ResetKind>(reset_kind);
  p.norm_input = norm_input;
  return p;
}

inline int64_t checkpoints(int64_t steps) { return (steps + kCheckpointSteps - 1) / kCheckpointSteps; }

// (B, C, F) membrane checkpoints; with the fused synaptic stage (2, B, C, F): the membrane's, then
// the current's.
inline std::vector<int64_t> checkpoint_shape(const Shape& shape, bool syn) {
  if (syn) return {2, shape.batch, checkpoints(shape.time), shape.features};
  return {shape.batch, checkpoints(shape.time), shape.features};
}

// Whether the fused synaptic stage is asked for: i0 and alpha_syn come together.
inline bool check_synapse(const c10::optional<at::Tensor>& i0, const c10::optional<at::Tensor>& alpha_syn) {
  TORCH_CHECK_VALUE(i0.has_value() == alpha_syn.has_value(), "i0 and alpha_syn go together");
  return alpha_syn.has_value();
}

inline at::Tensor no_tensor(const at::Tensor& like, at::ScalarType type) { return at::empty({0}, like.options().dtype(type)); }

// Calls fill(A{}) with the state type A: double for float64 data, float otherwise.
template <typename Fill>
void with_state_type(at::ScalarType st, Fill fill) {
  if (st == at::kDouble) fill(double{});
  else fill(float{});
}

// Checkpoints of `shape` in the state type st, with `scratch` more words behind them in the same
// allocation (TauSums), or none.
inline at::Tensor checkpoints_with_scratch(const at::Tensor& u, at::IntArrayRef shape, at::ScalarType st,
                                           int64_t scratch) {
  if (scratch == 0) return at::empty(shape, u.options().dtype(st));
  const int64_t numel = c10::multiply_integers(shape);
  return at::empty({numel + scratch}, u.options().dtype(st)).as_strided(shape, c10::contiguous_strides(shape), 0);
}

// The partials and the counter of TauSums behind float32 checkpoints `words` long, or nulls where
// the checkpoints' storage does not hold them (not from membrane_forward: a checkpoint tensor
// given to the operator by hand).
inline std::pair<float*, unsigned*> tau_sums_scratch(const at::Tensor& ckpt, int64_t words) {
  if (ckpt.scalar_type() != at::kFloat || !ckpt.is_contiguous() ||
      ckpt.storage().nbytes() < (ckpt.storage_offset() + ckpt.numel() + words) * sizeof(float))
    return {nullptr, nullptr};
  float* partials = ckpt.data_ptr<float>() + ckpt.numel();
  return {partials, reinterpret_cast<unsigned*>(partials + words - 1)};
}

// What the C++ autograd path (ops_autograd.h) asks of a forward beyond the operator's arguments:
// the states' shape (B, *features) for the per-neuron outputs (v_final, i_final, out_sum and the
// zeros; empty: (B, F)), so that no caller reshapes them into views; and zeros in that shape for
// the layer's next reset_states, written by the kernel beside v_final.
struct ForwardRequest {
  at::IntArrayRef state_shape;
  bool zero_states = false;
};

// The outputs of a forward: the operator's, then the zero states asked for (else undefined).
struct ForwardOutputs {
  at::Tensor out, saved, w_rec, v_final, out_sum, i_final, v_zero, i_zero;
};

// What the C++ autograd path (ops_autograd.h) asks of a backward beyond the operator's arguments:
// which state gradients it needs, and whether it takes tau's (tau_syn's) gradient itself where
// the backend's kernel can sum it (a scalar tau given as alpha from_tau: TauSums) instead of
// alpha's per neuron.
struct BackwardRequest {
  bool v0_grad = true, i0_grad = true;
  bool sum_tau = false, sum_tau_syn = false;
};

// The gradients of a backward; g_tau (g_tau_syn), in tau's shape, defined where the kernel
// summed it (TauSums), and then g_alpha (g_alpha_syn) is not.
struct BackwardGrads {
  at::Tensor g_u, g_v0, g_alpha, g_i0, g_alpha_syn, g_tau, g_tau_syn;
};

// Backend provides: template <typename A> static void run(const Args<A>&) for each Args struct,
// a Guard type constructed from the input tensor (device guard; nothing on the CPU), and the
// in-kernel sums of TauSums: tau_sums_words(neurons) (0: none) and sums_taus_in_kernel(args).
template <class Backend>
struct Ops {
  // alpha given as tau (the kernels compute exp(-1/tau)) only where the kernels do it as PyTorch does
  static void check_from_tau(bool from_tau) {
    TORCH_CHECK_VALUE(!from_tau || Backend::kDecayInKernels, "this backend takes alpha, not tau");
  }

  // The operator membrane_forward: its outputs, empty tensors for those it does not compute (as
  // its schema returns tensors).
  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> membrane_forward(
      const at::Tensor& u, const at::Tensor& v0, const at::Tensor& alpha, const at::Tensor& threshold,
      const at::Tensor& subtract, const c10::optional<at::Tensor>& min_v, double reset_value, int64_t spike_kind,
      int64_t max_spikes, int64_t reset_kind, bool norm_input, int64_t save, bool record, bool sum_out,
      const c10::optional<at::Tensor>& i0, const c10::optional<at::Tensor>& alpha_syn, bool alpha_from_tau,
      bool alpha_syn_from_tau) {
    ForwardOutputs o = forward_outputs<true>(ForwardRequest{}, u, v0, alpha, threshold, subtract, min_v,
                                             reset_value, spike_kind, max_spikes, reset_kind, norm_input, save,
                                             record, sum_out, i0, alpha_syn, alpha_from_tau, alpha_syn_from_tau);
    return {o.out, o.saved, o.w_rec, o.v_final, o.out_sum, o.i_final};
  }

  // membrane_forward's work, with a request (ForwardRequest) beyond its arguments. Placeholders:
  // the outputs not computed are empty tensors; without, they are undefined: for the C++ autograd
  // path, which returns only what it computed (each allocation costs host time before the launch).
  template <bool Placeholders>
  static ForwardOutputs forward_outputs(
      const ForwardRequest& request, const at::Tensor& u, const at::Tensor& v0, const at::Tensor& alpha,
      const at::Tensor& threshold, const at::Tensor& subtract, const c10::optional<at::Tensor>& min_v,
      double reset_value, int64_t spike_kind, int64_t max_spikes, int64_t reset_kind, bool norm_input, int64_t save,
      bool record, bool sum_out, const c10::optional<at::Tensor>& i0, const c10::optional<at::Tensor>& alpha_syn,
      bool alpha_from_tau, bool alpha_syn_from_tau) {
    typename Backend::Guard guard(u);
    auto none = [&](at::ScalarType type) { return Placeholders ? no_tensor(u, type) : at::Tensor(); };
    check_from_tau(alpha_from_tau || alpha_syn_from_tau);
    const Shape shape = shape_of(u, "u");
    const DType dtype = dtype_of(u, "u");
    const at::ScalarType st = state_type(u.scalar_type());
    TORCH_CHECK_VALUE(save >= 0 && save <= 2, "unknown save kind ", save);
    const bool syn = check_synapse(i0, alpha_syn);
    TORCH_CHECK_VALUE(!syn || (!record && save != static_cast<int64_t>(SaveKind::Trajectory)),
                      "the fused synaptic stage does not record states or keep the membrane trajectory");
    ForwardOutputs o;
    o.out = at::empty({shape.batch, shape.time, shape.features}, u.options());
    // where the backward can sum a scalar tau's gradient in its kernel (TauSums), its scratch
    // travels behind the checkpoints, in their allocation, its counter zeroed by this launch
    const bool scalar_tau = (alpha_from_tau && alpha.numel() == 1) ||
                            (syn && alpha_syn_from_tau && alpha_syn->numel() == 1);
    const int64_t tau_sums_words =
        save == static_cast<int64_t>(SaveKind::Checkpoints) && st == at::kFloat && scalar_tau
            ? Backend::tau_sums_words(shape.neurons())
            : 0;
    o.saved = save == static_cast<int64_t>(SaveKind::Checkpoints)
                  ? checkpoints_with_scratch(u, checkpoint_shape(shape, syn), st, tau_sums_words)
              : save == static_cast<int64_t>(SaveKind::Trajectory)
                  ? at::empty({shape.batch, shape.time, shape.features}, u.options().dtype(st))
                  : none(st);
    o.w_rec = record ? at::empty({shape.batch, shape.time, shape.features}, u.options().dtype(st)) : none(st);
    const int64_t flat[] = {shape.batch, shape.features};  // no heap allocation per call
    const at::IntArrayRef states = request.state_shape.empty() ? at::IntArrayRef(flat) : request.state_shape;
    TORCH_CHECK_VALUE(c10::multiply_integers(states) == shape.batch * shape.features, "the states' shape ", states,
                      " does not hold (", shape.batch, ", ", shape.features, ") neurons");
    auto per_neuron = [&] { return at::empty(states, u.options().dtype(st)); };
    o.v_final = per_neuron();
    o.out_sum = sum_out ? per_neuron() : none(st);
    o.i_final = syn ? per_neuron() : none(st);
    if (request.zero_states) {
      o.v_zero = per_neuron();
      if (syn) o.i_zero = per_neuron();
    }
    std::vector<at::Tensor> keep;
    auto fill = [&](auto zero) {
      using A = decltype(zero);
      MembraneForwardArgs<A> a;
      a.shape = shape;
      a.dtype = dtype;
      a.p = neuron_params<A>(u, shape.features, alpha, threshold, subtract, min_v, reset_value, spike_kind,
                             max_spikes, reset_kind, norm_input, keep, alpha_from_tau);
      a.u = view3(u);
      a.v0 = state_ptr<A>(u, v0, {shape.batch, shape.features}, "v0", keep);
      a.out = o.out.data_ptr();
      a.ckpt = save == static_cast<int64_t>(SaveKind::Checkpoints) ? o.saved.template data_ptr<A>() : nullptr;
      a.v_pre = save == static_cast<int64_t>(SaveKind::Trajectory) ? o.saved.template data_ptr<A>() : nullptr;
      a.w_rec = record ? o.w_rec.template data_ptr<A>() : nullptr;
      a.v_final = o.v_final.template data_ptr<A>();
      a.out_sum = sum_out ? o.out_sum.template data_ptr<A>() : nullptr;
      if (o.v_zero.defined()) a.v_zero = o.v_zero.template data_ptr<A>();
      if (tau_sums_words > 0) a.tau_sums_counter = tau_sums_scratch(o.saved, tau_sums_words).second;
      if (syn) {
        a.syn.alpha = param<A>(u, *alpha_syn, shape.features, "alpha_syn", keep, alpha_syn_from_tau);
        a.syn.i0 = state_ptr<A>(u, *i0, {shape.batch, shape.features}, "i0", keep);
        a.syn.i_final = o.i_final.template data_ptr<A>();
        if (o.i_zero.defined()) a.syn.i_zero = o.i_zero.template data_ptr<A>();
        a.syn.ckpt = a.ckpt ? a.ckpt + shape.batch * checkpoints(shape.time) * shape.features : nullptr;
      }
      if (shape.neurons() > 0) Backend::run(a);
    };
    with_state_type(st, fill);
    return o;
  }

  // The operator membrane_backward: all gradients asked for by its arguments, placeholders
  // (empty tensors) for those it does not compute.
  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> membrane_backward(
      const at::Tensor& g_out, const c10::optional<at::Tensor>& g_out_sum, const c10::optional<at::Tensor>& g_wrec,
      const c10::optional<at::Tensor>& g_vfinal,
      const at::Tensor& ckpt, const at::Tensor& u, const at::Tensor& v0, const at::Tensor& alpha,
      const at::Tensor& threshold, const at::Tensor& subtract, const c10::optional<at::Tensor>& min_v,
      double reset_value, int64_t spike_kind, int64_t max_spikes, int64_t reset_kind, bool norm_input,
      int64_t surrogate_kind, at::ArrayRef<double> surrogate_params, const c10::optional<at::Tensor>& sigma,
      bool alpha_grad, const c10::optional<at::Tensor>& g_ifinal, const c10::optional<at::Tensor>& i0,
      const c10::optional<at::Tensor>& alpha_syn, bool alpha_syn_grad, bool alpha_from_tau, bool alpha_syn_from_tau) {
    BackwardGrads g = backward_grads<true>(
        BackwardRequest{}, g_out, g_out_sum, g_wrec, g_vfinal, ckpt, u, v0, alpha, threshold, subtract, min_v,
        reset_value, spike_kind, max_spikes, reset_kind, norm_input, surrogate_kind, surrogate_params, sigma,
        alpha_grad, g_ifinal, i0, alpha_syn, alpha_syn_grad, alpha_from_tau, alpha_syn_from_tau);
    return {g.g_u, g.g_v0, g.g_alpha, g.g_i0, g.g_alpha_syn};
  }

  // membrane_backward's work, with a request (BackwardRequest) beyond its arguments; Placeholders:
  // as membrane_forward's, for the gradients it does not compute.
  template <bool Placeholders>
  static BackwardGrads backward_grads(
      const BackwardRequest& request, const at::Tensor& g_out, const c10::optional<at::Tensor>& g_out_sum,
      const c10::optional<at::Tensor>& g_wrec, const c10::optional<at::Tensor>& g_vfinal,
      const at::Tensor& ckpt, const at::Tensor& u, const at::Tensor& v0, const at::Tensor& alpha,
      const at::Tensor& threshold, const at::Tensor& subtract, const c10::optional<at::Tensor>& min_v,
      double reset_value, int64_t spike_kind, int64_t max_spikes, int64_t reset_kind, bool norm_input,
      int64_t surrogate_kind, at::ArrayRef<double> surrogate_params, const c10::optional<at::Tensor>& sigma,
      bool alpha_grad, const c10::optional<at::Tensor>& g_ifinal, const c10::optional<at::Tensor>& i0,
      const c10::optional<at::Tensor>& alpha_syn, bool alpha_syn_grad, bool alpha_from_tau, bool alpha_syn_from_tau) {
    typename Backend::Guard guard(u);
    auto none = [&](at::ScalarType type) { return Placeholders ? no_tensor(u, type) : at::Tensor(); };
    check_from_tau(alpha_from_tau || alpha_syn_from_tau);
    const Shape shape = shape_of(u, "u");
    const DType dtype = dtype_of(u, "u");
    const at::ScalarType st = state_type(u.scalar_type());
    TORCH_CHECK_VALUE(g_out.sizes() == u.sizes(), "grad_output must have the input's shape");
    TORCH_CHECK_TYPE(g_out.scalar_type() == u.scalar_type(), "grad_output must have the input's dtype");
    TORCH_CHECK_VALUE(surrogate_kind >= 0 && surrogate_kind <= 5, "unknown surrogate_kind ", surrogate_kind);
    TORCH_CHECK_VALUE(surrogate_params.size() <= static_cast<size_t>(kSurrogateParams), "too many surrogate_params");
    TORCH_CHECK_VALUE(surrogate_kind != 0 || spike_kind == 0 || sigma.has_value(),
                      "surrogate_kind 0 (given) needs the sigma tensor");
    check_same_device(u, g_out, "grad_output");
    const bool syn = check_synapse(i0, alpha_syn);
    TORCH_CHECK_VALUE(!syn || (!g_wrec.has_value() && (surrogate_kind != 0 || spike_kind == 0)),
                      "the fused synaptic stage takes no recorded states' or given surrogate's gradients");
    auto per_neuron = [&] { return at::empty({shape.batch, shape.features}, u.options().dtype(st)); };
    BackwardGrads grads;
    grads.g_u = at::empty({shape.batch, shape.time, shape.features}, u.options());
    grads.g_v0 = request.v0_grad ? per_neuron() : none(st);
    grads.g_i0 = syn && request.i0_grad ? per_neuron() : none(st);
    std::vector<at::Tensor> keep;
    const std::vector<int64_t> full = {shape.batch, shape.time, shape.features};
    auto fill = [&](auto zero) {
      using A = decltype(zero);
      MembraneBackwardArgs<A> a;
      a.shape = shape;
      a.dtype = dtype;
      a.p = neuron_params<A>(u, shape.features, alpha, threshold, subtract, min_v, reset_value, spike_kind,
                             max_spikes, reset_kind, norm_input, keep, alpha_from_tau);
      a.surrogate.kind = static_cast<SurrogateKind>(surrogate_kind);
      for (int i = 0; i < kSurrogateParams; ++i)
        a.surrogate.p[i] = i < static_cast<int>(surrogate_params.size()) ? static_cast<A>(surrogate_params[i]) : A(0);
      a.g_out = view3(g_out);
      a.g_out_sum = g_out_sum.has_value() ? state_ptr<A>(u, *g_out_sum, {shape.batch, shape.features}, "grad of out_sum", keep) : nullptr;
      a.g_wrec = g_wrec.has_value() ? state_ptr<A>(u, *g_wrec, full, "grad of recorded states", keep) : nullptr;
      a.g_vfinal = g_vfinal.has_value() ? state_ptr<A>(u, *g_vfinal, {shape.batch, shape.features}, "grad of final state", keep) : nullptr;
      a.ckpt = state_ptr<A>(u, ckpt, checkpoint_shape(shape, syn), "checkpoints", keep);
      a.u = view3(u);
      a.v0 = state_ptr<A>(u, v0, {shape.batch, shape.features}, "v0", keep);
      a.sigma = surrogate_kind == 0 && sigma.has_value() ? state_ptr<A>(u, *sigma, full, "sigma", keep) : nullptr;
      a.g_u = grads.g_u.data_ptr();
      a.g_v0 = request.v0_grad ? grads.g_v0.template data_ptr<A>() : nullptr;
      if (syn) {
        a.syn.alpha = param<A>(u, *alpha_syn, shape.features, "alpha_syn", keep, alpha_syn_from_tau);
        a.syn.i0 = state_ptr<A>(u, *i0, {shape.batch, shape.features}, "i0", keep);
        a.syn.ckpt = a.ckpt + shape.batch * checkpoints(shape.time) * shape.features;
        a.syn.g_ifinal = g_ifinal.has_value() ? state_ptr<A>(u, *g_ifinal, {shape.batch, shape.features}, "grad of final i_syn", keep) : nullptr;
        a.syn.g_i0 = request.i0_grad ? grads.g_i0.template data_ptr<A>() : nullptr;
      }
      // scalar taus' gradients summed in the kernel where it can (TauSums), else alpha's per neuron
      if constexpr (std::is_same<A, float>::value) {
        const bool tau = request.sum_tau && alpha_grad && alpha_from_tau && alpha.numel() == 1;
        const bool tau_syn =
            request.sum_tau_syn && syn && alpha_syn_grad && alpha_syn_from_tau && alpha_syn->numel() == 1;
        const auto [partials, counter] = tau || tau_syn
                                             ? tau_sums_scratch(ckpt, Backend::tau_sums_words(shape.neurons()))
                                             : std::pair<float*, unsigned*>{nullptr, nullptr};
        if (counter != nullptr && shape.neurons() > 0 && Backend::sums_taus_in_kernel(a)) {
          a.tau_sums.partials = partials;
          a.tau_sums.counter = counter;
          if (tau) {
            grads.g_tau = at::empty_like(alpha);
            a.tau_sums.g_tau = grads.g_tau.data_ptr<float>();
          }
          if (tau_syn) {
            grads.g_tau_syn = at::empty_like(*alpha_syn);
            a.tau_sums.g_tau_syn = grads.g_tau_syn.data_ptr<float>();
          }
        }
      }
      if (!grads.g_tau.defined()) {
        grads.g_alpha = alpha_grad ? per_neuron() : none(st);
        a.g_alpha = alpha_grad ? grads.g_alpha.template data_ptr<A>() : nullptr;
      }
      if (syn && !grads.g_tau_syn.defined()) {
        grads.g_alpha_syn = alpha_syn_grad ? per_neuron() : none(st);
        a.syn.g_alpha = alpha_syn_grad ? grads.g_alpha_syn.template data_ptr<A>() : nullptr;
      }
      if (shape.neurons() > 0) Backend::run(a);
    };
    with_state_type(st, fill);
    if (!syn) grads.g_alpha_syn = none(st);
    return grads;
  }

  static std::tuple<at::Tensor, at::Tensor> synaptic_forward(const at::Tensor& x, const at::Tensor& i0,
                                                             const at::Tensor& alpha) {
    typename Backend::Guard guard(x);
    const Shape shape = shape_of(x, "x");
    const DType dtype = dtype_of(x, "x");
    const at::ScalarType st = state_type(x.scalar_type());
    at::Tensor i_all = at::empty({shape.batch, shape.time, shape.features}, x.options().dtype(st));
    at::Tensor i_final = at::empty({shape.batch, shape.features}, x.options().dtype(st));
    std::vector<at::Tensor> keep;
    auto fill = [&](auto zero) {
      using A = decltype(zero);
      SynapticForwardArgs<A> a;
      a.shape = shape;
      a.dtype = dtype;
      a.alpha = param<A>(x, alpha, shape.features, "alpha_syn", keep);
      a.x = view3(x);
      a.i0 = state_ptr<A>(x, i0, {shape.batch, shape.features}, "i0", keep);
      a.i_all = i_all.data_ptr<A>();
      a.i_final = i_final.data_ptr<A>();
      if (shape.neurons() > 0) Backend::run(a);
    };
    with_state_type(st, fill);
    return {i_all, i_final};
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> synaptic_backward(
      const at::Tensor& g_i, const c10::optional<at::Tensor>& g_final, const at::Tensor& i_all,
      const at::Tensor& x, const at::Tensor& i0, const at::Tensor& alpha, bool alpha_grad) {
    typename Backend::Guard guard(x);
    const Shape shape = shape_of(x, "x");
    const DType dtype = dtype_of(x, "x");
    const at::ScalarType st = state_type(x.scalar_type());
    at::Tensor g_x = at::empty({shape.batch, shape.time, shape.features}, x.options());
    at::Tensor g_i0 = at::empty({shape.batch, shape.features}, x.options().dtype(st));
    at::Tensor g_alpha = alpha_grad ? at::empty({shape.batch, shape.features}, x.options().dtype(st)) : no_tensor(x, st);
    std::vector<at::Tensor> keep;
    const std::vector<int64_t> full = {shape.batch, shape.time, shape.features};
    auto fill = [&](auto zero) {
      using A = decltype(zero);
      SynapticBackwardArgs<A> a;
      a.shape = shape;
      a.dtype = dtype;
      a.alpha = param<A>(x, alpha, shape.features, "alpha_syn", keep);
      a.g_i = state_ptr<A>(x, g_i, full, "grad of i_syn", keep);
      a.g_final = g_final.has_value() ? state_ptr<A>(x, *g_final, {shape.batch, shape.features}, "grad of final i_syn", keep) : nullptr;
      a.i_all = state_ptr<A>(x, i_all, full, "i_all", keep);
      a.x = view3(x);
      a.i0 = state_ptr<A>(x, i0, {shape.batch, shape.features}, "i0", keep);
      a.g_x = g_x.data_ptr();
      a.g_i0 = g_i0.data_ptr<A>();
      a.g_alpha = alpha_grad ? g_alpha.data_ptr<A>() : nullptr;
      if (shape.neurons() > 0) Backend::run(a);
    };
    with_state_type(st, fill);
    return {g_x, g_i0, g_alpha};
  }
};

// Schemas of the backend namespaces (exodus_jit_cpu, exodus_jit_cuda); the public
// torch.ops.exodus_jit.* ops with fake and autograd implementations are defined in Python.
#define EXODUS_DEFINE_OPS(NAMESPACE, BACKEND)                                                                   \
  TORCH_LIBRARY(NAMESPACE, m) {                                                                                 \
    m.def("membrane_forward(Tensor u, Tensor v0, Tensor alpha, Tensor threshold, Tensor subtract, "            \
          "Tensor? min_v, float reset_value, int spike_kind, int max_spikes, int reset_kind, bool norm_input, " \
          "int save, bool record, bool sum_out, Tensor? i0=None, Tensor? alpha_syn=None, "                     \
          "bool alpha_from_tau=False, bool alpha_syn_from_tau=False) "                                          \
          "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",                                                \
          &exodus::Ops<BACKEND>::membrane_forward);                                                             \
    m.def("membrane_backward(Tensor g_out, Tensor? g_out_sum, Tensor? g_wrec, Tensor? g_vfinal, Tensor ckpt, "     \
          "Tensor u, Tensor v0, "                                                                              \
          "Tensor alpha, Tensor threshold, Tensor subtract, Tensor? min_v, float reset_value, int spike_kind, " \
          "int max_spikes, int reset_kind, bool norm_input, int surrogate_kind, float[] surrogate_params, "     \
          "Tensor? sigma, bool alpha_grad, Tensor? g_ifinal=None, Tensor? i0=None, Tensor? alpha_syn=None, "   \
          "bool alpha_syn_grad=False, bool alpha_from_tau=False, bool alpha_syn_from_tau=False) "              \
          "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",                                                        \
          &exodus::Ops<BACKEND>::membrane_backward);                                                            \
    m.def("synaptic_forward(Tensor x, Tensor i0, Tensor alpha) -> (Tensor, Tensor)",                            \
          &exodus::Ops<BACKEND>::synaptic_forward);                                                             \
    m.def("synaptic_backward(Tensor g_i, Tensor? g_final, Tensor i_all, Tensor x, Tensor i0, Tensor alpha, "    \
          "bool alpha_grad) -> (Tensor, Tensor, Tensor)",                                                       \
          &exodus::Ops<BACKEND>::synaptic_backward);                                                            \
  }

}  // namespace exodus
