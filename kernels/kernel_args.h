// Plain argument structs shared by the CPU and CUDA kernels (no torch types here).
//
// Layout conventions: a "neuron" is one (batch b, flattened feature f). Time-major tensors are
// (B, T, F); inputs may have any strides (View3), outputs and saved states are contiguous.
// A is the accumulation/state type: float for float32/float16/bfloat16 data, double for float64.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define EXODUS_HD __host__ __device__ __forceinline__
#define EXODUS_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
// Forced, as on the device: GCC's early inliner leaves a Cell's step as a call, so the Cell object
// stays in memory and the CPU's omp simd loops over neurons do not vectorise.
#define EXODUS_HD inline __attribute__((always_inline))
#define EXODUS_UNROLL
#else
#define EXODUS_HD inline
#define EXODUS_UNROLL
#endif

namespace exodus {

enum class DType : int32_t { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };

// Values match the Python side (exodus_jit/ops/_config.py).
enum class SpikeKind : int32_t { None = 0, Multi = 1, Single = 2, Max = 3 };  // None: ExpLeak
enum class ResetKind : int32_t { Subtract = 0, ToValue = 1 };
enum class SurrogateKind : int32_t {
  Given = 0,  // values computed in PyTorch and passed in (custom callables)
  SingleExponential = 1,
  PeriodicExponential = 2,
  Heaviside = 3,
  Gaussian = 4,
  MultiGaussian = 5,
};
constexpr int kSurrogateParams = 5;

// Forward keeps the state every kCheckpointSteps steps; backward recomputes the membrane between
// checkpoints instead of reading a saved (B, T, F) trajectory. Python mirrors it
// (exodus_jit/ops/_config.py CHECKPOINT_STEPS).
constexpr int kCheckpointSteps = 8;

// What forward keeps for backward (the `save` argument of membrane_forward).
enum class SaveKind : int32_t {
  Nothing = 0,
  Checkpoints = 1,  // (B, ceil(T / kCheckpointSteps), F): the state before each segment
  Trajectory = 2,   // (B, T, F): the membrane before spike/reset, for surrogates evaluated in PyTorch
};

struct Shape {
  int64_t batch, time, features;
  EXODUS_HD int64_t neurons() const { return batch * features; }
};

// A (B, T, F) tensor of the storage dtype with arbitrary element strides.
struct View3 {
  const void* data;
  int64_t sb, st, sf;
  EXODUS_HD int64_t offset(int64_t b, int64_t t, int64_t f) const { return b * sb + t * st + f * sf; }
};

// alpha = exp(-1/tau) of a time constant, as sinabs computes it (torch.exp(-1.0 / tau):
// reciprocal, times -1, exp) and with PyTorch's CUDA operations (IEEE division, CUDA's exp), so
// equal to PyTorch's values to the bit on the GPU. Not used on the CPU, whose torch.exp is a
// vectorised implementation of its own (ops_autograd.h computes alpha with it there).
template <typename A>
EXODUS_HD A decay_of_tau(A tau) {
  const A reciprocal = A(1) / tau;
#ifdef __CUDA_ARCH__
  return exp(reciprocal * A(-1));
#else
  return std::exp(reciprocal * A(-1));
#endif
}

// tau's gradient from alpha's summed gradient, with autograd's arithmetic for alpha = exp(-1/tau):
// exp's backward (times alpha), then the reciprocal's (times (1/tau)^2; with "times -1" the two
// signs cancel exactly).
template <typename A>
EXODUS_HD A tau_grad_of(A g_alpha, A tau) {
  const A reciprocal = A(1) / tau;
  return (g_alpha * decay_of_tau(tau)) * (reciprocal * reciprocal);
}

// A neuron parameter: one value (stride 0) or one per feature (stride 1); never per batch. With
// from_tau (alphas on the GPU) the data are time constants tau and the value is exp(-1/tau), so
// alpha costs no launch of its own and is read live from tau; read once per neuron.
template <typename A>
struct Param {
  const A* data = nullptr;
  int64_t stride = 0;
  bool from_tau = false;
  EXODUS_HD A at(int64_t f) const {
    const A value = data[f * stride];
    return from_tau ? decay_of_tau(value) : value;
  }
  EXODUS_HD bool present() const { return data != nullptr; }
};

template <typename A>
struct NeuronParams {
  Param<A> alpha, threshold, subtract, min_v;  // min_v absent: no clipping
  A reset_value;
  A max_spikes;
  SpikeKind spike;
  ResetKind reset;
  bool norm_input;
};

template <typename A>
struct SurrogateParams {
  SurrogateKind kind;
  A p[kSurrogateParams];
};

// sinabs' synaptic current before the membrane (tau_syn): i_t = alpha (i_{t-1} + x_t), and the
// membrane's input is i_t instead of x_t. Fused into the membrane kernels, so the current never
// goes through memory. Absent (alpha.data null) for a plain membrane. Not combined with
// recorded states or given surrogate values (ops_impl.h checks).
template <typename A>
struct SynapseForward {
  Param<A> alpha;
  const A* i0 = nullptr;   // (B, F)
  A* i_final = nullptr;    // (B, F)
  A* i_zero = nullptr;     // (B, F) zeros for the next reset (as v_zero); may be null
  A* ckpt = nullptr;       // (B, C, F) the current before each segment, next to the membrane's
  EXODUS_HD bool present() const { return alpha.present(); }
};

template <typename A>
struct SynapseBackward {
  Param<A> alpha;
  const A* i0 = nullptr;
  const A* ckpt = nullptr;
  const A* g_ifinal = nullptr;  // (B, F) or null
  A* g_i0 = nullptr;            // (B, F), or null when i0 needs no gradient
  A* g_alpha = nullptr;         // (B, F) per-neuron sums, or null
  EXODUS_HD bool present() const { return alpha.present(); }
};

template <typename A>
struct MembraneForwardArgs {
  Shape shape;
  DType dtype;  // of u and out
  NeuronParams<A> p;
  View3 u;
  const A* v0;   // (B, F)
  void* out;     // (B, T, F): spikes, or v for ExpLeak
  A* ckpt;       // (B, C, F) state before each segment of kCheckpointSteps steps; may be null
  A* v_pre;      // (B, T, F) membrane before spike/reset; may be null
  A* w_rec;      // (B, T, F) state after reset and clipping (record_states); may be null
  A* v_final;    // (B, F)
  A* out_sum;    // (B, F) sum of out over time (firing rates without a pass over out); may be null
  // (B, F) zeros, written beside v_final: the layer's states for its next reset_states, which
  // then needs no launch of its own; may be null
  A* v_zero = nullptr;
  SynapseForward<A> syn;  // u is the synapse's input x when present
  // TauSums::counter of the backward of this call, zeroed here (by one thread) so that the
  // backward needs no memset launch of its own; may be null
  unsigned* tau_sums_counter = nullptr;
};

// One tau (or tau_syn) of a call, its gradient summed inside the fast backward kernel instead of
// written per neuron and summed by a launch of its own (cuda_decay.cu): each block adds its
// neurons' gradients of alpha in a fixed tree into partials[block] (and, for tau_syn,
// partials[blocks + block]); the block that finishes last, counted in *counter, adds the
// partials in index order and applies tau_grad_of, so the result does not depend on which block
// is last. The counter is zero before the kernel (the forward kernel wrote it) and after it (the
// last block resets it, for a second backward of the same graph).
template <typename A>
struct TauSums {
  A* g_tau = nullptr;      // (1,): tau's gradient, or null (alpha's gradient per neuron in g_alpha, or none)
  A* g_tau_syn = nullptr;  // (1,): tau_syn's, likewise with syn.g_alpha
  A* partials = nullptr;   // (2 * blocks,)
  unsigned* counter = nullptr;
  EXODUS_HD bool present() const { return counter != nullptr; }
};

template <typename A>
struct MembraneBackwardArgs {
  Shape shape;
  DType dtype;  // of g_out, u and g_u
  NeuronParams<A> p;
  SurrogateParams<A> surrogate;
  View3 g_out;
  const A* g_out_sum;  // (B, F) gradient of out_sum: adds to every step's output gradient; or null
  const A* g_wrec;    // (B, T, F) or null
  const A* g_vfinal;  // (B, F) or null
  const A* ckpt;      // (B, C, F) checkpoints written by forward
  View3 u;            // the input: backward recomputes the membrane from it
  const A* v0;        // (B, F)
  const A* sigma;     // (B, T, F) surrogate values when surrogate.kind == Given
  void* g_u;          // (B, T, F)
  A* g_v0 = nullptr;     // (B, F), or null when v0 needs no gradient
  A* g_alpha = nullptr;  // (B, F) per-neuron sums, or null when alpha needs no gradient (or TauSums has it)
  SynapseBackward<A> syn;  // g_u is the gradient of the synapse's input x when present
  TauSums<A> tau_sums;     // fast kernels only (ops_impl.h asks the backend)
};

template <typename A>
struct SynapticForwardArgs {
  Shape shape;
  DType dtype;  // of x
  Param<A> alpha;
  View3 x;
  const A* i0;   // (B, F)
  A* i_all;      // (B, T, F)
  A* i_final;    // (B, F)
};

template <typename A>
struct SynapticBackwardArgs {
  Shape shape;
  DType dtype;  // of x and g_x
  Param<A> alpha;
  const A* g_i;      // (B, T, F) contiguous
  const A* g_final;  // (B, F) or null
  const A* i_all;    // (B, T, F), read only for the alpha gradient
  View3 x;           // read only for the alpha gradient
  const A* i0;
  void* g_x;    // (B, T, F)
  A* g_i0;      // (B, F)
  A* g_alpha;   // (B, F) or null
};

// tau's gradient from alpha's per-neuron gradient (B, F) where the kernels computed alpha from
// tau (Param::from_tau), in one launch: the sum over the batch (and over the features for one
// tau), then autograd's arithmetic for alpha = exp(-1/tau) (times alpha, times (1/tau)^2: exp's
// and the reciprocal's backward, whose two signs cancel). The sums run in a fixed order, so the
// result is deterministic; for one tau in two levels: `blocks` partial sums, which the block
// that finishes last (counted in *counter, zero before the launch) adds up in index order.
template <typename A>
struct DecayGradArgs {
  int64_t rows, cols;  // B, F
  const A* g_alpha;    // (B, F)
  const A* tau;        // (1,) or (F,)
  bool per_feature;    // tau has F values, else one
  A* g_tau;            // tau's shape
  A* partials;         // (blocks,) for one tau
  unsigned* counter;   // for one tau
  int blocks;
};

// Calls without extras (recorded states, the membrane trajectory, given surrogate values): what
// the compile-time Cell loops of the CPU and the fast CUDA kernels take. The fused synaptic stage
// comes only without extras (ops_impl.h checks).
template <typename A>
EXODUS_HD bool without_extras(const MembraneForwardArgs<A>& a) {
  return a.v_pre == nullptr && a.w_rec == nullptr;
}
template <typename A>
EXODUS_HD bool without_extras(const MembraneBackwardArgs<A>& a) {
  return a.g_wrec == nullptr && (a.surrogate.kind != SurrogateKind::Given || a.p.spike == SpikeKind::None);
}

}  // namespace exodus
