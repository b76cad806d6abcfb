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

constexpr int kChunk = 8;      // forward
constexpr int kChunkBack = 4;  // backward: three prefetched streams, so fewer steps per chunk

template <typename T, typename A>
EXODUS_HD void membrane_forward_neuron(const MembraneForwardArgs<A>& a, int64_t b, int64_t f) {
  const NeuronParams<A>& p = a.p;
  const int64_t F = a.shape.features, steps = a.shape.time;
  const A alpha = p.alpha.at(f), theta = p.threshold.at(f), subtract = p.subtract.at(f);
  const A one_minus_alpha = A(1) - alpha;
  const bool clip = p.min_v.present();
  const A min_v = clip ? p.min_v.at(f) : A(0);
  const bool spiking = p.spike != SpikeKind::None;
  const T* u = static_cast<const T*>(a.u.data);
  T* out = static_cast<T*>(a.out);

  A w = a.v0[b * F + f];
  const T* u_t = u + a.u.offset(b, 0, f);  // pointers walk time; cheaper than indices
  const int64_t o0 = b * steps * F + f;
  T* out_t = out + o0;
  A* v_pre_t = a.v_pre ? a.v_pre + o0 : nullptr;
  A* w_rec_t = a.w_rec ? a.w_rec + o0 : nullptr;
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
      const A v = alpha * w + (p.norm_input ? one_minus_alpha * x[k] : x[k]);
      A r = v;
      if (spiking) {
        const A s = spike_count(v, theta, p);
        r = apply_reset(v, s, subtract, p);
        *out_t = static_cast<T>(s);
      } else {
        *out_t = static_cast<T>(v);
      }
      w = clip ? clip_below(r, min_v) : r;
      if (v_pre_t) { *v_pre_t = v; v_pre_t += F; }
      if (w_rec_t) { *w_rec_t = w; w_rec_t += F; }
      out_t += F;
    }
    EXODUS_UNROLL
    for (int k = 0; k < kChunk; ++k) x[k] = x_next[k];
  }
  a.v_final[b * F + f] = w;
}

// Reverse recurrence (DESIGN.md): H_t = g_w_t + alpha * G_{t+1};
// G_t = sigma_t * g_s_t + k_t * H_t (spiking) or g_y_t + c_t * H_t (ExpLeak).
template <typename T, typename A>
EXODUS_HD void membrane_backward_neuron(const MembraneBackwardArgs<A>& a, int64_t b, int64_t f) {
  const NeuronParams<A>& p = a.p;
  const int64_t F = a.shape.features, steps = a.shape.time, n = b * F + f;
  const A alpha = p.alpha.at(f), theta = p.threshold.at(f), subtract = p.subtract.at(f);
  const A one_minus_alpha = A(1) - alpha;
  const bool clip = p.min_v.present();
  const A min_v = clip ? p.min_v.at(f) : A(0);
  const bool spiking = p.spike != SpikeKind::None;
  const bool given_sigma = a.surrogate.kind == SurrogateKind::Given;
  const bool input_for_alpha = a.g_alpha != nullptr && p.norm_input;
  const T* g_out = static_cast<const T*>(a.g_out.data);
  const T* u = static_cast<const T*>(a.u.data);
  T* g_u = static_cast<T*>(a.g_u);

  A carry = a.g_vfinal ? a.g_vfinal[n] : A(0);  // alpha * G_{t+1}, plus the final state's gradient
  A g_alpha = A(0);
  A pending = A(0);  // G_{t+1}, waiting for w_t to add G_{t+1} * w_t to the alpha gradient
  // Time runs backwards: pointers start at the last step and step back by one row (F).
  const int64_t o_last = (b * steps + steps - 1) * F + f;
  const T* g_out_t = g_out + a.g_out.offset(b, steps - 1, f);
  const A* v_t = a.v + o_last;
  const T* u_t = u + a.u.offset(b, steps - 1, f);
  T* g_u_t = g_u + o_last;
  A v = steps > 0 ? *v_t : A(0);
  // Software pipeline as in forward; what every step reads is prefetched, the optional inputs
  // (recorded-state gradients, given surrogate values) are read in the step itself.
  A g_y[kChunkBack], v_prev[kChunkBack], x[kChunkBack];
  auto load_chunk = [&](int64_t t_top, A* g_y_c, A* v_prev_c, A* x_c) {
    EXODUS_UNROLL
    for (int k = 0; k < kChunkBack; ++k) {
      const int64_t t = t_top - k;
      g_y_c[k] = t >= 0 ? static_cast<A>(*g_out_t) : A(0);
      v_prev_c[k] = t > 0 ? v_t[-F] : A(0);
      x_c[k] = (input_for_alpha && t >= 0) ? static_cast<A>(*u_t) : A(0);  // LIF's default: trained tau
      g_out_t -= a.g_out.st;
      v_t -= F;
      u_t -= a.u.st;
    }
  };
  load_chunk(steps - 1, g_y, v_prev, x);
  for (int64_t t_top = steps - 1; t_top >= 0; t_top -= kChunkBack) {
    A g_y_next[kChunkBack], v_prev_next[kChunkBack], x_next[kChunkBack];
    load_chunk(t_top - kChunkBack, g_y_next, v_prev_next, x_next);
    EXODUS_UNROLL
    for (int k = 0; k < kChunkBack; ++k) {
      const int64_t t = t_top - k;
      if (t < 0) break;
      const int64_t o = o_last - (steps - 1 - t) * F;
      const A h = carry + (a.g_wrec ? a.g_wrec[o] : A(0));
      A r = v, s = A(0), sigma = A(0);
      if (spiking) {
        s = spike_count(v, theta, p);
        r = apply_reset(v, s, subtract, p);
        sigma = given_sigma ? a.sigma[o] : surrogate_grad(v, theta, a.surrogate);
      }
      const A c = (!clip || r - min_v > A(0)) ? A(1) : A(0);  // relu passes the gradient where r > m
      A grad_v;
      if (spiking) {
        const A keep = p.reset == ResetKind::Subtract ? c * (A(1) - subtract * sigma) : c * A(s == A(0));
        grad_v = sigma * g_y[k] + keep * h;
      } else {
        grad_v = g_y[k] + c * h;
      }
      *g_u_t = static_cast<T>(p.norm_input ? one_minus_alpha * grad_v : grad_v);
      g_u_t -= F;
      if (a.g_alpha) {
        // dv_{t+1}/dalpha holds w_t, known only now: settle step t+1's term with it
        g_alpha += pending * (clip ? clip_below(r, min_v) : r);
        pending = grad_v;
        if (input_for_alpha) g_alpha -= grad_v * x[k];
      }
      carry = alpha * grad_v;
      v = v_prev[k];
    }
    EXODUS_UNROLL
    for (int k = 0; k < kChunkBack; ++k) {
      g_y[k] = g_y_next[k];
      v_prev[k] = v_prev_next[k];
      x[k] = x_next[k];
    }
  }
  a.g_v0[n] = carry;
  if (a.g_alpha) a.g_alpha[n] = g_alpha + pending * a.v0[n];
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
      i = alpha * (i + xs[k]);
      *i_t = i;
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
      const A j = g_i[k] + carry;
      *g_x_t = static_cast<T>(alpha * j);
      g_x_t -= F;
      if (alpha_grad) g_alpha += j * ((t > 0 ? i_t[-F] : a.i0[n]) + static_cast<A>(*x_t));
      i_t -= F;
      x_t -= a.x.st;
      carry = alpha * j;
    }
  }
  a.g_i0[n] = carry;
  if (alpha_grad) a.g_alpha[n] = g_alpha;
}

}  // namespace exodus
