// Fast CUDA membrane kernels for float32 data without extras (no recorded states, surrogate
// computed in the kernel): the common training case. Everything else runs the general kernels of
// cuda_kernels.cu.
//
// One thread per neuron, as there. What differs:
// - options are compile-time (Cell, neuron_cell.h): no per-step branches on them;
// - the loads of upcoming time steps go through a per-thread ring in shared memory filled by
//   cp.async, `stages` chunks of kCheckpointSteps steps deep. Loads stay in flight without
//   holding registers, so occupancy stays high on large layers and the ring can be deep on small
//   ones (few threads per multiprocessor, each needing many loads in flight). Each thread copies
//   and reads only its own slots, so waiting for its own copies is all the synchronisation needed;
// - backward keeps, from its recomputation of a segment, the membrane, the previous state and
//   the gate of every step, so the reverse walk recomputes nothing.
#include <type_traits>

#include "cuda_kernels.h"
#include "neuron_cell.h"

namespace exodus {
namespace {

constexpr int K = kCheckpointSteps;
constexpr int kBlock = 64;      // threads per block: small blocks spread small layers over all SMs
constexpr int kMaxStages = 8;

// 4-byte asynchronous copy global -> shared (sm_80+); older GPUs copy synchronously. dst is
// both the generic pointer and its shared-window address (computed once per thread).
__device__ __forceinline__ void copy_async(float* dst, unsigned dst_shared, const float* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst_shared), "l"(src) : "memory");
#else
  *dst = *src;
#endif
}

__device__ __forceinline__ void commit_copies() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until all but the newest `pending` groups of this thread's copies have landed.
template <int N>
__device__ __forceinline__ void wait_copies_n() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

__device__ __forceinline__ void wait_copies(int pending) {
  switch (pending) {  // the count must be an immediate; `stages` is uniform, so no divergence
    case 1: wait_copies_n<1>(); break;
    case 2: wait_copies_n<2>(); break;
    case 3: wait_copies_n<3>(); break;
    case 4: wait_copies_n<4>(); break;
    case 5: wait_copies_n<5>(); break;
    case 6: wait_copies_n<6>(); break;
    case 7: wait_copies_n<7>(); break;
    default: wait_copies_n<0>(); break;
  }
}

__device__ __forceinline__ int next_stage(int stage, int stages) { return stage + 1 == stages ? 0 : stage + 1; }

// This thread's ring: slot (stage, i) of `Slots` per stage; neighbouring threads' slots are
// neighbouring words, so a warp's accesses are free of bank conflicts.
template <int Slots>
struct Ring {
  float* mine;
  unsigned mine_shared;  // the same address in the shared window, for cp.async
  __device__ explicit Ring(float* shared)
      : mine(shared + threadIdx.x), mine_shared(static_cast<unsigned>(__cvta_generic_to_shared(shared + threadIdx.x))) {}
  __device__ float* at(int stage, int i) const { return mine + (stage * Slots + i) * kBlock; }
  // copies src into slot (stage, i)
  __device__ void fill(int stage, int i, const float* src) const {
    const int offset = (stage * Slots + i) * kBlock;
    copy_async(mine + offset, mine_shared + offset * static_cast<unsigned>(sizeof(float)), src);
  }
};

template <class C>
__global__ void __launch_bounds__(kBlock, 24) membrane_forward_fast(const MembraneForwardArgs<float> a, int stages) {
  extern __shared__ float shared[];
  const int64_t n = blockIdx.x * static_cast<int64_t>(kBlock) + threadIdx.x;
  if (n >= a.shape.neurons()) return;
  const int64_t steps = a.shape.time, chunks = (steps + K - 1) / K;
  const int F = static_cast<int>(a.shape.features), su = static_cast<int>(a.u.st);
  const int64_t b = n / F, f = n % F;
  const C cell(a.p, f);
  const Ring<K> ring(shared);
  const float* u = static_cast<const float*>(a.u.data) + a.u.offset(b, 0, f);
  float* out = static_cast<float*>(a.out) + b * steps * F + f;
  float* ckpt = a.ckpt ? a.ckpt + b * chunks * F + f : nullptr;

  auto issue = [&](int64_t c, int stage) {  // chunk c's inputs into a ring stage
    if (c < chunks) {
      const float* src = u + c * K * su;
      if (steps - c * K >= K) {
        EXODUS_UNROLL
        for (int k = 0; k < K; ++k) ring.fill(stage, k, src + k * su);
      } else {
        for (int k = 0; k < steps - c * K; ++k) ring.fill(stage, k, src + k * su);
      }
    }
    commit_copies();  // an empty group for chunks past the end keeps the counting uniform
  };
  for (int s = 0; s + 1 < stages; ++s) issue(s, s);

  float w = a.v0[n], out_sum = 0.f;
  int stage = 0, load_stage = stages - 1;
  for (int64_t c = 0; c < chunks; ++c) {
    issue(c + stages - 1, load_stage);
    load_stage = next_stage(load_stage, stages);
    wait_copies(stages - 1);
    if (ckpt) {
      *ckpt = w;
      ckpt += F;
    }
    float* o = out + c * K * F;
    if (steps - c * K >= K) {
      EXODUS_UNROLL
      for (int k = 0; k < K; ++k) {
        const float y = cell.step(w, *ring.at(stage, k));
        o[k * F] = y;
        out_sum += y;
      }
    } else {
      const int len = static_cast<int>(steps - c * K);
      for (int k = 0; k < len; ++k) {
        const float y = cell.step(w, *ring.at(stage, k));
        o[k * F] = y;
        out_sum += y;
      }
    }
    stage = next_stage(stage, stages);
  }
  a.v_final[n] = w;
  if (a.out_sum) a.out_sum[n] = out_sum;
}

// Slots per backward stage: the segment's inputs, its output gradients and its checkpoint.
constexpr int kBackwardSlots = 2 * K + 1;

template <class C>
__global__ void __launch_bounds__(kBlock, 16) membrane_backward_fast(const MembraneBackwardArgs<float> a, int stages) {
  extern __shared__ float shared[];
  const int64_t n = blockIdx.x * static_cast<int64_t>(kBlock) + threadIdx.x;
  if (n >= a.shape.neurons()) return;
  const int64_t steps = a.shape.time, segments = (steps + K - 1) / K;
  const int F = static_cast<int>(a.shape.features), su = static_cast<int>(a.u.st), sg = static_cast<int>(a.g_out.st);
  const int64_t b = n / F, f = n % F;
  const C cell(a.p, f);
  const Ring<kBackwardSlots> ring(shared);
  const float* u = static_cast<const float*>(a.u.data) + a.u.offset(b, 0, f);
  const float* g_out = static_cast<const float*>(a.g_out.data) + a.g_out.offset(b, 0, f);
  const float* ckpt = a.ckpt + b * segments * F + f;
  float* g_u = static_cast<float*>(a.g_u) + b * steps * F + f;
  const bool alpha_grad = a.g_alpha != nullptr, norm_input = a.p.norm_input;

  auto issue = [&](int64_t seg, int stage) {
    if (seg >= 0) {
      const float* x = u + seg * K * su;
      const float* g = g_out + seg * K * sg;
      if (steps - seg * K >= K) {
        EXODUS_UNROLL
        for (int k = 0; k < K; ++k) {
          ring.fill(stage, k, x + k * su);
          ring.fill(stage, K + k, g + k * sg);
        }
      } else {
        for (int k = 0; k < steps - seg * K; ++k) {
          ring.fill(stage, k, x + k * su);
          ring.fill(stage, K + k, g + k * sg);
        }
      }
      ring.fill(stage, 2 * K, ckpt + seg * F);
    }
    commit_copies();
  };

  float carry = a.g_vfinal ? a.g_vfinal[n] : 0.f;  // alpha * G_{t+1}, plus the final state's gradient
  const float g_shift = a.g_out_sum ? a.g_out_sum[n] : 0.f;  // out_sum's gradient reaches every step
  float g_alpha = 0.f;
  // One segment: recompute its membrane from the checkpoint, then walk it backwards. What the
  // walk needs besides the membrane stays out of registers: dv_t/dalpha replaces x_t in the ring
  // and the gates are bits.
  auto segment = [&](int64_t seg, int stage, auto partial) {
    constexpr bool kPartial = decltype(partial)::value;
    const int len = kPartial ? static_cast<int>(steps - seg * K) : K;
    float v[K];
    unsigned gates = 0;
    float w = *ring.at(stage, 2 * K);
    EXODUS_UNROLL
    for (int k = 0; k < K; ++k) {
      if (kPartial && k >= len) {
        v[k] = 0.f;  // the surrogate of a step past the end is never used
        continue;
      }
      float* x = ring.at(stage, k);
      const float w_prev = w;
      float gate = 1.f;
      cell.recompute(w, *x, v[k], gate);
      if (C::kGated && gate != 0.f) gates |= 1u << k;
      if (alpha_grad) *x = norm_input ? w_prev - *x : w_prev;  // dv_t/dalpha
    }
    if constexpr (C::kSpiking) surrogate_grads<K>(v, cell.theta, a.surrogate);
    float* gu = g_u + seg * K * F;
    EXODUS_UNROLL
    for (int k = K - 1; k >= 0; --k) {
      if (kPartial && k >= len) continue;
      const float gate = C::kGated ? ((gates >> k) & 1u ? 1.f : 0.f) : 1.f;
      const float gv = cell.grad_v(v[k], *ring.at(stage, K + k) + g_shift, carry, gate);
      gu[k * F] = cell.in_scale * gv;
      if (alpha_grad) g_alpha += gv * *ring.at(stage, k);
      carry = cell.alpha * gv;
    }
  };

  for (int s = 0; s + 1 < stages; ++s) issue(segments - 1 - s, s);
  int stage = 0, load_stage = stages - 1;
  for (int64_t seg = segments - 1; seg >= 0; --seg) {
    issue(seg - (stages - 1), load_stage);
    load_stage = next_stage(load_stage, stages);
    wait_copies(stages - 1);
    if (steps - seg * K < K) segment(seg, stage, std::true_type{});
    else segment(seg, stage, std::false_type{});
    stage = next_stage(stage, stages);
  }
  a.g_v0[n] = carry;
  if (alpha_grad) a.g_alpha[n] = g_alpha;
}

// What a launch needs to know of a device and a kernel, looked up once per device.
struct DeviceLimits {
  int sms = 0, smem = 0, blocks_by_regs = 0;
};

constexpr int kMaxDevices = 64;

template <typename Kernel>
DeviceLimits limits_of(Kernel kernel, DeviceLimits (&cache)[kMaxDevices]) {
  int device = 0;
  cudaGetDevice(&device);
  if (device < 0 || device >= kMaxDevices) return {};
  DeviceLimits& l = cache[device];
  if (l.sms == 0) {
    cudaDeviceGetAttribute(&l.smem, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&l.blocks_by_regs, kernel, kBlock, 0);
    cudaDeviceGetAttribute(&l.sms, cudaDevAttrMultiProcessorCount, device);
  }
  return l;
}

// Ring depth: as deep as shared memory allows for the blocks each multiprocessor will hold, so
// small layers (few threads per SM) get many loads in flight and large ones keep occupancy.
template <typename Kernel>
int pick_stages(Kernel kernel, DeviceLimits (&cache)[kMaxDevices], int64_t neurons, int slots) {
  const DeviceLimits l = limits_of(kernel, cache);
  const int sms = l.sms, smem = l.smem, blocks_by_regs = l.blocks_by_regs;
  if (sms <= 0 || smem <= 0 || blocks_by_regs <= 0) return 2;
  const int64_t blocks = (neurons + kBlock - 1) / kBlock;
  int64_t per_sm = (blocks + sms - 1) / sms;
  if (per_sm > blocks_by_regs) per_sm = blocks_by_regs;
  const int64_t stage_bytes = int64_t{kBlock} * slots * sizeof(float);
  const int64_t budget = smem - per_sm * 1024;  // the runtime reserves 1 KB per block
  int64_t stages = budget / (per_sm * stage_bytes);
  if (stages > kMaxStages) stages = kMaxStages;
  return stages < 2 ? 2 : static_cast<int>(stages);
}

bool fits_int(int64_t v) { return v >= -2147483647LL && v <= 2147483647LL; }

}  // namespace

bool fast_path(const MembraneForwardArgs<float>& a) {
  return a.dtype == DType::Float32 && a.v_pre == nullptr && a.w_rec == nullptr &&
         fits_int(a.shape.features * K) && fits_int(a.u.st * K);
}

bool fast_path(const MembraneBackwardArgs<float>& a) {
  return a.dtype == DType::Float32 && a.g_wrec == nullptr &&
         (a.surrogate.kind != SurrogateKind::Given || a.p.spike == SpikeKind::None) &&
         fits_int(a.shape.features * K) && fits_int(a.u.st * K) && fits_int(a.g_out.st * K);
}

cudaError_t launch_fast(const MembraneForwardArgs<float>& a, cudaStream_t stream) {
  const int64_t neurons = a.shape.neurons();
  const unsigned blocks = static_cast<unsigned>((neurons + kBlock - 1) / kBlock);
  with_cell_type(a.p, [&](auto* cell) {
    using C = std::remove_pointer_t<decltype(cell)>;
    static DeviceLimits cache[kMaxDevices];
    const int stages = pick_stages(membrane_forward_fast<C>, cache, neurons, K);
    membrane_forward_fast<C><<<blocks, kBlock, stages * K * kBlock * sizeof(float), stream>>>(a, stages);
  });
  return cudaGetLastError();
}

cudaError_t launch_fast(const MembraneBackwardArgs<float>& a, cudaStream_t stream) {
  const int64_t neurons = a.shape.neurons();
  const unsigned blocks = static_cast<unsigned>((neurons + kBlock - 1) / kBlock);
  with_cell_type(a.p, [&](auto* cell) {
    using C = std::remove_pointer_t<decltype(cell)>;
    static DeviceLimits cache[kMaxDevices];
    const int stages = pick_stages(membrane_backward_fast<C>, cache, neurons, kBackwardSlots);
    membrane_backward_fast<C><<<blocks, kBlock, stages * kBackwardSlots * kBlock * sizeof(float), stream>>>(a, stages);
  });
  return cudaGetLastError();
}

}  // namespace exodus
