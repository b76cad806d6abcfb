// One neuron's walk through time, forward and backward (EXODUS: the exact BPTT gradient as an
// O(T) reverse recurrence, DESIGN.md "Exact gradients"). The CPU runs these per neuron across
// threads; CUDA runs one neuron per GPU thread. T is the storage type, A the state type.
//
// Time is walked in chunks of kChunk steps: the loads of a whole chunk are issued before its
// first step is computed. The recurrence itself is serial, so without this a GPU thread waits
// one full memory latency per step; with it, kChunk loads are in flight at once.
#pragma once

#include "neuron_math.h"

namespace exodus {

constexpr int kChunk = 8;

// One neuron's constants and its step, shared by forward and by backward's recomputation, so
// that the recomputed membrane is bit-identical to the forward one.
template <typename A>
struct Neuron {
  const NeuronParams<A>& p;
  A alpha, one_minus_alpha, theta, subtract, min_v;
  bool clip, spiking;

  EXODUS_HD Neuron(const NeuronParams<A>& params, int64_t f)
      : p(params), alpha(params.alpha.at(f)), one_minus_alpha(A(1) - params.alpha.at(f)),
        theta(params.threshold.at(f)), subtract(params.subtract.at(f)),
        min_v(params.min_v.present() ? params.min_v.at(f) : A(0)), clip(params.min_v.present()),
        spiking(params.spike != SpikeKind::None) {}

  // v_t from the state w_{t-1} and the input x_t
  EXODUS_HD A membrane(A w, A x) const { return alpha * w + (p.norm_input ? one_minus_alpha * x : x); }
  EXODUS_HD A spikes(A v) const { return spiking ? spike_count(v, theta, p) : A(0); }
  // r_t: after the reset (v itself for ExpLeak)
  EXODUS_HD A reset(A v, A s) const { return spiking ? apply_reset(v, s, subtract, p) : v; }
  // w_t: after clipping
  EXODUS_HD A state(A r) const { return clip ? clip_below(r, min_v) : r; }
};

template <typename T, typename A>
EXODUS_HD void membrane_forward_neuron(const MembraneForwardArgs<A>& a, int64_t b, int64_t f) {
  const Neuron<A> nrn(a.p, f);
  const int64_t F = a.shape.features, steps = a.shape.time;
  const int64_t segments = (steps + kCheckpointSteps - 1) / kCheckpointSteps;
  const T* u_t = static_cast<const T*>(a.u.data) + a.u.offset(b, 0, f);  // pointers walk time
  const int64_t o0 = b * steps * F + f;
  T* out_t = static_cast<T*>(a.out) + o0;
  A* v_pre_t = a.v_pre ? a.v_pre + o0 : nullptr;
  A* w_rec_t = a.w_rec ? a.w_rec + o0 : nullptr;
  A* ckpt_t = a.ckpt ? a.ckpt + b * segments * F + f : nullptr;
  // the fused synaptic stage: u is its input x, the membrane's input is the current i
  const bool syn = a.syn.present();
  const A alpha_syn = syn ? a.syn.alpha.at(f) : A(0);
  A i = syn ? a.syn.i0[b * F + f] : A(0);
  A* syn_ckpt_t = syn && a.syn.ckpt ? a.syn.ckpt + b * segments * F + f : nullptr;

  A w = a.v0[b * F + f];
  A out_sum = A(0);
  // Software pipeline: the next chunk's loads are issued before this chunk is computed.
  A x[kChunk];
  EXODUS_UNROLL
  for (int k = 0; k < kChunk; ++k) {
    x[k] = k < steps ? static_cast<A>(*u_t) : A(0);
    u_t += a.u.st;
  }
  for (int64_t t0 = 0; t0 < steps; t0 += kChunk) {
    const int64_t left = steps - t0;
    A x_next[kChunk];
    EXODUS_UNROLL
    for (int k = 0; k < kChunk; ++k) {
      x_next[k] = k + kChunk < left ? static_cast<A>(*u_t) : A(0);
      u_t += a.u.st;
    }
    EXODUS_UNROLL
    for (int k = 0; k < kChunk; ++k) {
      if (k >= left) break;
      if (ckpt_t && (t0 + k) % kCheckpointSteps == 0) {
        *ckpt_t = w;
        ckpt_t += F;
        if (syn_ckpt_t) {
          *syn_ckpt_t = i;
          syn_ckpt_t += F;
        }
      }
      const A v = nrn.membrane(w, syn ? synapse_step(i, x[k], alpha_syn) : x[k]);
      const A s = nrn.spikes(v);
      const A y = nrn.spiking ? s : v;
      *out_t = static_cast<T>(y);
      out_sum += y;
      w = nrn.state(nrn.reset(v, s));
      if (v_pre_t) { *v_pre_t = v; v_pre_t += F; }
      if (w_rec_t) { *w_rec_t = w; w_rec_t += F; }
      out_t += F;
    }
    EXODUS_UNROLL
    for (int k = 0; k < kChunk; ++k) x[k] = x_next[k];
  }
  a.v_final[b * F + f] = w;
  if (a.out_sum) a.out_sum[b * F + f] = out_sum;
  if (a.v_zero) a.v_zero[b * F + f] = A(0);
  if (syn) a.syn.i_final[b * F + f] = i;
  if (syn && a.syn.i_zero) a.syn.i_zero[b * F + f] = A(0);
}

// Reverse recurrence (DESIGN.md): H_t = g_w_t + alpha * G_{t+1};
// G_t = sigma_t * g_s_t + k_t * H_t (spiking) or g_y_t + c_t * H_t (ExpLeak).
// Time is walked segment by segment, last first: each segment's membrane is recomputed forward
// from its checkpoint (the inputs it needs are read once, with the output gradients, up front),
// then walked backwards.
template <typename T, typename A>
EXODUS_HD void membrane_backward_neuron(const MembraneBackwardArgs<A>& a, int64_t b, int64_t f) {
  constexpr int K = kCheckpointSteps;
  const Neuron<A> nrn(a.p, f);
  const NeuronParams<A>& p = a.p;
  const int64_t F = a.shape.features, steps = a.shape.time, n = b * F + f;
  const int64_t segments = (steps + K - 1) / K;
  const bool given_sigma = a.surrogate.kind == SurrogateKind::Given;
  const T* g_out = static_cast<const T*>(a.g_out.data);
  const T* u = static_cast<const T*>(a.u.data);
  T* g_u = static_cast<T*>(a.g_u);

  A carry = a.g_vfinal ? a.g_vfinal[n] : A(0);  // alpha * G_{t+1}, plus the final state's gradient
  const A g_shift = a.g_out_sum ? a.g_out_sum[n] : A(0);  // out_sum's gradient reaches every step
  A g_alpha = A(0);
  A pending = A(0);  // G_{t+1}, waiting for w_t to add G_{t+1} * w_t to the alpha gradient
  const bool syn = a.syn.present();  // the fused synaptic stage: g_u is its input's gradient
  const A alpha_syn = syn ? a.syn.alpha.at(f) : A(0);
  A syn_carry = syn && a.syn.g_ifinal ? a.syn.g_ifinal[n] : A(0);  // alpha_syn J_{t+1}
  A g_alpha_syn = A(0);
  for (int64_t seg = segments - 1; seg >= 0; --seg) {
    const int64_t t0 = seg * K;
    const int64_t len = steps - t0 < K ? steps - t0 : K;
    A x[K], g_y[K], v[K];
    EXODUS_UNROLL
    for (int k = 0; k < K; ++k) {
      x[k] = k < len ? static_cast<A>(u[a.u.offset(b, t0 + k, f)]) : A(0);
      g_y[k] = k < len ? static_cast<A>(g_out[a.g_out.offset(b, t0 + k, f)]) + g_shift : A(0);
    }
    A w = a.ckpt[(b * segments + seg) * F + f];
    if (syn) {
      // x[k] becomes i_{t-1} + x_t (what alpha_syn's gradient needs); the membrane's input i_t
      // is alpha_syn times it, the product synapse_step computes
      A i = a.syn.ckpt[(b * segments + seg) * F + f];
      EXODUS_UNROLL
      for (int k = 0; k < K; ++k) {
        const A sum = i + x[k];
        synapse_step(i, x[k], alpha_syn);
        x[k] = sum;
      }
    }
    EXODUS_UNROLL
    for (int k = 0; k < K; ++k) {
      if (k >= len) break;
      v[k] = nrn.membrane(w, syn ? alpha_syn * x[k] : x[k]);
      w = nrn.state(nrn.reset(v[k], nrn.spikes(v[k])));
    }
    EXODUS_UNROLL
    for (int k = K - 1; k >= 0; --k) {
      if (k >= len) continue;
      const int64_t o = (b * steps + t0 + k) * F + f;
      const A s = nrn.spikes(v[k]);
      const A r = nrn.reset(v[k], s);
      const A h = carry + (a.g_wrec ? a.g_wrec[o] : A(0));
      const A c = (!nrn.clip || r - nrn.min_v > A(0)) ? A(1) : A(0);  // relu passes where r > m
      A grad_v;
      if (nrn.spiking) {
        const A sigma = given_sigma ? a.sigma[o] : surrogate_grad(v[k], nrn.theta, a.surrogate);
        const A keep = p.reset == ResetKind::Subtract ? c * (A(1) - nrn.subtract * sigma) : c * A(s == A(0));
        grad_v = sigma * g_y[k] + keep * h;
      } else {
        grad_v = g_y[k] + c * h;
      }
      const A g_in = p.norm_input ? nrn.one_minus_alpha * grad_v : grad_v;
      if (syn) {
        const A j = synapse_grad(g_in, syn_carry, alpha_syn);
        g_u[o] = static_cast<T>(syn_carry);
        g_alpha_syn += j * x[k];
      } else {
        g_u[o] = static_cast<T>(g_in);
      }
      if (a.g_alpha) {
        // dv_{t+1}/dalpha holds w_t, known only now: settle step t+1's term with it
        g_alpha += pending * nrn.state(r);
        pending = grad_v;
        if (p.norm_input) g_alpha -= grad_v * (syn ? alpha_syn * x[k] : x[k]);
      }
      carry = nrn.alpha * grad_v;
    }
  }
  if (a.g_v0) a.g_v0[n] = carry;
  if (a.g_alpha) a.g_alpha[n] = g_alpha + pending * a.v0[n];
  if (syn) {
    if (a.syn.g_i0) a.syn.g_i0[n] = syn_carry;
    if (a.syn.g_alpha) a.syn.g_alpha[n] = g_alpha_syn;
  }
}

// Synaptic current: i_t = alpha * (i_{t-1} + x_t), as sinabs.
template <typename T, typename A>
EXODUS_HD void synaptic_forward_neuron(const SynapticForwardArgs<A>& a, int64_t b, int64_t f) {
  const int64_t F = a.shape.features, steps = a.shape.time;
  const A alpha = a.alpha.at(f);
  const T* x = static_cast<const T*>(a.x.data);
  A i = a.i0[b * F + f];
  const T* x_t = x + a.x.offset(b, 0, f);
  A* i_t = a.i_all + b * steps * F + f;
  for (int64_t t0 = 0; t0 < steps; t0 += kChunk) {
    const int64_t left = steps - t0;
    A xs[kChunk];
    EXODUS_UNROLL
    for (int k = 0; k < kChunk; ++k) {
      xs[k] = k < left ? static_cast<A>(*x_t) : A(0);
      x_t += a.x.st;
    }
    EXODUS_UNROLL
    for (int k = 0; k < kChunk; ++k) {
      if (k >= left) break;
      *i_t = synapse_step(i, xs[k], alpha);
      i_t += F;
    }
  }
  a.i_final[b * F + f] = i;
}

// J_t = dL/di_t = g_i_t + alpha * J_{t+1}; dL/dx_t = alpha * J_t; dL/dalpha = sum J_t (i_{t-1} + x_t).
template <typename T, typename A>
EXODUS_HD void synaptic_backward_neuron(const SynapticBackwardArgs<A>& a, int64_t b, int64_t f) {
  const int64_t F = a.shape.features, steps = a.shape.time, n = b * F + f;
  const A alpha = a.alpha.at(f);
  const T* x = static_cast<const T*>(a.x.data);
  T* g_x = static_cast<T*>(a.g_x);
  const bool alpha_grad = a.g_alpha != nullptr;
  A carry = a.g_final ? a.g_final[n] : A(0);
  A g_alpha = A(0);
  const int64_t o_last = (b * steps + steps - 1) * F + f;
  const A* g_i_t = a.g_i + o_last;
  const A* i_t = a.i_all + o_last;
  const T* x_t = x + a.x.offset(b, steps - 1, f);
  T* g_x_t = g_x + o_last;
  for (int64_t t_top = steps - 1; t_top >= 0; t_top -= kChunk) {
    A g_i[kChunk];
    EXODUS_UNROLL
    for (int k = 0; k < kChunk; ++k) {
      g_i[k] = t_top - k >= 0 ? *g_i_t : A(0);
      g_i_t -= F;
    }
    EXODUS_UNROLL
    for (int k = 0; k < kChunk; ++k) {
      const int64_t t = t_top - k;
      if (t < 0) break;
      const A j = synapse_grad(g_i[k], carry, alpha);
      *g_x_t = static_cast<T>(carry);
      g_x_t -= F;
      if (alpha_grad) g_alpha += j * ((t > 0 ? i_t[-F] : a.i0[n]) + static_cast<A>(*x_t));
      i_t -= F;
      x_t -= a.x.st;
    }
  }
  a.g_i0[n] = carry;
  if (alpha_grad) a.g_alpha[n] = g_alpha;
}

}  // namespace exodus
