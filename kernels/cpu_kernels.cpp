// CPU kernels. The membrane runs blocks of neighbouring neurons time step by time step, so every
// step reads and writes contiguous rows (what a CPU cache wants); its arithmetic is the same
// Neuron step as the GPU's (neuron_loops.h), so results are identical. The synaptic stage runs
// the per-neuron loops of neuron_loops.h.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <type_traits>
#include <vector>

#include "cpu_backend.h"
#include "neuron_cell.h"
#include "neuron_loops.h"

namespace exodus {
namespace {

// Neurons per task: enough work per task to amortise scheduling, few enough to balance threads.
constexpr int64_t kGrain = 64;

template <typename Args, typename Body>
void for_each_neuron(const Args& a, Body body) {
  const int64_t features = a.shape.features;
  at::parallel_for(0, a.shape.neurons(), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) body(n / features, n % features);
  });
}

// Calls body(T{}) with the storage type that goes with state type A and the data's dtype.
template <typename A, typename Body>
void with_storage_type(DType dtype, Body body) {
  if constexpr (std::is_same<A, double>::value) {
    TORCH_CHECK(dtype == DType::Float64, "float64 state needs float64 data");
    body(double{});
  } else {
    switch (dtype) {
      case DType::Float32: body(float{}); break;
      case DType::Float16: body(c10::Half{}); break;
      case DType::BFloat16: body(c10::BFloat16{}); break;
      default: TORCH_CHECK(false, "float32 state goes with float32/16 or bfloat16 data");
    }
  }
}

// Neurons of one batch entry per block: a step's rows stay in L1, and blocks spread over threads.
constexpr int64_t kBlock = 128;

// Calls body(b, f0, f1) for blocks of neighbouring features, over torch's intra-op threads. The
// body is type-erased: one parallel region is compiled for all kernel variants, not one each.
using BlockBody = std::function<void(int64_t, int64_t, int64_t)>;
void for_each_block(const Shape& shape, const BlockBody& body) {
  const int64_t features = shape.features;
  const int64_t blocks_per_row = (features + kBlock - 1) / kBlock;
  at::parallel_for(0, shape.batch * blocks_per_row, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / blocks_per_row, f0 = (i % blocks_per_row) * kBlock;
      body(b, f0, f0 + kBlock < features ? f0 + kBlock : features);
    }
  });
}

template <typename A>
std::vector<Neuron<A>> neurons_of(const NeuronParams<A>& p, int64_t f0, int64_t f1) {
  std::vector<Neuron<A>> block;
  block.reserve(f1 - f0);
  for (int64_t f = f0; f < f1; ++f) block.emplace_back(p, f);
  return block;
}

template <typename T, typename A>
void membrane_block(const MembraneForwardArgs<A>& a, int64_t b, int64_t f0, int64_t f1) {
  const int64_t F = a.shape.features, steps = a.shape.time, width = f1 - f0;
  const int64_t segments = (steps + kCheckpointSteps - 1) / kCheckpointSteps;
  const std::vector<Neuron<A>> nrn = neurons_of(a.p, f0, f1);
  const T* u = static_cast<const T*>(a.u.data);
  T* out = static_cast<T*>(a.out);
  std::vector<A> w(a.v0 + b * F + f0, a.v0 + b * F + f1), out_sum(width, A(0));
  for (int64_t t = 0; t < steps; ++t) {
    const int64_t row = (b * steps + t) * F + f0;
    const T* x = u + a.u.offset(b, t, f0);
    if (a.ckpt && t % kCheckpointSteps == 0) {
      A* ckpt = a.ckpt + (b * segments + t / kCheckpointSteps) * F + f0;
      for (int64_t j = 0; j < width; ++j) ckpt[j] = w[j];
    }
    for (int64_t j = 0; j < width; ++j) {
      const A v = nrn[j].membrane(w[j], static_cast<A>(x[j * a.u.sf]));
      const A s = nrn[j].spikes(v);
      const A y = nrn[j].spiking ? s : v;
      out[row + j] = static_cast<T>(y);
      out_sum[j] += y;
      w[j] = nrn[j].state(nrn[j].reset(v, s));
      if (a.v_pre) a.v_pre[row + j] = v;
      if (a.w_rec) a.w_rec[row + j] = w[j];
    }
  }
  for (int64_t j = 0; j < width; ++j) a.v_final[b * F + f0 + j] = w[j];
  if (a.out_sum)
    for (int64_t j = 0; j < width; ++j) a.out_sum[b * F + f0 + j] = out_sum[j];
  if (a.v_zero) std::fill(a.v_zero + b * F + f0, a.v_zero + b * F + f1, A(0));
}

// The reverse recurrence of membrane_backward_neuron (neuron_loops.h), a block of neurons at a
// time: each segment's membrane is recomputed from its checkpoint into a small buffer, then
// walked backwards.
template <typename T, typename A>
void membrane_block(const MembraneBackwardArgs<A>& a, int64_t b, int64_t f0, int64_t f1) {
  constexpr int K = kCheckpointSteps;
  const int64_t F = a.shape.features, steps = a.shape.time, width = f1 - f0;
  const int64_t segments = (steps + K - 1) / K;
  const NeuronParams<A>& p = a.p;
  const std::vector<Neuron<A>> nrn = neurons_of(p, f0, f1);
  const bool given_sigma = a.surrogate.kind == SurrogateKind::Given;
  const T* g_out = static_cast<const T*>(a.g_out.data);
  const T* u = static_cast<const T*>(a.u.data);
  T* g_u = static_cast<T*>(a.g_u);
  std::vector<A> carry(width, A(0)), g_alpha(width, A(0)), pending(width, A(0)), w(width), v(K * width);
  std::vector<A> g_shift(width, A(0));  // out_sum's gradient reaches every step
  if (a.g_vfinal)
    for (int64_t j = 0; j < width; ++j) carry[j] = a.g_vfinal[b * F + f0 + j];
  if (a.g_out_sum)
    for (int64_t j = 0; j < width; ++j) g_shift[j] = a.g_out_sum[b * F + f0 + j];
  for (int64_t seg = segments - 1; seg >= 0; --seg) {
    const int64_t t0 = seg * K;
    const int64_t len = steps - t0 < K ? steps - t0 : K;
    const A* ckpt = a.ckpt + (b * segments + seg) * F + f0;
    for (int64_t j = 0; j < width; ++j) w[j] = ckpt[j];
    for (int64_t k = 0; k < len; ++k) {
      const T* x = u + a.u.offset(b, t0 + k, f0);
      for (int64_t j = 0; j < width; ++j) {
        const A vk = nrn[j].membrane(w[j], static_cast<A>(x[j * a.u.sf]));
        v[k * width + j] = vk;
        w[j] = nrn[j].state(nrn[j].reset(vk, nrn[j].spikes(vk)));
      }
    }
    for (int64_t k = len - 1; k >= 0; --k) {
      const int64_t t = t0 + k, row = (b * steps + t) * F + f0;
      const T* g_y = g_out + a.g_out.offset(b, t, f0);
      const T* x = u + a.u.offset(b, t, f0);
      for (int64_t j = 0; j < width; ++j) {
        const Neuron<A>& n = nrn[j];
        const A vk = v[k * width + j];
        const A s = n.spikes(vk);
        const A r = n.reset(vk, s);
        const A h = carry[j] + (a.g_wrec ? a.g_wrec[row + j] : A(0));
        const A c = (!n.clip || r - n.min_v > A(0)) ? A(1) : A(0);
        const A gy = static_cast<A>(g_y[j * a.g_out.sf]) + g_shift[j];
        A grad_v;
        if (n.spiking) {
          const A sigma = given_sigma ? a.sigma[row + j] : surrogate_grad(vk, n.theta, a.surrogate);
          const A keep = p.reset == ResetKind::Subtract ? c * (A(1) - n.subtract * sigma) : c * A(s == A(0));
          grad_v = sigma * gy + keep * h;
        } else {
          grad_v = gy + c * h;
        }
        g_u[row + j] = static_cast<T>(p.norm_input ? n.one_minus_alpha * grad_v : grad_v);
        if (a.g_alpha) {
          g_alpha[j] += pending[j] * n.state(r);
          pending[j] = grad_v;
          if (p.norm_input) g_alpha[j] -= grad_v * static_cast<A>(x[j * a.u.sf]);
        }
        carry[j] = n.alpha * grad_v;
      }
    }
  }
  for (int64_t j = 0; j < width; ++j) {
    const int64_t n = b * F + f0 + j;
    if (a.g_v0) a.g_v0[n] = carry[j];
    if (a.g_alpha) a.g_alpha[n] = g_alpha[j] + pending[j] * a.v0[n];
  }
}

// The same two walks with the options compiled in (Cell, neuron_cell.h), for calls without
// recorded states or given surrogate values; the algorithm of the fast CUDA kernels
// (cuda_membrane.cuh): backward keeps each step's membrane, gate and dv/dalpha from the
// recomputation and evaluates the surrogate once per segment. Each neuron constant is an array of
// its own and the loops over a block's neurons carry no branches, so they vectorise.

// A block's per-neuron constants, one array each.
template <typename A>
struct CellColumns {
  std::vector<A> alpha, in_scale, theta, subtract, min_v;
  A reset_value, max_spikes;
  CellColumns(const NeuronParams<A>& p, int64_t f0, int64_t f1) : reset_value(p.reset_value), max_spikes(p.max_spikes) {
    for (int64_t f = f0; f < f1; ++f) {
      alpha.push_back(p.alpha.at(f));
      in_scale.push_back(p.norm_input ? A(1) - p.alpha.at(f) : A(1));
      theta.push_back(p.threshold.at(f));
      subtract.push_back(p.subtract.at(f));
      min_v.push_back(p.min_v.present() ? p.min_v.at(f) : A(0));
    }
  }
  template <class C>
  C cell(int64_t j) const {
    return C(alpha[j], in_scale[j], theta[j], subtract[j], min_v[j], reset_value, max_spikes);
  }
};

// exp for the surrogate gradients, written so that loops over neurons vectorise (std::exp does
// not without -ffast-math, which the exact forward arithmetic rules out): Cody-Waite reduction
// and a degree-6 polynomial, within 2 ulp of expf on [-87, 88]. Gradients only.
inline float exp_vectorisable(float x) {
  x = x < -87.f ? -87.f : (x > 88.f ? 88.f : x);
  const float y = x * 1.44269504f + 0.5f;
#ifdef __SSE4_1__
  const float k = floorf(y);  // one instruction (roundps); GCC vectorises the idiom below only without SSE4.1
#else
  float k = static_cast<float>(static_cast<int32_t>(y));  // floor, without a call: |y| < 128
  k = k > y ? k - 1.f : k;
#endif
  const float r = (x - k * 0.693359375f) - k * -2.12194440e-4f;
  float p = 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;  // 2^k
  return p * __builtin_bit_cast(float, bits);
}
inline double exp_vectorisable(double x) { return std::exp(x); }

// The surrogates the layers use by default, with each neuron's constants computed once per block
// (the same expressions as surrogate_grads, so the same values) rather than once per step.
template <typename A>
struct SurrogateColumns {
  const SurrogateParams<A>& s;
  const A* theta;
  std::vector<A> c0, c1;  // SingleExponential: scale, 1 / width; Heaviside: the edge, 1 / theta
  SurrogateColumns(const SurrogateParams<A>& params, const CellColumns<A>& cols) : s(params), theta(cols.theta.data()) {
    for (const A th : cols.theta) {
      if (s.kind == SurrogateKind::SingleExponential) {  // grad_scale / width * exp(-|v - theta| / width)
        const A width = th * s.p[0];
        c0.push_back(s.p[1] / width);
        c1.push_back(A(1) / width);
      } else if (s.kind == SurrogateKind::Heaviside) {
        c0.push_back(th - s.p[0]);
        c1.push_back(A(1) / th);
      }
    }
  }
  // sigma of `count` membranes v[j], in place; other surrogates per value.
  void apply(A* v, int64_t count) const {
    const A *c0_ = c0.data(), *c1_ = c1.data();
    switch (s.kind) {
      case SurrogateKind::SingleExponential:
#pragma omp simd
        for (int64_t j = 0; j < count; ++j) {
          const A d = v[j] - theta[j];
          v[j] = c0_[j] * exp_vectorisable(-(d < A(0) ? -d : d) * c1_[j]);
        }
        break;
      case SurrogateKind::Heaviside:
#pragma omp simd
        for (int64_t j = 0; j < count; ++j) v[j] = A(v[j] >= c0_[j]) * c1_[j];
        break;
      default:
        for (int64_t j = 0; j < count; ++j) v[j] = surrogate_grad(v[j], theta[j], s);
    }
  }
};

// The fused synaptic stage of a block (SynapseForward/-Backward): per-neuron alpha_syn and the
// current i.
template <typename A>
struct SynapseColumns {
  std::vector<A> alpha, i;
  template <class Syn>
  SynapseColumns(const Syn& syn, int64_t n0, int64_t f0, int64_t f1) {
    if (!syn.present()) return;
    for (int64_t f = f0; f < f1; ++f) alpha.push_back(syn.alpha.at(f));
    if constexpr (std::is_same<Syn, SynapseForward<A>>::value) i.assign(syn.i0 + n0, syn.i0 + n0 + (f1 - f0));
    else i.resize(f1 - f0);
  }
};

// The Cell loops below see contiguous rows of the state type A only, so they are compiled once
// per state type (float, double), not per data type: 2-byte or strided data is converted into a
// row first, and 2-byte results are written through a row.

// A step's row of data as contiguous A: the data itself where it already is one.
template <typename T, typename A>
const A* row_of(const T* x, int64_t stride, int64_t width, A* row) {
  if constexpr (std::is_same<T, A>::value)
    if (stride == 1) return x;
  for (int64_t j = 0; j < width; ++j) row[j] = static_cast<A>(x[j * stride]);
  return row;
}

// Where a step's results of type A go: the destination itself if it holds A, else `row`, copied
// there by store_row.
template <typename T, typename A>
A* result_row(T* dst, A* row) {
  if constexpr (std::is_same<T, A>::value) return dst;
  else return row;
}
template <typename T, typename A>
void store_row(T* dst, const A* row, int64_t width) {
  if constexpr (!std::is_same<T, A>::value)
    for (int64_t j = 0; j < width; ++j) dst[j] = static_cast<T>(row[j]);
}

// The step loops load each neuron's values into locals first and store them last: with
// references into the rows, GCC cannot rule out that one row's store changes another's load within
// an iteration, and leaves the loop scalar.
template <class C, typename A>
void forward_step(const CellColumns<A>& cols, A* w, const A* in, A* y, A* out_sum, int64_t width) {
#pragma omp simd
  for (int64_t j = 0; j < width; ++j) {
    A wj = w[j];
    const A out = cols.template cell<C>(j).step(wj, in[j]);
    w[j] = wj;
    y[j] = out;
    out_sum[j] += out;
  }
}

template <class C, typename A>
void recompute_step(const CellColumns<A>& cols, A* w, const A* in, A* v, A* gate, A* d_alpha, bool norm_input,
                    int64_t width) {
#pragma omp simd
  for (int64_t j = 0; j < width; ++j) {
    const A w_prev = w[j], x = in[j];
    A wj = w_prev, vj, gj = A(1);
    cols.template cell<C>(j).recompute(wj, x, vj, gj);
    w[j] = wj;
    v[j] = vj;
    gate[j] = gj;
    d_alpha[j] = norm_input ? w_prev - x : w_prev;  // dv_t/dalpha
  }
}

// One step of the reverse walk; g_in: the gradient of the membrane's input.
template <class C, typename A>
void reverse_step(const CellColumns<A>& cols, const A* sigma, const A* g_y, const A* g_shift, A* carry,
                  const A* gate, const A* d_alpha, A* g_alpha, bool alpha_grad, A* g_in, int64_t width) {
#pragma omp simd
  for (int64_t j = 0; j < width; ++j) {
    const C c = cols.template cell<C>(j);
    const A gv = c.grad_v(sigma[j], g_y[j] + g_shift[j], carry[j], gate[j]);
    const A g_alpha_j = g_alpha[j] + (alpha_grad ? gv * d_alpha[j] : A(0));
    g_in[j] = c.in_scale * gv;
    g_alpha[j] = g_alpha_j;
    carry[j] = c.alpha * gv;
  }
}

template <typename T, class C, typename A>
void membrane_cells(const MembraneForwardArgs<A>& a, int64_t b, int64_t f0, int64_t f1) {
  const int64_t F = a.shape.features, steps = a.shape.time, width = f1 - f0, sf = a.u.sf;
  const int64_t segments = (steps + kCheckpointSteps - 1) / kCheckpointSteps;
  const CellColumns<A> cols(a.p, f0, f1);
  const bool syn = a.syn.present();
  SynapseColumns<A> syn_cols(a.syn, b * F + f0, f0, f1);
  const T* u = static_cast<const T*>(a.u.data);
  T* out = static_cast<T*>(a.out);
  std::vector<A> w_(a.v0 + b * F + f0, a.v0 + b * F + f1), out_sum_(width, A(0)), in_(width), y_(width);
  A *w = w_.data(), *out_sum = out_sum_.data();
  A *alpha_syn = syn_cols.alpha.data(), *i = syn_cols.i.data();
  for (int64_t t = 0; t < steps; ++t) {
    const T* x = u + a.u.offset(b, t, f0);
    T* o = out + (b * steps + t) * F + f0;
    if (a.ckpt && t % kCheckpointSteps == 0) {
      const int64_t at = (b * segments + t / kCheckpointSteps) * F + f0;
      for (int64_t j = 0; j < width; ++j) a.ckpt[at + j] = w[j];
      if (syn)
        for (int64_t j = 0; j < width; ++j) a.syn.ckpt[at + j] = i[j];
    }
    const A* in;  // the membrane's input: the data, or the synaptic current it drives
    if (syn) {
      A* current = in_.data();
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) current[j] = synapse_step(i[j], static_cast<A>(x[j * sf]), alpha_syn[j]);
      in = current;
    } else {
      in = row_of(x, sf, width, in_.data());
    }
    forward_step<C>(cols, w, in, result_row(o, y_.data()), out_sum, width);
    store_row(o, y_.data(), width);
  }
  for (int64_t j = 0; j < width; ++j) a.v_final[b * F + f0 + j] = w[j];
  if (a.out_sum)
    for (int64_t j = 0; j < width; ++j) a.out_sum[b * F + f0 + j] = out_sum[j];
  if (a.v_zero) std::fill(a.v_zero + b * F + f0, a.v_zero + b * F + f0 + width, A(0));
  if (syn)
    for (int64_t j = 0; j < width; ++j) a.syn.i_final[b * F + f0 + j] = i[j];
  if (syn && a.syn.i_zero) std::fill(a.syn.i_zero + b * F + f0, a.syn.i_zero + b * F + f0 + width, A(0));
}

template <typename T, class C, typename A>
void membrane_cells(const MembraneBackwardArgs<A>& a, int64_t b, int64_t f0, int64_t f1) {
  constexpr int K = kCheckpointSteps;
  const int64_t F = a.shape.features, steps = a.shape.time, width = f1 - f0;
  const int64_t segments = (steps + K - 1) / K, su = a.u.sf, sg = a.g_out.sf;
  const CellColumns<A> cols(a.p, f0, f1);
  const SurrogateColumns<A> sigma(a.surrogate, cols);
  const bool alpha_grad = a.g_alpha != nullptr, norm_input = a.p.norm_input;
  const bool syn = a.syn.present(), alpha_syn_grad = syn && a.syn.g_alpha != nullptr;
  SynapseColumns<A> syn_cols(a.syn, b * F + f0, f0, f1);
  const T* g_out = static_cast<const T*>(a.g_out.data);
  const T* u = static_cast<const T*>(a.u.data);
  T* g_u = static_cast<T*>(a.g_u);
  std::vector<A> carry_(width, A(0)), g_alpha_(width, A(0)), w_(width), g_shift_(width, A(0));
  std::vector<A> v_(K * width), gate_(K * width, A(1)), d_alpha_(K * width), in_(width), g_y_(width), g_in_(width);
  A *carry = carry_.data(), *g_alpha = g_alpha_.data(), *w = w_.data(), *g_shift = g_shift_.data();
  A *v = v_.data(), *gate = gate_.data(), *d_alpha = d_alpha_.data();
  // synaptic stage: J's carry, alpha_syn's gradient, i_{t-1} + x_t of a segment's steps
  std::vector<A> syn_carry_(syn ? width : 0, A(0)), g_alpha_syn_(syn ? width : 0, A(0)), pre_(syn ? K * width : 0);
  A *syn_carry = syn_carry_.data(), *g_alpha_syn = g_alpha_syn_.data(), *pre = pre_.data();
  A *alpha_syn = syn_cols.alpha.data(), *i = syn_cols.i.data();
  if (a.g_vfinal)
    for (int64_t j = 0; j < width; ++j) carry[j] = a.g_vfinal[b * F + f0 + j];
  if (a.g_out_sum)
    for (int64_t j = 0; j < width; ++j) g_shift[j] = a.g_out_sum[b * F + f0 + j];
  if (syn && a.syn.g_ifinal)
    for (int64_t j = 0; j < width; ++j) syn_carry[j] = a.syn.g_ifinal[b * F + f0 + j];
  for (int64_t seg = segments - 1; seg >= 0; --seg) {
    const int64_t t0 = seg * K;
    const int len = steps - t0 < K ? static_cast<int>(steps - t0) : K;
    const int64_t at = (b * segments + seg) * F + f0;
    for (int64_t j = 0; j < width; ++j) w[j] = a.ckpt[at + j];
    if (syn)
      for (int64_t j = 0; j < width; ++j) i[j] = a.syn.ckpt[at + j];
    for (int k = 0; k < len; ++k) {
      const T* x = u + a.u.offset(b, t0 + k, f0);
      A* vk = v + k * width;
      const A* in;
      if (syn) {
        A *pk = pre + k * width, *current = in_.data();
#pragma omp simd
        for (int64_t j = 0; j < width; ++j) {
          const A xj = static_cast<A>(x[j * su]);
          pk[j] = i[j] + xj;
          current[j] = synapse_step(i[j], xj, alpha_syn[j]);
        }
        in = current;
      } else {
        in = row_of(x, su, width, in_.data());
      }
      recompute_step<C>(cols, w, in, vk, gate + k * width, d_alpha + k * width, norm_input, width);
      if constexpr (C::kSpiking) sigma.apply(vk, width);
    }
    for (int k = len - 1; k >= 0; --k) {
      const int64_t t = t0 + k;
      const A* g_y = row_of(g_out + a.g_out.offset(b, t, f0), sg, width, g_y_.data());
      T* g = g_u + (b * steps + t) * F + f0;
      A* g_in = syn ? g_in_.data() : result_row(g, g_in_.data());
      reverse_step<C>(cols, v + k * width, g_y, g_shift, carry, gate + k * width, d_alpha + k * width, g_alpha,
                      alpha_grad, g_in, width);
      if (syn) {
        const A* pk = pre + k * width;
#pragma omp simd
        for (int64_t j = 0; j < width; ++j) {
          const A jt = synapse_grad(g_in[j], syn_carry[j], alpha_syn[j]);
          g[j] = static_cast<T>(syn_carry[j]);
          g_alpha_syn[j] += alpha_syn_grad ? jt * pk[j] : A(0);
        }
      } else {
        store_row(g, g_in, width);
      }
    }
  }
  for (int64_t j = 0; j < width; ++j) {
    const int64_t n = b * F + f0 + j;
    if (a.g_v0) a.g_v0[n] = carry[j];
    if (alpha_grad) a.g_alpha[n] = g_alpha[j];
    if (syn && a.syn.g_i0) a.syn.g_i0[n] = syn_carry[j];
    if (alpha_syn_grad) a.syn.g_alpha[n] = g_alpha_syn[j];
  }
}

}  // namespace

// The membrane's loops for a call, forward or backward (membrane_cells and membrane_block are
// overloaded on the Args type): the Cell loops (options compiled in) when it has no extras, else
// the general block loops.
template <typename A, class Args>
void run_membrane(const Args& a) {
  with_storage_type<A>(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (without_extras(a)) {
      with_cell_type(a.p, [&](auto* cell) {
        using C = std::remove_pointer_t<decltype(cell)>;
        for_each_block(a.shape, [&](int64_t b, int64_t f0, int64_t f1) { membrane_cells<T, C>(a, b, f0, f1); });
      });
    } else {
      TORCH_CHECK(!a.syn.present(), "the synaptic stage runs in the Cell loops only");
      for_each_block(a.shape, [&](int64_t b, int64_t f0, int64_t f1) { membrane_block<T, A>(a, b, f0, f1); });
    }
  });
}

template <typename A>
void CpuBackend::run(const MembraneForwardArgs<A>& a) {
  run_membrane<A>(a);
}

template <typename A>
void CpuBackend::run(const MembraneBackwardArgs<A>& a) {
  run_membrane<A>(a);
}

template <typename A>
void CpuBackend::run(const SynapticForwardArgs<A>& a) {
  with_storage_type<A>(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    for_each_neuron(a, [&](int64_t b, int64_t f) { synaptic_forward_neuron<T, A>(a, b, f); });
  });
}

template <typename A>
void CpuBackend::run(const SynapticBackwardArgs<A>& a) {
  with_storage_type<A>(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    for_each_neuron(a, [&](int64_t b, int64_t f) { synaptic_backward_neuron<T, A>(a, b, f); });
  });
}

#define EXODUS_INSTANTIATE(A)                                               \
  template void CpuBackend::run<A>(const MembraneForwardArgs<A>&);          \
  template void CpuBackend::run<A>(const MembraneBackwardArgs<A>&);         \
  template void CpuBackend::run<A>(const SynapticForwardArgs<A>&);          \
  template void CpuBackend::run<A>(const SynapticBackwardArgs<A>&);
EXODUS_INSTANTIATE(float)
EXODUS_INSTANTIATE(double)
#undef EXODUS_INSTANTIATE

}  // namespace exodus
