// Per-element neuron arithmetic, host and device. Each expression mirrors the operation order of
// sinabs 3.x so that float32 results are bit-identical (compiled without FP contraction).
#pragma once

#include <math.h>

#include "kernel_args.h"

namespace exodus {

EXODUS_HD float trunc_(float x) {
#if defined(__CUDA_ARCH__) || defined(__SSE4_1__)
  return truncf(x);  // one instruction (SSE4.1 roundps), which loops vectorise
#else
  // truncf without a call (SSE2 has no rounding instruction), so CPU loops vectorise; the same
  // value for every input: through int32 below 2^23 (larger floats are integers), sign kept (-0)
  const bool small = fabsf(x) < 8388608.f;
  const float t = static_cast<float>(static_cast<int32_t>(small ? x : 0.f));
  return small ? copysignf(t, x) : x;
#endif
}
EXODUS_HD double trunc_(double x) { return trunc(x); }
EXODUS_HD float floor_(float x) { return floorf(x); }
EXODUS_HD double floor_(double x) { return floor(x); }
EXODUS_HD float fabs_(float x) { return fabsf(x); }
EXODUS_HD double fabs_(double x) { return fabs(x); }
EXODUS_HD float exp_(float x) { return expf(x); }
EXODUS_HD double exp_(double x) { return exp(x); }
EXODUS_HD float sqrt_(float x) { return sqrtf(x); }
EXODUS_HD double sqrt_(double x) { return sqrt(x); }

// 2^x for the surrogate in the fast CUDA backward: one MUFU.EX2 (~2 ulp; results below 2^-126
// flush to +0) instead of expf's range reduction, eleven instructions per step in an
// issue-bound kernel. Gradients match BPTT to float32 rounding, not to its bits.
EXODUS_HD float exp2_approx(float x) {
#ifdef __CUDA_ARCH__
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return exp2f(x);
#endif
}
EXODUS_HD double exp2_approx(double x) { return exp2(x); }

// a * b + c: fused (one rounding) on the device, where the reverse walk's gradients need BPTT's
// values to float32 rounding, not its bits; two operations on the host, whose loops are compiled
// without contraction (fmaf is a library call there without FMA code generation).
template <typename A>
EXODUS_HD A mul_add(A a, A b, A c) {
#ifdef __CUDA_ARCH__
  return fma(a, b, c);
#else
  return a * b + c;
#endif
}

// sinabs' spike count (v > 0) * trunc(v / theta) with IEEE division (the fast CUDA kernels pass
// a cheaper division with the same results, cuda_division.cuh).
struct IeeeDivision {
  static constexpr bool kExactSubtract = false;  // the reset as sinabs writes it (Cell::reset)
  template <typename A>
  EXODUS_HD A count(A v, A theta) const { return A(v > A(0)) * trunc_(v / theta); }
};

// sinabs MultiSpike / MaxSpike / SingleSpike forward, for a spike kind known at compile time
// (the fast kernels) ...
template <SpikeKind S, typename A, class Div = IeeeDivision>
EXODUS_HD A spike_count_of(A v, A theta, A max_spikes, const Div& div = Div()) {
  if constexpr (S == SpikeKind::Single) {
    return A(v - theta >= A(0));
  } else {
    A s = div.count(v, theta);  // (v_mem > 0) * div(v_mem, thr, "trunc")
    if constexpr (S == SpikeKind::Max) {
      if (s > max_spikes) s = max_spikes;
    }
    return s;
  }
}

// ... or at run time (the general kernels).
template <typename A>
EXODUS_HD A spike_count(A v, A theta, const NeuronParams<A>& p) {
  switch (p.spike) {
    case SpikeKind::Single: return spike_count_of<SpikeKind::Single>(v, theta, p.max_spikes);
    case SpikeKind::Max: return spike_count_of<SpikeKind::Max>(v, theta, p.max_spikes);
    default: return spike_count_of<SpikeKind::Multi>(v, theta, p.max_spikes);
  }
}

// sinabs MembraneSubtract / MembraneReset, written exactly as sinabs writes them.
template <ResetKind R, typename A>
EXODUS_HD A apply_reset_of(A v, A s, A subtract, A reset_value) {
  if constexpr (R == ResetKind::Subtract) return v - s * subtract;
  else return v * A(s == A(0)) + reset_value;
}

template <typename A>
EXODUS_HD A apply_reset(A v, A s, A subtract, const NeuronParams<A>& p) {
  if (p.reset == ResetKind::Subtract) return apply_reset_of<ResetKind::Subtract>(v, s, subtract, p.reset_value);
  return apply_reset_of<ResetKind::ToValue>(v, s, subtract, p.reset_value);
}

// sinabs' synaptic current (tau_syn): i_t = alpha (i_{t-1} + x_t), the membrane's input. One
// expression for the synaptic kernels and the fused membrane kernels, so both are bit-identical.
template <typename A>
EXODUS_HD A synapse_step(A& i, A x, A alpha) {
  i = alpha * (i + x);
  return i;
}

// Its reverse step: J_t = dL/di_t = g_t + alpha J_{t+1}, with g_t the gradient i_t receives
// directly and carry = alpha J_{t+1}. Returns J_t; dL/dx_t = alpha J_t is the new carry, and
// J_t (i_{t-1} + x_t) is step t's share of alpha's gradient.
template <typename A>
EXODUS_HD A synapse_grad(A g, A& carry, A alpha) {
  const A j = g + carry;
  carry = alpha * j;
  return j;
}

// relu(r - m) + m, as sinabs clips min_v_mem.
template <typename A>
EXODUS_HD A clip_below(A r, A m) {
  const A d = r - m;
  return (d > A(0) ? d : A(0)) + m;
}

template <typename A>
EXODUS_HD A gaussian(A x, A mu, A sigma) {
  const A two_pi = A(6.283185307179586);
  const A diff = x - mu;
  return exp_(-(diff * diff) / (A(2) * sigma * sigma)) / (sigma * sqrt_(two_pi));
}

// The five sinabs surrogate gradient functions, from their dataclass fields (see
// exodus_jit/ops/_config.py for the order of p[]).
template <typename A>
EXODUS_HD A surrogate_grad(A v, A theta, const SurrogateParams<A>& s) {
  switch (s.kind) {
    case SurrogateKind::SingleExponential: {  // p = grad_width, grad_scale
      const A width = theta * s.p[0];
      return s.p[1] / width * exp_(-fabs_(v - theta) / width);
    }
    case SurrogateKind::PeriodicExponential: {  // p = grad_width, grad_scale
      const A normalized = v / theta - A(0.5);
      A periodic = normalized - floor_(normalized);
      periodic = theta * (A(2) * periodic - A(1));
      const A below = (v - theta) * A(v < theta);
      const A above = periodic * A(v >= theta);
      return s.p[1] * exp_(-fabs_(above + below) / s.p[0]);
    }
    case SurrogateKind::Heaviside:  // p = window
      return A(v >= theta - s.p[0]) / theta;
    case SurrogateKind::Gaussian:  // p = mu, sigma, grad_scale
      return gaussian(v - theta, s.p[0], s.p[1]) * s.p[2];
    case SurrogateKind::MultiGaussian: {  // p = mu, sigma, h, s, grad_scale
      const A x = v - theta, mu = s.p[0], sigma = s.p[1], h = s.p[2], wide = s.p[3] * s.p[1];
      return ((A(1) + h) * gaussian(x, mu, sigma) - h * gaussian(x, sigma, wide) -
              h * gaussian(x, -sigma, wide)) *
             s.p[4];
    }
    default:
      return A(0);
  }
}

}  // namespace exodus
