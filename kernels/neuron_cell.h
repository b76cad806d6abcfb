// A neuron whose options are known at compile time (spike kind, reset kind, clipping), for the
// fast loops: no per-step branches on options, and backward keeps what the reverse walk needs
// from the recomputation instead of recomputing spikes and resets a second time.
//
// Arithmetic is that of neuron_math.h (spike_count_of, apply_reset_of, clip_below), so the
// membrane is bit-identical to the general loops and to sinabs.
#pragma once

#include <type_traits>

#include "neuron_math.h"

namespace exodus {

template <typename A, SpikeKind S, ResetKind R, bool Clip>
struct Cell {
  static constexpr bool kSpiking = S != SpikeKind::None;
  static constexpr bool kClips = Clip;
  // The reverse walk needs a per-step gate (clipping passed, no spike for reset-to-value) only
  // for these options; otherwise it is 1 and costs nothing.
  static constexpr bool kGated = Clip || (kSpiking && R == ResetKind::ToValue);
  // Whether the spike count divides by the threshold (MultiSpike, MaxSpike).
  static constexpr bool kDivides = S == SpikeKind::Multi || S == SpikeKind::Max;
  // Whether the reset subtracts spikes times a value (MembraneSubtract).
  static constexpr bool kSubtracts = kSpiking && R == ResetKind::Subtract;

  A alpha, in_scale, theta, subtract, min_v, reset_value, max_spikes;

  EXODUS_HD Cell(const NeuronParams<A>& p, int64_t f)
      : alpha(p.alpha.at(f)),
        // 1 * x == x exactly, so one expression serves both norm_input settings bit-identically
        in_scale(p.norm_input ? A(1) - p.alpha.at(f) : A(1)),
        theta(p.threshold.at(f)), subtract(p.subtract.at(f)),
        min_v(Clip ? p.min_v.at(f) : A(0)), reset_value(p.reset_value), max_spikes(p.max_spikes) {}

  // from the values themselves (a CPU block keeps each constant in an array of its own)
  EXODUS_HD Cell(A alpha_, A in_scale_, A theta_, A subtract_, A min_v_, A reset_value_, A max_spikes_)
      : alpha(alpha_), in_scale(in_scale_), theta(theta_), subtract(subtract_), min_v(min_v_),
        reset_value(reset_value_), max_spikes(max_spikes_) {}

  EXODUS_HD A membrane(A w, A x) const { return alpha * w + in_scale * x; }
  template <class Div = IeeeDivision>
  EXODUS_HD A spikes(A v, const Div& div = Div()) const {
    if constexpr (kSpiking) return spike_count_of<S>(v, theta, max_spikes, div);
    else return A(0);
  }
  // v - s * subtract fused where the division vouches for it (cuda_division.cuh's
  // PowerOfTwoDivision, for subtract values it accepts), else as sinabs writes it.
  template <class Div = IeeeDivision>
  EXODUS_HD A reset(A v, A s, const Div& div = Div()) const {
    if constexpr (kSubtracts && Div::kExactSubtract) return div.subtract_spikes(v, s, subtract);
    else if constexpr (kSpiking) return apply_reset_of<R>(v, s, subtract, reset_value);
    else return v;
  }
  EXODUS_HD A state(A r) const {
    if constexpr (Clip) return clip_below(r, min_v);
    else return r;
  }
  // What forward writes as the output of a step: spikes, or the membrane for ExpLeak.
  EXODUS_HD A output(A v, A s) const { return kSpiking ? s : v; }

  // One forward step: returns the output, updates the state w.
  template <class Div = IeeeDivision>
  EXODUS_HD A step(A& w, A x, const Div& div = Div()) const {
    const A v = membrane(w, x);
    const A s = spikes(v, div);
    w = state(reset(v, s, div));
    return output(v, s);
  }
  // The same step for backward's recomputation: also the membrane v and the gate of the step.
  template <class Div = IeeeDivision>
  EXODUS_HD void recompute(A& w, A x, A& v, A& gate, const Div& div = Div()) const {
    v = membrane(w, x);
    const A s = spikes(v, div);
    const A r = reset(v, s, div);
    if constexpr (kGated) {
      A g = A(1);
      if constexpr (Clip) g = r - min_v > A(0) ? A(1) : A(0);  // relu passes where r > m
      if constexpr (kSpiking && R == ResetKind::ToValue) g = g * A(s == A(0));
      gate = g;
    }
    w = state(r);
  }
  // dL/dv_t from the surrogate sigma_t (spiking), the output gradient and H_t (DESIGN.md):
  // G_t = sigma_t * g_s_t + k_t * H_t, or g_y_t + c_t * H_t for ExpLeak. mul_add fuses on the
  // device (two instructions fewer per step) and keeps the host's bits.
  EXODUS_HD A grad_v(A sigma, A g_y, A h, A gate) const {
    if constexpr (!kSpiking) return kGated ? mul_add(gate, h, g_y) : g_y + h;
    else if constexpr (R == ResetKind::Subtract) {
      const A keep = mul_add(-subtract, sigma, A(1));
      return mul_add(kGated ? gate * keep : keep, h, sigma * g_y);
    } else {
      return mul_add(gate, h, sigma * g_y);
    }
  }
};

// The surrogate of K membrane values at once, in place (v[k] -> sigma_k), for the fast CUDA
// backward: the kind is switched on once per K steps and per-neuron constants are hoisted out of
// the loop; the single exponential through exp2_approx.
template <int K, typename A>
EXODUS_HD void surrogate_grads(A (&v)[K], A theta, const SurrogateParams<A>& s) {
  switch (s.kind) {
    case SurrogateKind::SingleExponential: {  // grad_scale / width * exp(-|v - theta| / width)
      const A width = theta * s.p[0];
      // exp(-d / width) = 2^(d * log2_decay)
      const A scale = s.p[1] / width, log2_decay = A(-1.4426950408889634) / width;
      EXODUS_UNROLL
      for (int k = 0; k < K; ++k) v[k] = scale * exp2_approx(fabs_(v[k] - theta) * log2_decay);
      break;
    }
    case SurrogateKind::Heaviside: {
      const A edge = theta - s.p[0], inv_theta = A(1) / theta;
      EXODUS_UNROLL
      for (int k = 0; k < K; ++k) v[k] = A(v[k] >= edge) * inv_theta;
      break;
    }
    default: {
      EXODUS_UNROLL
      for (int k = 0; k < K; ++k) v[k] = surrogate_grad(v[k], theta, s);
    }
  }
}

// Calls body(Cell<A, S, R, Clip>{...}-type tag) for the compile-time kinds matching p.
template <typename A, typename Body>
void with_cell_type(const NeuronParams<A>& p, Body body) {
  auto with_clip = [&](auto spike, auto reset) {
    constexpr SpikeKind S = decltype(spike)::value;
    constexpr ResetKind R = decltype(reset)::value;
    if (p.min_v.present()) body(static_cast<Cell<A, S, R, true>*>(nullptr));
    else body(static_cast<Cell<A, S, R, false>*>(nullptr));
  };
  auto with_reset = [&](auto spike) {
    if (p.reset == ResetKind::Subtract) with_clip(spike, std::integral_constant<ResetKind, ResetKind::Subtract>{});
    else with_clip(spike, std::integral_constant<ResetKind, ResetKind::ToValue>{});
  };
  switch (p.spike) {
    case SpikeKind::None:
      with_clip(std::integral_constant<SpikeKind, SpikeKind::None>{},
                std::integral_constant<ResetKind, ResetKind::Subtract>{});
      break;
    case SpikeKind::Single: with_reset(std::integral_constant<SpikeKind, SpikeKind::Single>{}); break;
    case SpikeKind::Max: with_reset(std::integral_constant<SpikeKind, SpikeKind::Max>{}); break;
    default: with_reset(std::integral_constant<SpikeKind, SpikeKind::Multi>{}); break;
  }
}

}  // namespace exodus
