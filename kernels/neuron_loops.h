// One neuron's walk through time, forward and backward (EXODUS: the exact BPTT gradient as an
// O(T) reverse recurrence, DESIGN.md "Exact gradients"). The CPU runs these per neuron across
// threads; CUDA runs one neuron per GPU thread. T is the storage type, A the state type.
#pragma once

#include "neuron_math.h"

namespace exodus {

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
  int64_t in = a.u.offset(b, 0, f);
  int64_t o = b * steps * F + f;
  for (int64_t t = 0; t < steps; ++t, in += a.u.st, o += F) {
    const A x = static_cast<A>(u[in]);
    const A v = alpha * w + (p.norm_input ? one_minus_alpha * x : x);
    A r = v;
    if (spiking) {
      const A s = spike_count(v, theta, p);
      r = apply_reset(v, s, subtract, p);
      out[o] = static_cast<T>(s);
    } else {
      out[o] = static_cast<T>(v);
    }
    if (a.v_pre) a.v_pre[o] = v;
    w = clip ? clip_below(r, min_v) : r;
    if (a.w_rec) a.w_rec[o] = w;
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
  const T* g_out = static_cast<const T*>(a.g_out.data);
  const T* u = static_cast<const T*>(a.u.data);
  T* g_u = static_cast<T*>(a.g_u);

  A carry = a.g_vfinal ? a.g_vfinal[n] : A(0);  // alpha * G_{t+1}, plus the final state's gradient
  A g_alpha = A(0);
  int64_t o = (b * steps + steps - 1) * F + f;
  A v = steps > 0 ? a.v[o] : A(0);
  for (int64_t t = steps - 1; t >= 0; --t, o -= F) {
    const A h = carry + (a.g_wrec ? a.g_wrec[o] : A(0));
    const A g_y = static_cast<A>(g_out[a.g_out.offset(b, t, f)]);
    A r = v, s = A(0), sigma = A(0);
    if (spiking) {
      s = spike_count(v, theta, p);
      r = apply_reset(v, s, subtract, p);
      sigma = a.surrogate.kind == SurrogateKind::Given ? a.sigma[o] : surrogate_grad(v, theta, a.surrogate);
    }
    const A c = (!clip || r - min_v > A(0)) ? A(1) : A(0);  // relu passes the gradient where r > m
    A grad_v;
    if (spiking) {
      const A k = p.reset == ResetKind::Subtract ? c * (A(1) - subtract * sigma) : c * A(s == A(0));
      grad_v = sigma * g_y + k * h;
    } else {
      grad_v = g_y + c * h;
    }
    g_u[o] = static_cast<T>(p.norm_input ? one_minus_alpha * grad_v : grad_v);
    const A v_prev = t > 0 ? a.v[o - F] : A(0);
    if (a.g_alpha) {
      const A w_prev = t > 0 ? state_after(v_prev, theta, subtract, min_v, p) : a.v0[n];
      g_alpha += grad_v * w_prev;
      if (p.norm_input) g_alpha -= grad_v * static_cast<A>(u[a.u.offset(b, t, f)]);
    }
    carry = alpha * grad_v;
    v = v_prev;
  }
  a.g_v0[n] = carry;
  if (a.g_alpha) a.g_alpha[n] = g_alpha;
}

// Synaptic current: i_t = alpha * (i_{t-1} + x_t), as sinabs.
template <typename T, typename A>
EXODUS_HD void synaptic_forward_neuron(const SynapticForwardArgs<A>& a, int64_t b, int64_t f) {
  const int64_t F = a.shape.features, steps = a.shape.time;
  const A alpha = a.alpha.at(f);
  const T* x = static_cast<const T*>(a.x.data);
  A i = a.i0[b * F + f];
  int64_t in = a.x.offset(b, 0, f);
  int64_t o = b * steps * F + f;
  for (int64_t t = 0; t < steps; ++t, in += a.x.st, o += F) {
    i = alpha * (i + static_cast<A>(x[in]));
    a.i_all[o] = i;
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
  A carry = a.g_final ? a.g_final[n] : A(0);
  A g_alpha = A(0);
  int64_t o = (b * steps + steps - 1) * F + f;
  for (int64_t t = steps - 1; t >= 0; --t, o -= F) {
    const A j = a.g_i[o] + carry;
    g_x[o] = static_cast<T>(alpha * j);
    if (a.g_alpha) {
      const A i_prev = t > 0 ? a.i_all[o - F] : a.i0[n];
      g_alpha += j * (i_prev + static_cast<A>(x[a.x.offset(b, t, f)]));
    }
    carry = alpha * j;
  }
  a.g_i0[n] = carry;
  if (a.g_alpha) a.g_alpha[n] = g_alpha;
}

}  // namespace exodus
