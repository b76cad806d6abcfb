// CPU kernels. The membrane runs blocks of neighbouring neurons time step by time step, so every
// step reads and writes contiguous rows (what a CPU cache wants); its arithmetic is the same
// Neuron step as the GPU's (neuron_loops.h), so results are identical. The synaptic stage runs
// the per-neuron loops of neuron_loops.h.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

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

// Calls body(b, f0, f1) for blocks of neighbouring features, over torch's intra-op threads.
template <typename Args, typename Body>
void for_each_block(const Args& a, Body body) {
  const int64_t features = a.shape.features;
  const int64_t blocks_per_row = (features + kBlock - 1) / kBlock;
  at::parallel_for(0, a.shape.batch * blocks_per_row, 1, [&](int64_t begin, int64_t end) {
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
void membrane_forward_block(const MembraneForwardArgs<A>& a, int64_t b, int64_t f0, int64_t f1) {
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
}

// The reverse recurrence of membrane_backward_neuron (neuron_loops.h), a block of neurons at a
// time: each segment's membrane is recomputed from its checkpoint into a small buffer, then
// walked backwards.
template <typename T, typename A>
void membrane_backward_block(const MembraneBackwardArgs<A>& a, int64_t b, int64_t f0, int64_t f1) {
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
    a.g_v0[n] = carry[j];
    if (a.g_alpha) a.g_alpha[n] = g_alpha[j] + pending[j] * a.v0[n];
  }
}

// The same two walks with the options compiled in (Cell, neuron_cell.h), for calls without
// recorded states or given surrogate values; the algorithm of the fast CUDA kernels
// (cuda_membrane.cu): backward keeps each step's membrane, gate and dv/dalpha from the
// recomputation and switches on the surrogate once per segment.
template <typename T, class C, typename A>
void membrane_forward_cells(const MembraneForwardArgs<A>& a, int64_t b, int64_t f0, int64_t f1) {
  const int64_t F = a.shape.features, steps = a.shape.time, width = f1 - f0;
  const int64_t segments = (steps + kCheckpointSteps - 1) / kCheckpointSteps;
  std::vector<C> cells;
  cells.reserve(width);
  for (int64_t f = f0; f < f1; ++f) cells.emplace_back(a.p, f);
  const T* u = static_cast<const T*>(a.u.data);
  T* out = static_cast<T*>(a.out);
  std::vector<A> w(a.v0 + b * F + f0, a.v0 + b * F + f1), out_sum(width, A(0));
  for (int64_t t = 0; t < steps; ++t) {
    const T* x = u + a.u.offset(b, t, f0);
    T* o = out + (b * steps + t) * F + f0;
    if (a.ckpt && t % kCheckpointSteps == 0) {
      A* ckpt = a.ckpt + (b * segments + t / kCheckpointSteps) * F + f0;
      for (int64_t j = 0; j < width; ++j) ckpt[j] = w[j];
    }
    for (int64_t j = 0; j < width; ++j) {
      const A y = cells[j].step(w[j], static_cast<A>(x[j * a.u.sf]));
      o[j] = static_cast<T>(y);
      out_sum[j] += y;
    }
  }
  for (int64_t j = 0; j < width; ++j) a.v_final[b * F + f0 + j] = w[j];
  if (a.out_sum)
    for (int64_t j = 0; j < width; ++j) a.out_sum[b * F + f0 + j] = out_sum[j];
}

template <typename T, class C, typename A>
void membrane_backward_cells(const MembraneBackwardArgs<A>& a, int64_t b, int64_t f0, int64_t f1) {
  constexpr int K = kCheckpointSteps;
  const int64_t F = a.shape.features, steps = a.shape.time, width = f1 - f0;
  const int64_t segments = (steps + K - 1) / K;
  std::vector<C> cells;
  cells.reserve(width);
  for (int64_t f = f0; f < f1; ++f) cells.emplace_back(a.p, f);
  const bool alpha_grad = a.g_alpha != nullptr, norm_input = a.p.norm_input;
  const T* g_out = static_cast<const T*>(a.g_out.data);
  const T* u = static_cast<const T*>(a.u.data);
  T* g_u = static_cast<T*>(a.g_u);
  std::vector<A> carry(width, A(0)), g_alpha(width, A(0)), w(width), g_shift(width, A(0));
  std::vector<A> v(K * width), gate(K * width, A(1)), d_alpha(K * width);
  if (a.g_vfinal)
    for (int64_t j = 0; j < width; ++j) carry[j] = a.g_vfinal[b * F + f0 + j];
  if (a.g_out_sum)
    for (int64_t j = 0; j < width; ++j) g_shift[j] = a.g_out_sum[b * F + f0 + j];
  for (int64_t seg = segments - 1; seg >= 0; --seg) {
    const int64_t t0 = seg * K;
    const int len = steps - t0 < K ? static_cast<int>(steps - t0) : K;
    const A* ckpt = a.ckpt + (b * segments + seg) * F + f0;
    for (int64_t j = 0; j < width; ++j) w[j] = ckpt[j];
    for (int k = 0; k < len; ++k) {
      const T* x = u + a.u.offset(b, t0 + k, f0);
      for (int64_t j = 0; j < width; ++j) {
        const A xj = static_cast<A>(x[j * a.u.sf]), w_prev = w[j];
        cells[j].recompute(w[j], xj, v[k * width + j], gate[k * width + j]);
        d_alpha[k * width + j] = norm_input ? w_prev - xj : w_prev;  // dv_t/dalpha
      }
    }
    if constexpr (C::kSpiking) {
      for (int64_t j = 0; j < width; ++j) {
        A sigma[K] = {};
        for (int k = 0; k < len; ++k) sigma[k] = v[k * width + j];
        surrogate_grads<K>(sigma, cells[j].theta, a.surrogate);
        for (int k = 0; k < len; ++k) v[k * width + j] = sigma[k];
      }
    }
    for (int k = len - 1; k >= 0; --k) {
      const int64_t t = t0 + k;
      const T* g_y = g_out + a.g_out.offset(b, t, f0);
      T* g = g_u + (b * steps + t) * F + f0;
      for (int64_t j = 0; j < width; ++j) {
        const C& c = cells[j];
        const A gy = static_cast<A>(g_y[j * a.g_out.sf]) + g_shift[j];
        const A gv = c.grad_v(v[k * width + j], gy, carry[j], gate[k * width + j]);
        g[j] = static_cast<T>(c.in_scale * gv);
        if (alpha_grad) g_alpha[j] += gv * d_alpha[k * width + j];
        carry[j] = c.alpha * gv;
      }
    }
  }
  for (int64_t j = 0; j < width; ++j) {
    const int64_t n = b * F + f0 + j;
    a.g_v0[n] = carry[j];
    if (alpha_grad) a.g_alpha[n] = g_alpha[j];
  }
}

}  // namespace

template <typename A>
void CpuBackend::run(const MembraneForwardArgs<A>& a) {
  with_storage_type<A>(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (a.v_pre == nullptr && a.w_rec == nullptr) {
      with_cell_type(a.p, [&](auto* cell) {
        using C = std::remove_pointer_t<decltype(cell)>;
        for_each_block(a, [&](int64_t b, int64_t f0, int64_t f1) { membrane_forward_cells<T, C>(a, b, f0, f1); });
      });
    } else {
      for_each_block(a, [&](int64_t b, int64_t f0, int64_t f1) { membrane_forward_block<T, A>(a, b, f0, f1); });
    }
  });
}

template <typename A>
void CpuBackend::run(const MembraneBackwardArgs<A>& a) {
  with_storage_type<A>(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (a.g_wrec == nullptr && (a.surrogate.kind != SurrogateKind::Given || a.p.spike == SpikeKind::None)) {
      with_cell_type(a.p, [&](auto* cell) {
        using C = std::remove_pointer_t<decltype(cell)>;
        for_each_block(a, [&](int64_t b, int64_t f0, int64_t f1) { membrane_backward_cells<T, C>(a, b, f0, f1); });
      });
    } else {
      for_each_block(a, [&](int64_t b, int64_t f0, int64_t f1) { membrane_backward_block<T, A>(a, b, f0, f1); });
    }
  });
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
