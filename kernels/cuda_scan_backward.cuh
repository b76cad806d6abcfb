// The fast backward for layers too small to fill the GPU (float32 data): a scan over time instead
// of one thread walking all T steps of its neuron.
//
// The ring kernel (cuda_membrane.cuh) gives each neuron one thread, so at 16x500x512 its 8192
// threads walk 500 dependent steps each and the GPU waits on one warp per scheduler (~84 ns a
// step, 42 us). But the reverse recurrence is affine in the carry H_t (alpha times the next
// step's dL/dv): every cell's grad_v is A_t H_t + B_t with A_t = grad_v(sigma, 0, 1, gate) and
// B_t = grad_v(sigma, g_y, 0, gate) (mul_add(a, 1, 0) == a, so both are the walk's own
// arithmetic). So each neuron's checkpoint segments are split into kScanRanges ranges, one thread
// each:
//   1. each thread recomputes its segments from their checkpoints and composes its range's map
//      H_before = P H_after + Q, latest step first;
//   2. per neuron, one thread runs the maps from the last range (H = the final state's gradient)
//      to the first, leaving each range its incoming carry (and v0's gradient);
//   3. each thread walks its range again with that carry, as the ring kernel's reverse walk does,
//      writing the input gradients and summing alpha's gradient; the ranges' sums are added per
//      neuron in range order, and TauSums as in the ring kernel.
// The carry into a range goes through P and Q, so its rounding differs from the one-thread walk's
// (within float32's relative error over the range: the CUDA-vs-CPU tests' 1e-5).
// With the fused synaptic stage (Syn) the carry is two numbers, alpha G_{t+1} and the current's
// alpha_syn J_{t+1} (synapse_grad), and a range's map is affine in both: the membrane's row as
// above, the current's C_before = P_i H_after + P_ii C_after + Q_i (its P_ii is alpha_syn to the
// range's length; lower triangular, as the current never feeds the membrane's gradient back).
#pragma once

#include <type_traits>

#include "cuda_async.cuh"
#include "cuda_division.cuh"
#include "cuda_kernels.h"
#include "cuda_sums.cuh"
#include "neuron_cell.h"

namespace exodus {
namespace fast {

constexpr int kScanNeurons = kBlock;  // neurons per block: the ring kernel's grid, so TauSums' scratch
                                     // (a pair of partials per blocks_for's block) fits
// segment ranges per neuron: 512 threads a block, so ptxas may take up to 128 registers (at 16
// ranges, 1024 threads and 64 registers, every spiking cell spilled 64-180 bytes)
constexpr int kScanRanges = 8;
constexpr int kScanThreads = kScanNeurons * kScanRanges;

// Where the scan pays: the ring kernel's grid holds at most one block per multiprocessor (each
// thread then walks alone on its scheduler) and the sequence is long enough to split (8
// segments, one per range). Measured on an H100 (kernel_time.py, LIF): 16x500x512 42.6 -> 37.9 us,
// 2x500x512 41.8 -> 19.9, 4x4000x1024 306 -> 213; each thread's 16 segment passes wait on
// memory once each, with 4 warps per scheduler to hide it (predicted 10-20 us at 16x500x512).
// Where the ring kernel has more blocks than SMs, the scan's doubled recomputation loses
// (EXODUS_JIT_KERNELS=scan: 16x500x1024 43.8 -> 70.6 us, 16x4000x1024 310 -> 554).
inline bool scan_suits(int64_t neurons, int64_t steps, int sms) {
  return sms > 0 && blocks_for(neurons) <= sms && steps >= 8 * kCheckpointSteps;
}

template <class C, bool Syn>
__global__ void __launch_bounds__(kScanThreads, 1) membrane_backward_fast_scan(const MembraneBackwardArgs<float> a) {
  constexpr int K = kCheckpointSteps;
  // the ranges' maps (P, then the incoming carry, then with Syn alpha_syn's gradient per range),
  // their Q, and alpha's gradient per range; finish_tau_sums reuses them (kScanThreads + 1 words)
  __shared__ float scan_p[kScanThreads], scan_q[kScanThreads + 1];
  // two stages of each thread's checkpoint (with Syn also the current's) and K inputs, filled by
  // cp.async one segment ahead (the output gradients are read straight: the walk needs them only
  // after the recomputation). 44 KB with Syn, within a launch's 48 KB of static shared memory.
  __shared__ float stage_w[2][kScanThreads], stage_x[2][K][kScanThreads];
  __shared__ float stage_i[Syn ? 2 : 1][Syn ? kScanThreads : 1];
  const int lane = threadIdx.x % kScanNeurons, range = threadIdx.x / kScanNeurons;
  const int64_t n = blockIdx.x * static_cast<int64_t>(kScanNeurons) + lane;
  // no thread returns early: all meet at the barriers below
  const bool live = n < a.shape.neurons();
  const int steps = static_cast<int>(a.shape.time), segments = (steps + K - 1) / K;
  const int F = static_cast<int>(a.shape.features);
  const int per_range = (segments + kScanRanges - 1) / kScanRanges;
  const int first_seg = min(segments, range * per_range), end_seg = min(segments, first_seg + per_range);
  const int64_t b = live ? n / F : 0, f = live ? n % F : 0;
  const C cell(a.p, f);
  const Reciprocal theta_reciprocal(cell.theta);
  const float* u = static_cast<const float*>(a.u.data) + a.u.offset(b, 0, f);
  const float* g_out = static_cast<const float*>(a.g_out.data) + a.g_out.offset(b, 0, f);
  const float* ckpt = a.ckpt + b * segments * F + f;
  [[maybe_unused]] const float* syn_ckpt = Syn ? a.syn.ckpt + b * segments * F + f : nullptr;
  [[maybe_unused]] const float alpha_syn = Syn ? a.syn.alpha.at(f) : 0.f;
  [[maybe_unused]] const bool alpha_syn_grad = Syn && (a.syn.g_alpha != nullptr || a.tau_sums.g_tau_syn != nullptr);
  float* g_u = static_cast<float*>(a.g_u) + b * steps * F + f;
  // strides fit an int (fast_path checks them over kChunk steps): per step an int multiply-add,
  // no 64-bit products
  const int su = static_cast<int>(a.u.st), sg = static_cast<int>(a.g_out.st);
  const float g_shift = live && a.g_out_sum ? a.g_out_sum[n] : 0.f;
  const bool alpha_grad = a.g_alpha != nullptr || a.tau_sums.g_tau != nullptr, norm_input = a.p.norm_input;

  // One segment, recomputed from its checkpoint: the surrogate of each step in sigma (the
  // membrane for non-spiking cells, whose grad_v ignores it), the gates as bits and, with kAlpha
  // (the walk of step 3, where alpha needs a gradient), dv/dalpha per step; then walk(k, gate,
  // output gradient) for its steps, latest first. kWhole: all K steps, as straight-line code
  // (only the sequence's last segment may be shorter). The segment's output gradients are loaded
  // into registers first, all in flight at once: read where the walk needs them, the compiler
  // must order each load after the walk's stores to g_u (which may alias g_out for all it knows),
  // one memory latency per step. The checkpoint and inputs, which the recomputation needs first,
  // come from a stage in shared memory that cp.async filled while the thread computed its
  // previous segment (the first pass's last segment copies the second pass's first), so only the
  // thread's first segment waits a memory latency for them (ncu at 16x500x512: 4.2 of the 11.1
  // cycles per instruction waited on global loads, one latency for each of a thread's 16 segment
  // passes). Each thread copies and reads only its own slots, so waiting for its own copies is all
  // the synchronisation needed; `next` is the segment it takes after this one (-1: none).
  // With Syn the inputs become the membrane's (the current i_t) before the recomputation, and
  // i_{t-1} + x_t (alpha_syn's gradient) waits for the walk in the stage just read (pre_syn),
  // whose slots the next segment's copies take only after the walk.
  float sigma[K], d_alpha[K], x_in[K], g_in[K];
  [[maybe_unused]] float* pre_syn = nullptr;  // step k at pre_syn[k * kScanThreads]
  [[maybe_unused]] bool keep_pre_syn = false;  // in phase 3 only, where alpha_syn needs a gradient
  unsigned gates = 0;
  // phase 1 starts in the stage that leaves it in stage 0 (each segment flips it), whatever the
  // range's length: stage 1 is then free in every thread for phase 2's Syn words (syn_words)
  const int own_segments = live ? end_seg - first_seg : 0;
  int stage = own_segments & 1;
  // this thread's slots' shared-window addresses, once (stage `to` lies a whole stage further)
  const unsigned w_shared = static_cast<unsigned>(__cvta_generic_to_shared(&stage_w[0][threadIdx.x]));
  const unsigned x_shared = static_cast<unsigned>(__cvta_generic_to_shared(&stage_x[0][0][threadIdx.x]));
  [[maybe_unused]] const unsigned i_shared =
      Syn ? static_cast<unsigned>(__cvta_generic_to_shared(&stage_i[0][threadIdx.x])) : 0u;
  auto copy_segment = [&](int seg, int to) {
    const int len = min(K, steps - seg * K);  // only the sequence's last segment is short
    const float* x_seg = u + static_cast<int64_t>(seg) * K * su;
    constexpr unsigned kSlot = sizeof(float) * kScanThreads;  // a step's slots, all threads
    copy_async(&stage_w[to][threadIdx.x], w_shared + to * kSlot, ckpt + static_cast<int64_t>(seg) * F);
    if constexpr (Syn) copy_async(&stage_i[to][threadIdx.x], i_shared + to * kSlot, syn_ckpt + static_cast<int64_t>(seg) * F);
    EXODUS_UNROLL
    for (int k = 0; k < K; ++k) {
      if (k < len) copy_async(&stage_x[to][k][threadIdx.x], x_shared + (to * K + k) * kSlot, x_seg + k * su);
    }
    commit_copies();
  };
  auto segment = [&](int seg, int next, auto whole, auto with_alpha, const auto& walk) {
    constexpr bool kWhole = decltype(whole)::value, kAlpha = decltype(with_alpha)::value;
    const int len = kWhole ? K : steps - seg * K;
    const float* g_seg = g_out + static_cast<int64_t>(seg) * K * sg;
    EXODUS_UNROLL
    for (int k = 0; k < K; ++k) g_in[k] = kWhole || k < len ? g_seg[k * sg] : 0.f;
    if (next >= 0) {
      copy_segment(next, stage ^ 1);
      wait_copies_n<1>();
    } else {
      wait_copies_n<0>();
    }
    const float w0 = stage_w[stage][threadIdx.x];
    EXODUS_UNROLL
    for (int k = 0; k < K; ++k) x_in[k] = kWhole || k < len ? stage_x[stage][k][threadIdx.x] : 0.f;
    if constexpr (Syn) {  // the current, as the forward steps it (synapse_step: the same bits)
      float i = stage_i[stage][threadIdx.x];
      pre_syn = &stage_x[stage][0][threadIdx.x];
      EXODUS_UNROLL
      for (int k = 0; k < K; ++k) {
        if (!kWhole && k >= len) continue;
        const float sum = i + x_in[k];
        x_in[k] = synapse_step(i, x_in[k], alpha_syn);
        if (keep_pre_syn) pre_syn[k * kScanThreads] = sum;
      }
    }
    stage ^= 1;
    auto run = [&](const auto& div) {
      float w = w0;
      gates = 0;
      EXODUS_UNROLL
      for (int k = 0; k < K; ++k) {
        if (!kWhole && k >= len) {
          sigma[k] = 0.f;
          if (kAlpha) d_alpha[k] = 0.f;
          continue;
        }
        const float x = x_in[k];
        const float w_prev = w;
        float gate = 1.f;
        cell.recompute(w, x, sigma[k], gate, div);
        if (C::kGated && gate != 0.f) gates |= 1u << k;
        if (kAlpha) d_alpha[k] = norm_input ? w_prev - x : w_prev;
      }
    };
    bool unsafe = C::kDivides && !theta_reciprocal.theta_ok;
    using Division = std::conditional_t<C::kClips, MaskedReciprocalDivision, ReciprocalDivision>;
    run(Division{theta_reciprocal.y, &unsafe});
    if (C::kDivides && unsafe) run(IeeeDivision{});  // rare: the segment again with IEEE division
    if constexpr (C::kSpiking) surrogate_grads<K>(sigma, cell.theta, a.surrogate);
    EXODUS_UNROLL
    for (int k = K - 1; k >= 0; --k) {
      if (!kWhole && k >= len) continue;
      const float gate = C::kGated ? ((gates >> k) & 1u ? 1.f : 0.f) : 1.f;
      walk(k, gate, g_in[k] + g_shift);
    }
  };
  // the range's segments, latest first, each as whole or partial; `then` is the segment the
  // thread takes after the range's first (phase 1: phase 3's first, copied ahead), or -1
  auto each_segment = [&](auto with_alpha, const auto& walk_of, int then) {
    for (int seg = end_seg - 1; seg >= first_seg; --seg) {
      const int next = seg > first_seg ? seg - 1 : then;
      if (steps - seg * K >= K) segment(seg, next, std::true_type{}, with_alpha, walk_of(seg));
      else segment(seg, next, std::false_type{}, with_alpha, walk_of(seg));
    }
  };

  // 1. this range's map of the carry, latest step first: H_before = p H_after + q; with Syn also
  // the current's row, C_before = p_i H_after + p_ii C_after + q_i (as the walk's synapse_grad
  // composes it: C = alpha_syn (in_scale G + C), G = slope H + offset)
  float p = 1.f, q = 0.f;
  [[maybe_unused]] float p_i = 0.f, p_ii = 1.f, q_i = 0.f;
  if (own_segments > 0) {
    copy_segment(end_seg - 1, stage);
    each_segment(std::false_type{}, [&](int) {
      return [&](int k, float gate, float g_y) {
        const float slope = cell.grad_v(sigma[k], 0.f, 1.f, gate);
        const float offset = cell.grad_v(sigma[k], g_y, 0.f, gate);
        const float g_q = mul_add(slope, q, offset), g_p = slope * p;  // G_t's map
        if constexpr (Syn) {
          p_i = alpha_syn * mul_add(cell.in_scale, g_p, p_i);
          q_i = alpha_syn * mul_add(cell.in_scale, g_q, q_i);
          p_ii = alpha_syn * p_ii;
        }
        q = cell.alpha * g_q;
        p = cell.alpha * g_p;
      };
    }, end_seg - 1);
  }
  scan_p[threadIdx.x] = p;
  scan_q[threadIdx.x] = q;
  // with Syn, the current's row and then its incoming carry: three words per thread in its own
  // slots of stage 1, which phase 1 leaves free (no copy in flight there) and phase 3's first
  // segment fills only after the thread has read its carry
  [[maybe_unused]] float* syn_words = &stage_x[1][0][0];  // word j of thread s at j * kScanThreads + s
  if constexpr (Syn) {
    syn_words[threadIdx.x] = p_i;
    syn_words[kScanThreads + threadIdx.x] = p_ii;
    syn_words[2 * kScanThreads + threadIdx.x] = q_i;
  }
  __syncthreads();

  // 2. per neuron, the carry into each range, from the last range to the first
  if (range == 0 && live) {
    float carry = a.g_vfinal ? a.g_vfinal[n] : 0.f;
    [[maybe_unused]] float carry_i = Syn && a.syn.g_ifinal ? a.syn.g_ifinal[n] : 0.f;
    for (int r = kScanRanges - 1; r >= 0; --r) {
      const int slot = r * kScanNeurons + lane;
      const float p_r = scan_p[slot], q_r = scan_q[slot];
      scan_p[slot] = carry;  // the carry into range r, for its walk
      if constexpr (Syn) {
        const float p_i_r = syn_words[slot], p_ii_r = syn_words[kScanThreads + slot];
        const float q_i_r = syn_words[2 * kScanThreads + slot];
        syn_words[slot] = carry_i;
        carry_i = mul_add(p_i_r, carry, mul_add(p_ii_r, carry_i, q_i_r));
      }
      carry = mul_add(p_r, carry, q_r);
    }
    if (a.g_v0) a.g_v0[n] = carry;
    if constexpr (Syn) {
      if (a.syn.g_i0) a.syn.g_i0[n] = carry_i;
    }
  }
  __syncthreads();

  // 3. the range's walk with its carry: input gradients and alpha's gradient (alpha_syn's too)
  float carry = scan_p[threadIdx.x], g_alpha = 0.f;
  [[maybe_unused]] float syn_carry = Syn ? syn_words[threadIdx.x] : 0.f, g_alpha_syn = 0.f;
  keep_pre_syn = alpha_syn_grad;
  auto walk = [&](auto with_alpha) {
    constexpr bool kAlpha = decltype(with_alpha)::value;
    each_segment(with_alpha, [&](int seg) {
      float* gu = g_u + static_cast<int64_t>(seg) * K * F;
      return [&, gu](int k, float gate, float g_y) {
        const float gv = cell.grad_v(sigma[k], g_y, carry, gate);
        const float g_in = cell.in_scale * gv;
        if constexpr (Syn) {
          const float j = synapse_grad(g_in, syn_carry, alpha_syn);
          gu[k * F] = syn_carry;
          if (alpha_syn_grad) g_alpha_syn = mul_add(j, pre_syn[k * kScanThreads], g_alpha_syn);
        } else {
          gu[k * F] = g_in;
        }
        if (kAlpha) g_alpha = mul_add(gv, d_alpha[k], g_alpha);
        carry = cell.alpha * gv;
      };
    }, -1);
  };
  if (live) {
    if (alpha_grad) walk(std::true_type{});
    else walk(std::false_type{});
  }
  // alpha's (and alpha_syn's) gradient per neuron: the ranges' sums in range order (each thread
  // writes only its own slots, whose carry it has read)
  scan_q[threadIdx.x] = g_alpha;
  if constexpr (Syn) scan_p[threadIdx.x] = g_alpha_syn;
  __syncthreads();
  float neuron_g_alpha = 0.f, neuron_g_alpha_syn = 0.f;
  if (range == 0) {
    for (int r = 0; r < kScanRanges; ++r) neuron_g_alpha += scan_q[r * kScanNeurons + lane];
    if (live && a.g_alpha) a.g_alpha[n] = neuron_g_alpha;
    if constexpr (Syn) {
      for (int r = 0; r < kScanRanges; ++r) neuron_g_alpha_syn += scan_p[r * kScanNeurons + lane];
      if (live && a.syn.g_alpha) a.syn.g_alpha[n] = neuron_g_alpha_syn;
    }
  }
  if (a.tau_sums.present()) {
    __syncthreads();  // scan_q is read: finish_tau_sums takes the shared memory
    // every thread takes part (the barriers), the neurons' values in the first kScanNeurons slots;
    // the others add zeros, so the fixed tree sums as a 64-slot tree would (up to a zero's sign)
    const bool holds = range == 0 && live;
    finish_tau_sums<kScanThreads>(a.tau_sums, holds ? neuron_g_alpha : 0.f, holds ? neuron_g_alpha_syn : 0.f,
                                  a.p.alpha.data, a.syn.alpha.data, scan_q, kScanThreads);
  }
}

// The scan's launch for the cells of spike kind S (as with_cell_type dispatches them), with or
// without the synaptic stage: one block of kScanThreads per kScanNeurons neurons. The instances
// are split over six files (cuda_scan_backward[_syn].cu, _multi.cu, _max.cu: ~15 s each on one
// core here), so that they compile in parallel.
template <SpikeKind S, bool Syn>
cudaError_t launch_backward_scan(const MembraneBackwardArgs<float>& a, cudaStream_t stream) {
  auto launch = [&](auto* cell) {
    using C = std::remove_pointer_t<decltype(cell)>;
    const unsigned blocks = static_cast<unsigned>(blocks_for(a.shape.neurons()));
    membrane_backward_fast_scan<C, Syn><<<blocks, kScanThreads, 0, stream>>>(a);
    return cudaGetLastError();
  };
  auto with_clip = [&](auto reset) {
    constexpr ResetKind R = decltype(reset)::value;
    if (a.p.min_v.present()) return launch(static_cast<Cell<float, S, R, true>*>(nullptr));
    return launch(static_cast<Cell<float, S, R, false>*>(nullptr));
  };
  using Subtract = std::integral_constant<ResetKind, ResetKind::Subtract>;
  if constexpr (S == SpikeKind::None) {
    return with_clip(Subtract{});
  } else {
    if (a.p.reset == ResetKind::Subtract) return with_clip(Subtract{});
    return with_clip(std::integral_constant<ResetKind, ResetKind::ToValue>{});
  }
}

#define EXODUS_SCAN_INSTANCES(EXTERN, S, SYN) \
  EXTERN template cudaError_t launch_backward_scan<S, SYN>(const MembraneBackwardArgs<float>&, cudaStream_t);

}  // namespace fast
}  // namespace exodus
