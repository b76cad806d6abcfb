// Fast CUDA membrane kernels for data without extras (no recorded states, surrogate computed in
// the kernel): the common training case, for float32, float16 and bfloat16 data (one .cu file per
// type, synaptic stage and copy width instantiates them, so they compile in parallel). Everything
// else runs the general kernels of cuda_kernels.cu.
//
// One thread per neuron, as there. What differs:
// - options are compile-time (Cell, neuron_cell.h): no per-step branches on them;
// - the loads of upcoming time steps go through a ring in shared memory filled by cp.async,
//   `stages` chunks deep (a chunk: one or two checkpoint segments of kCheckpointSteps steps).
//   Loads stay in flight without holding registers, so occupancy stays high on large layers and
//   the ring can be deep on small ones (few threads per multiprocessor, each needing many loads
//   in flight). Where every row of a warp's data is 16-byte aligned (features a multiple of 32,
//   contiguous: the common case; the Wide instances) the lanes of a warp copy 16 bytes each (four
//   or eight neighbouring neurons of one step) and meet at __syncwarp before reading and
//   refilling; their outputs take the way back: each thread writes its own over its input's
//   slot, and the lanes store 16-byte pieces of the warp's outputs after meeting at __syncwarp.
//   Else 4-byte data is copied and read by each thread for its own slots only, so waiting for its
//   own copies is all the synchronisation needed, and 2-byte data 4 bytes (two neighbouring
//   neurons) at a time by the lanes of a warp together, which meet at __syncwarp as wide copies do;
// - the synaptic stage (sinabs' tau_syn, SynapseForward) is fused in when present (Syn): the
//   current is one more register and one more checkpoint, so it never goes through memory;
// - backward keeps, from its recomputation of a segment, the membrane, dv/dalpha and the gate of
//   every step, so the reverse walk recomputes nothing;
// - the spike count divides by the threshold through its reciprocal (cuda_division.cuh): no
//   branch per step, so a chunk of K steps is one block of straight-line code; the rare chunk
//   whose membrane leaves the range where that is exact runs again with IEEE division.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "cuda_async.cuh"
#include "cuda_division.cuh"
#include "cuda_kernels.h"
#include "cuda_sums.cuh"
#include "neuron_cell.h"

namespace exodus {
namespace fast {

constexpr int K = kCheckpointSteps;
constexpr int kChunk = 2 * K;   // forward steps per ring stage: two checkpoint segments, so the
                                // per-chunk work (copies, waits, stores) is spread over 16 steps
constexpr int kMaxStages = 8;
constexpr int kMaxLaunchSharedBytes = 48 * 1024;

__device__ __forceinline__ int next_stage(int stage, int stages) { return stage + 1 == stages ? 0 : stage + 1; }

// Wide copies (rows of a warp's neurons 16-byte aligned, whole warps): lane l copies 16 bytes,
// its warp's neurons c n .. c n + n - 1 (n = kPerCopy = 16 / sizeof(T), c = l % kPerStep), of
// the steps first, first + kApart, ... (first = l / kPerStep). Computed where used, not held in
// registers.
template <typename T>
struct WideCopy {
  static constexpr int kPerCopy = 16 / sizeof(T), kPerStep = 32 / kPerCopy, kApart = 32 / kPerStep;
  static_assert(K % kApart == 0, "whole passes over a chunk's steps");
  __device__ static int lane() { return threadIdx.x & 31; }
  __device__ static int first() { return lane() / kPerStep; }
  // elements from this thread's own element (step 0) to its first copy's, rows `stride` apart
  __device__ static int lead(int stride) { return (lane() % kPerStep) * kPerCopy - lane() + first() * stride; }
  // the same, computed anew where it is needed: not hoisted into a register kept across a loop
  __device__ static int lead_here(int stride) {
    int lane;
    asm volatile("mov.u32 %0, %%laneid;" : "=r"(lane));
    return (lane % kPerStep) * kPerCopy - lane + lane / kPerStep * stride;
  }
};

// A ring of `Slots` time steps per stage of every thread's value of type T: slot (stage, i) of a
// thread; neighbouring threads' slots are neighbouring elements, so a warp's accesses are free of
// bank conflicts.
template <typename T, int Slots>
struct Ring {
  static_assert(sizeof(T) == 4 || sizeof(T) == 2, "4- or 2-byte data");
  static constexpr bool kShared = sizeof(T) == 2;  // a warp fills its lanes' slots together
  T* mine;
  unsigned mine_shared;  // the same address in the shared window, for cp.async
  unsigned wide_shared;  // where this thread's wide copies start (unused by narrow instances)
  __device__ explicit Ring(T* base)
      : mine(base + threadIdx.x),
        mine_shared(static_cast<unsigned>(__cvta_generic_to_shared(base + threadIdx.x))),
        wide_shared(mine_shared + WideCopy<T>::lead(kBlock) * static_cast<unsigned>(sizeof(T))) {}
  __device__ T* at(int stage, int i) const { return mine + (stage * Slots + i) * kBlock; }

  // Slots i .. i + len - 1 of a stage <- steps 0 .. len - 1 of src (this thread's neuron, step
  // stride `stride`; with kWide, the source of its wide copies, WideCopy::lead further); all K
  // steps when kWhole. 2-byte data without kWide: lane l copies 4 bytes, the neuron pair
  // (2 (l % 16), 2 (l % 16) + 1) of its warp, for the steps of parity l / 16.
  template <bool kWhole, bool kWide>
  __device__ void fill(int stage, int i, const T* src, int stride, int len) const {
    const int offset = (stage * Slots + i) * kBlock;
    if constexpr (kWide) {
      using W = WideCopy<T>;
      EXODUS_UNROLL
      for (int j = 0; j < K / W::kApart; ++j)
        if (kWhole || W::first() + j * W::kApart < len)
          copy_async16(wide_shared + (offset + j * W::kApart * kBlock) * static_cast<unsigned>(sizeof(T)),
                       src + j * W::kApart * stride);
    } else if constexpr (!kShared) {
      EXODUS_UNROLL
      for (int k = 0; k < K; ++k)
        if (kWhole || k < len)
          copy_async(mine + offset + k * kBlock, mine_shared + (offset + k * kBlock) * 4u, src + k * stride);
    } else {
      const int lane = threadIdx.x & 31, parity = lane >> 4, pair = 2 * (lane & 15);
      const int shift = pair - lane;  // from this thread's element to its warp's pair
      const T* from = src + shift + parity * stride;
      EXODUS_UNROLL
      for (int k = parity; k < K; k += 2)
        if (kWhole || k < len)
          copy_async(mine + offset + k * kBlock + shift, mine_shared + (offset + k * kBlock + shift) * 2u,
                     from + (k - parity) * stride);
    }
  }
  // Wide only, the reverse of fill: steps 0 .. len - 1 of dst (this thread's wide source, as
  // fill's src; step stride `stride`) <- slots i .. i + len - 1 of a stage, 16 bytes per lane,
  // once every lane has written its own slots and met the others at sync.
  template <bool kWhole>
  __device__ void drain(int stage, int i, T* dst, int stride, int len) const {
    using W = WideCopy<T>;
    const int offset = (stage * Slots + i) * kBlock;
    EXODUS_UNROLL
    for (int j = 0; j < K / W::kApart; ++j)
      if (kWhole || W::first() + j * W::kApart < len)
        *reinterpret_cast<uint4*>(dst + j * W::kApart * stride) =
            load_shared16(wide_shared + (offset + j * W::kApart * kBlock) * static_cast<unsigned>(sizeof(T)));
  }
  // Before reading what other lanes copied, and before refilling what they read.
  template <bool kWide>
  __device__ static void sync() {
    if constexpr (kShared || kWide) __syncwarp();
  }
};

// Blocks per multiprocessor the register caps allow (launch bounds): forward 16 (64 registers:
// at 48 ptxas issued each step's shared-memory load two instructions before its use, so the
// load's latency sat on the step's chain; kernel A/B, NOTES version 40: -14% at 16x4000x1024,
// -2% at 16x500x16384), with the synaptic stage 20 (48), 18 (56) with 16-byte copies; backward
// 16 (64). The backward with the synaptic stage, clipping (min_v),
// 2-byte data (its cooperative copies) or 16-byte stores needs a few more registers, or ptxas
// spills: at 64 registers 4-16 bytes per thread with clipping, 16-20 with bfloat16, on the
// reverse walk's path. (20 blocks allow 48 registers, 21 only 40: ptxas keeps a few back and
// rounds down to a multiple of 8.)
template <bool Syn, bool Wide>
constexpr int forward_blocks_per_sm() { return Syn && Wide ? 18 : Syn ? 20 : 16; }
template <bool Syn, bool Clip, typename T, bool Wide>
constexpr int backward_blocks_per_sm() { return Syn ? 12 : Clip || sizeof(T) == 2 || Wide ? 14 : 16; }

// Whether a neuron's steps take PowerOfTwoDivision (cuda_division.cuh): a dividing spike count,
// a threshold 2^k in range and, with a subtracting reset, a subtract value it accepts. Decided
// per thread; a warp whose neurons differ runs both forms, each with its own neurons' bits.
template <class C>
__device__ bool power_of_two_division(const C& cell, const Reciprocal& theta_reciprocal) {
  return C::kDivides && theta_reciprocal.power_of_two && (!C::kSubtracts || exact_subtract(cell.subtract));
}

// Where the steps take PowerOfTwoDivision when the threshold allows it, by kernel A/B (NOTES,
// version 41): the float32 forward (-3% at 16x4000x1024) and the backward of 2-byte data without
// clipping (bfloat16 -4 to -6% at 16x500x16384, issue-bound; +4% at the latency-bound sizes).
// Elsewhere the second form cost: the 2-byte forward +4% at 16x4000x1024, the float32 backward
// 1-2% at the latency-bound sizes, and 13-16% with clipping (there in a masked form, since dropped).
template <typename T>
__host__ __device__ constexpr bool forward_power_of_two() { return sizeof(T) == 4; }
template <class C, typename T>
__host__ __device__ constexpr bool backward_power_of_two() { return sizeof(T) == 2 && !C::kClips; }

template <class C, typename T, bool Syn, bool Wide>
__global__ void __launch_bounds__(kBlock, forward_blocks_per_sm<Syn, Wide>()) membrane_forward_fast(const MembraneForwardArgs<float> a, int stages) {
  extern __shared__ __align__(16) unsigned char shared[];
  const int64_t n = blockIdx.x * static_cast<int64_t>(kBlock) + threadIdx.x;
  if (n == 0 && a.tau_sums_counter) *a.tau_sums_counter = 0;  // for the backward (TauSums)
  if (n >= a.shape.neurons()) return;  // whole warps with 2-byte data or Wide (F % 32 == 0)
  // steps fit an int (fast_path), and kChunk steps of any row an int offset
  const int steps = static_cast<int>(a.shape.time), chunks = (steps + kChunk - 1) / kChunk;
  const int last_len = steps - (chunks - 1) * kChunk;  // steps of the last chunk, 1 .. kChunk
  const int F = static_cast<int>(a.shape.features), su = static_cast<int>(a.u.st);
  const int64_t b = n / F, f = n % F;
  const C cell(a.p, f);
  const Reciprocal theta_reciprocal(cell.theta);
  const bool power_of_two = forward_power_of_two<T>() && power_of_two_division(cell, theta_reciprocal);
  using Data = Ring<T, kChunk>;
  const Data ring(reinterpret_cast<T*>(shared));
  // this thread's input; with Wide, where its copies start
  const T* u = static_cast<const T*>(a.u.data) + a.u.offset(b, 0, f) + (Wide ? WideCopy<T>::lead(su) : 0);
  // this thread's output; with Wide, where its stores start: outputs go through the ring (each
  // thread's over its input once read), and the lanes store 16 bytes each, as they copied
  T* out = static_cast<T*>(a.out) + b * steps * F + f + (Wide ? WideCopy<T>::lead(F) : 0);
  const int segments = (steps + K - 1) / K;  // checkpoints per row
  float* ckpt = a.ckpt ? a.ckpt + b * segments * F + f : nullptr;
  float* syn_ckpt = Syn && a.ckpt ? a.syn.ckpt + b * segments * F + f : nullptr;
  const float alpha_syn = Syn ? a.syn.alpha.at(f) : 0.f;
  float i = Syn ? a.syn.i0[n] : 0.f;
  // the membrane's input of a step: the data, or the synaptic current it drives
  auto input = [&](float x) { return Syn ? synapse_step(i, x, alpha_syn) : x; };
  // the state before step k of the chunk, when k starts a checkpoint segment
  auto checkpoint = [&](int k, float w) {
    if (ckpt) {
      ckpt[k / K * F] = w;
      if constexpr (Syn) syn_ckpt[k / K * F] = i;
    }
  };

  // Pointers walk the chunks and counters are ints: per chunk a few adds, no 64-bit products.
  const T* next = u;  // the first step of the next chunk to copy in
  int to_copy = chunks;
  auto issue = [&](int stage) {  // the next chunk's inputs into a ring stage, K steps per fill
    if (to_copy > 0) {
      if (to_copy > 1 || last_len == kChunk) {
        ring.template fill<true, Wide>(stage, 0, next, su, K);
        ring.template fill<true, Wide>(stage, K, next + K * su, su, K);
      } else {
        ring.template fill<false, Wide>(stage, 0, next, su, last_len);
        if (last_len > K) ring.template fill<false, Wide>(stage, K, next + K * su, su, last_len - K);
      }
      next += kChunk * su;
      --to_copy;
    }
    commit_copies();  // an empty group for chunks past the end keeps the counting uniform
  };
  for (int s = 0; s + 1 < stages; ++s) issue(s);

  float w = a.v0[n], out_sum = 0.f;
  int stage = 0, load_stage = stages - 1;
  for (int c = 0; c < chunks; ++c, out += kChunk * F) {
    issue(load_stage);
    load_stage = next_stage(load_stage, stages);
    wait_copies(stages - 1);
    Data::template sync<Wide>();
    checkpoint(0, w);
    const bool whole = c + 1 < chunks || last_len == kChunk;
    const int len = whole ? kChunk : last_len;
    // the chunk's steps (all kChunk when kWhole, as straight-line code), dividing with div, the
    // input of step k from load(k); the second segment's checkpoint on the way
    auto run = [&](auto kWhole, const auto& div, const auto& load) {
      EXODUS_UNROLL
      for (int k = 0; k < kChunk; ++k) {
        if (!decltype(kWhole)::value && k >= len) break;
        if (k == K) checkpoint(K, w);
        const float y = cell.step(w, input(load(k)), div);
        if constexpr (Wide) *ring.at(stage, k) = static_cast<T>(y);
        else out[k * F] = static_cast<T>(y);
        out_sum += y;
      }
    };
    auto from_ring = [&](int k) { return static_cast<float>(*ring.at(stage, k)); };
    const float w_start = w, sum_start = out_sum, i_start = i;
    bool unsafe = C::kDivides && !theta_reciprocal.theta_ok;
    auto run_all = [&](const auto& div) {
      if (whole) run(std::true_type{}, div, from_ring);
      else run(std::false_type{}, div, from_ring);
    };
    if (power_of_two) run_all(PowerOfTwoDivision{theta_reciprocal.y, &unsafe});
    else run_all(ReciprocalDivision{theta_reciprocal.y, &unsafe});
    if (C::kDivides && unsafe) {  // rare: the chunk again with IEEE division, rewriting its outputs
      w = w_start;
      out_sum = sum_start;
      if constexpr (Syn) i = i_start;
      if constexpr (Wide) {  // the ring holds outputs by now: the inputs from global memory
        const T* own = u - WideCopy<T>::lead_here(su) + static_cast<int64_t>(c) * kChunk * su;
        run(std::false_type{}, IeeeDivision{}, [&](int k) { return static_cast<float>(own[k * su]); });
      } else {
        run(std::false_type{}, IeeeDivision{}, from_ring);
      }
    }
    Data::template sync<Wide>();
    if constexpr (Wide) {  // the chunk's outputs, from the ring
      if (whole) {
        ring.template drain<true>(stage, 0, out, F, K);
        ring.template drain<true>(stage, K, out + K * F, F, K);
      } else {
        ring.template drain<false>(stage, 0, out, F, len);
        if (len > K) ring.template drain<false>(stage, K, out + K * F, F, len - K);
      }
      Data::template sync<Wide>();
    }
    if (ckpt) {
      ckpt += 2 * F;
      if constexpr (Syn) syn_ckpt += 2 * F;
    }
    stage = next_stage(stage, stages);
  }
  a.v_final[n] = w;
  if (a.out_sum) a.out_sum[n] = out_sum;
  if (a.v_zero) a.v_zero[n] = 0.0f;
  if constexpr (Syn) {
    a.syn.i_final[n] = i;
    if (a.syn.i_zero) a.syn.i_zero[n] = 0.0f;
  }
}

// Backward ring stages hold S checkpoint segments (S K steps), walked later one first, so a
// stage's copies, wait and synchronisations serve all of them. Kernel A/B (benchmarks/NOTES.md,
// versions 38-39): two for 2-byte data and for clipping cells, one for the other float32 cells.
template <class C, typename T>
__host__ __device__ constexpr int backward_segments() { return sizeof(T) == 2 || C::kClips ? 2 : 1; }
// Shared memory of a backward block: per stage its segments' checkpoints (float: the membrane's in
// slots 0 .. S - 1, the current's after them with Syn) and their inputs and output gradients (T,
// 2 S K slots). Scratch, K steps each (one segment at a time): for 2-byte data dv/dalpha (with
// 4-byte data it replaces the input in the ring), with Syn i_{t-1} + x_t.
template <int S, bool Syn>
__host__ __device__ constexpr int checkpoint_slots() { return (Syn ? 2 : 1) * S; }
template <typename T>
__host__ __device__ constexpr int d_alpha_slots() { return sizeof(T) == 4 ? 0 : K; }
template <typename T, bool Syn>
__host__ __device__ constexpr int scratch_slots() { return d_alpha_slots<T>() + (Syn ? K : 0); }

template <typename T, bool Syn, int S>
__host__ __device__ constexpr int backward_float_words(int stages) {
  return (stages * checkpoint_slots<S, Syn>() + scratch_slots<T, Syn>()) * kBlock;
}

template <class C, typename T, bool Syn, bool Wide>
__global__ void __launch_bounds__(kBlock, backward_blocks_per_sm<Syn, C::kClips, T, Wide>()) membrane_backward_fast(const MembraneBackwardArgs<float> a, int stages) {
  extern __shared__ __align__(16) unsigned char shared[];
  const int64_t n = blockIdx.x * static_cast<int64_t>(kBlock) + threadIdx.x;
  if (n >= a.shape.neurons()) return;  // whole warps with 2-byte data or Wide (F % 32 == 0)
  // steps fit an int (fast_path); offsets that multiply a stride by a step or segment are 64-bit
  const int steps = static_cast<int>(a.shape.time), segments = (steps + K - 1) / K;
  const int F = static_cast<int>(a.shape.features), su = static_cast<int>(a.u.st), sg = static_cast<int>(a.g_out.st);
  const int64_t b = n / F, f = n % F;
  const C cell(a.p, f);
  const Reciprocal theta_reciprocal(cell.theta);
  const bool power_of_two = backward_power_of_two<C, T>() && power_of_two_division(cell, theta_reciprocal);
  constexpr int S = backward_segments<C, T>(), kSteps = S * K;  // per ring stage
  static_assert(kSteps <= kChunk, "fast_path checks int offsets over kChunk steps");
  float* floats = reinterpret_cast<float*>(shared);
  const Ring<float, checkpoint_slots<S, Syn>()> checkpoints(floats);
  float* scratch = floats + stages * checkpoint_slots<S, Syn>() * kBlock + threadIdx.x;
  float* pre_syn = scratch + d_alpha_slots<T>() * kBlock;  // Syn: i_{t-1} + x_t of step k at k * kBlock
  using Data = Ring<T, 2 * kSteps>;
  const Data ring(reinterpret_cast<T*>(floats + backward_float_words<T, Syn, S>(stages)));
  // this thread's input and output gradient; with Wide, where its copies start
  const T* u = static_cast<const T*>(a.u.data) + a.u.offset(b, 0, f) + (Wide ? WideCopy<T>::lead(su) : 0);
  const T* g_out = static_cast<const T*>(a.g_out.data) + a.g_out.offset(b, 0, f) + (Wide ? WideCopy<T>::lead(sg) : 0);
  const float* ckpt = a.ckpt + b * segments * F + f;
  const float* syn_ckpt = Syn ? a.syn.ckpt + b * segments * F + f : nullptr;
  const float alpha_syn = Syn ? a.syn.alpha.at(f) : 0.f;
  const bool alpha_syn_grad = Syn && (a.syn.g_alpha != nullptr || a.tau_sums.g_tau_syn != nullptr);
  float syn_carry = Syn && a.syn.g_ifinal ? a.syn.g_ifinal[n] : 0.f;  // alpha_syn J_{t+1}
  float g_alpha_syn = 0.f;
  // this thread's input gradient; with Wide, where its stores start (through the ring, over the
  // output gradient once read, as in the forward)
  T* g_u = static_cast<T*>(a.g_u) + b * steps * F + f + (Wide ? WideCopy<T>::lead(F) : 0);
  const bool alpha_grad = a.g_alpha != nullptr || a.tau_sums.g_tau != nullptr, norm_input = a.p.norm_input;

  // chunk c into a ring stage: its segments c S + j that exist, inputs at slot j K, output
  // gradients at kSteps + j K, checkpoints at j (the current's at S + j)
  auto issue = [&](int c, int stage) {
    if (c >= 0) {
      const int64_t first = static_cast<int64_t>(c) * kSteps;
      const T* x = u + first * su;
      const T* g = g_out + first * sg;
      const int left = steps - c * kSteps;
      EXODUS_UNROLL
      for (int j = 0; j < S; ++j) {
        const int len = left - j * K;
        if (len >= K) {
          ring.template fill<true, Wide>(stage, j * K, x + j * K * su, su, K);
          ring.template fill<true, Wide>(stage, kSteps + j * K, g + j * K * sg, sg, K);
        } else if (len > 0) {
          ring.template fill<false, Wide>(stage, j * K, x + j * K * su, su, len);
          ring.template fill<false, Wide>(stage, kSteps + j * K, g + j * K * sg, sg, len);
        }
        if (len > 0) {
          const int64_t at = (static_cast<int64_t>(c) * S + j) * F;
          checkpoints.template fill<false, false>(stage, j, ckpt + at, 0, 1);
          if constexpr (Syn) checkpoints.template fill<false, false>(stage, S + j, syn_ckpt + at, 0, 1);
        }
      }
    }
    commit_copies();
  };
  // where dv_t/dalpha of step k of a segment (its inputs at ring slot x_at) waits for the walk
  auto d_alpha = [&](int stage, int x_at, int k) -> float* {
    if constexpr (sizeof(T) == 4) return reinterpret_cast<float*>(ring.at(stage, x_at + k));
    else return scratch + k * kBlock;
  };

  float carry = a.g_vfinal ? a.g_vfinal[n] : 0.f;  // alpha * G_{t+1}, plus the final state's gradient
  const float g_shift = a.g_out_sum ? a.g_out_sum[n] : 0.f;  // out_sum's gradient reaches every step
  float g_alpha = 0.f;
  // One segment: recompute its membrane from the checkpoint, then walk it backwards. What the
  // walk needs besides the membrane stays out of registers: dv_t/dalpha replaces x_t in the ring
  // and the gates are bits.
  // j: the segment's place in its chunk
  auto segment = [&](int seg, int stage, int j, auto partial) {
    constexpr bool kPartial = decltype(partial)::value;
    const int len = kPartial ? steps - seg * K : K;
    const int x_at = j * K, g_at = kSteps + j * K;
    float v[K];
    unsigned gates = 0;
    // with div; x_t from load(k): the ring, or global memory for the rerun (dv/dalpha has
    // replaced the ring's inputs by then)
    auto recompute = [&](const auto& div, const auto& load) {
      float w = *checkpoints.at(stage, j);
      [[maybe_unused]] float i = Syn ? *checkpoints.at(stage, S + j) : 0.f;  // the current, with Syn
      gates = 0;
      EXODUS_UNROLL
      for (int k = 0; k < K; ++k) {
        if (kPartial && k >= len) {
          v[k] = 0.f;  // the surrogate of a step past the end is never used
          continue;
        }
        float x = load(k);
        if constexpr (Syn) {
          if (alpha_syn_grad) pre_syn[k * kBlock] = i + x;
          x = synapse_step(i, x, alpha_syn);
        }
        const float w_prev = w;
        float gate = 1.f;
        cell.recompute(w, x, v[k], gate, div);
        if (C::kGated && gate != 0.f) gates |= 1u << k;
        if (alpha_grad) *d_alpha(stage, x_at, k) = norm_input ? w_prev - x : w_prev;  // dv_t/dalpha
      }
    };
    bool unsafe = C::kDivides && !theta_reciprocal.theta_ok;
    // the spike count's form (cuda_division.cuh): per kernel A/B
    using Division = std::conditional_t<sizeof(T) == 4 && C::kClips, MaskedReciprocalDivision, ReciprocalDivision>;
    auto from_ring = [&](int k) { return static_cast<float>(*ring.at(stage, x_at + k)); };
    if (power_of_two) recompute(PowerOfTwoDivision{theta_reciprocal.y, &unsafe}, from_ring);
    else recompute(Division{theta_reciprocal.y, &unsafe}, from_ring);
    if (C::kDivides && unsafe)  // rare: the segment again with IEEE division
      recompute(IeeeDivision{}, [&](int k) {
        const T* own = Wide ? u - WideCopy<T>::lead_here(su) : u;  // this thread's own input
        return static_cast<float>(own[(static_cast<int64_t>(seg) * K + k) * su]);
      });
    if constexpr (C::kSpiking) surrogate_grads<K>(v, cell.theta, a.surrogate);
    [[maybe_unused]] T* gu = g_u + static_cast<int64_t>(seg) * K * F;
    EXODUS_UNROLL
    for (int k = K - 1; k >= 0; --k) {
      if (kPartial && k >= len) continue;
      const float gate = C::kGated ? ((gates >> k) & 1u ? 1.f : 0.f) : 1.f;
      const float gv = cell.grad_v(v[k], static_cast<float>(*ring.at(stage, g_at + k)) + g_shift, carry, gate);
      const float g_in = cell.in_scale * gv;
      if constexpr (Syn) {
        const float j = synapse_grad(g_in, syn_carry, alpha_syn);
        if constexpr (Wide) *ring.at(stage, g_at + k) = static_cast<T>(syn_carry);
        else gu[k * F] = static_cast<T>(syn_carry);
        if (alpha_syn_grad) g_alpha_syn = mul_add(j, pre_syn[k * kBlock], g_alpha_syn);
      } else {
        if constexpr (Wide) *ring.at(stage, g_at + k) = static_cast<T>(g_in);
        else gu[k * F] = static_cast<T>(g_in);
      }
      if (alpha_grad) g_alpha = mul_add(gv, *d_alpha(stage, x_at, k), g_alpha);
      carry = cell.alpha * gv;
    }
    if constexpr (Wide) {  // the segment's input gradients, from the ring
      Data::template sync<Wide>();
      ring.template drain<!kPartial>(stage, g_at, gu, F, len);
    }
  };

  const int chunks = (steps + kSteps - 1) / kSteps;
  for (int s = 0; s + 1 < stages; ++s) issue(chunks - 1 - s, s);
  int stage = 0, load_stage = stages - 1;
  for (int c = chunks - 1; c >= 0; --c) {
    issue(c - (stages - 1), load_stage);
    load_stage = next_stage(load_stage, stages);
    wait_copies(stages - 1);
    Data::template sync<Wide>();
    // the chunk's segments, later one first (only the last chunk may have fewer, or a partial one)
    for (int j = min(S, segments - c * S) - 1; j >= 0; --j) {
      const int seg = c * S + j;
      if (steps - seg * K < K) segment(seg, stage, j, std::true_type{});
      else segment(seg, stage, j, std::false_type{});
    }
    Data::template sync<Wide>();
    stage = next_stage(stage, stages);
  }
  if (a.g_v0) a.g_v0[n] = carry;
  if (a.g_alpha) a.g_alpha[n] = g_alpha;
  if constexpr (Syn) {
    if (a.syn.g_i0) a.syn.g_i0[n] = syn_carry;
    if (a.syn.g_alpha) a.syn.g_alpha[n] = g_alpha_syn;
  }
  if (a.tau_sums.present()) {
    // the block's threads past the last neuron have returned (barriers wait for the others only)
    const int neurons_here = static_cast<int>(min(int64_t{kBlock}, a.shape.neurons() - blockIdx.x * int64_t{kBlock}));
    __syncthreads();  // every thread is done with the rings: their shared memory takes the sums
    finish_tau_sums<kBlock>(a.tau_sums, g_alpha, g_alpha_syn, a.p.alpha.data, a.syn.alpha.data,
                            reinterpret_cast<float*>(shared), neurons_here);
  }
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
    l.sms = multiprocessor_count();
  }
  return l;
}

// Ring depth: as deep as shared memory allows for the blocks each multiprocessor will hold, so
// small layers (few threads per SM) get many loads in flight and large ones keep occupancy.
// stage_bytes: one stage of the block's rings; fixed_bytes: the rest of its shared memory.
template <typename Kernel>
int pick_stages(Kernel kernel, DeviceLimits (&cache)[kMaxDevices], int64_t neurons, int64_t stage_bytes,
                int64_t fixed_bytes) {
  const DeviceLimits l = limits_of(kernel, cache);
  const int sms = l.sms, smem = l.smem, blocks_by_regs = l.blocks_by_regs;
  if (sms <= 0 || smem <= 0 || blocks_by_regs <= 0) return 2;
  const int64_t blocks = blocks_for(neurons);
  int64_t per_sm = (blocks + sms - 1) / sms;
  if (per_sm > blocks_by_regs) per_sm = blocks_by_regs;
  const int64_t budget = smem - per_sm * (1024 + fixed_bytes);  // the runtime reserves 1 KB per block
  int64_t stages = budget / (per_sm * stage_bytes);
  if (stages > kMaxStages) stages = kMaxStages;
  // a launch gets at most 48 KB of dynamic shared memory without opting in per kernel
  // (cudaFuncAttributeMaxDynamicSharedMemorySize); two stages always fit (static_asserts below)
  const int64_t fitting = (kMaxLaunchSharedBytes - fixed_bytes) / stage_bytes;
  if (stages > fitting) stages = fitting;
  return stages < 2 ? 2 : static_cast<int>(stages);
}

inline bool fits_int(int64_t v) { return v >= -2147483647LL && v <= 2147483647LL; }

// 2-byte data is copied in 4-byte neuron pairs by whole warps: features contiguous and a multiple
// of 32 (warps never straddle batch rows), pairs 4-byte aligned.
inline bool pairs_copyable(const View3& v, int64_t features) {
  return features % 32 == 0 && v.sf == 1 && v.st % 2 == 0 && v.sb % 2 == 0 &&
         reinterpret_cast<uintptr_t>(v.data) % 4 == 0;
}

// Data of `bytes` per element is copied 16 bytes at a time by whole warps (the Wide instances)
// where, besides, every row of a warp's neurons starts 16-byte aligned. The outputs they store
// the same way are the ops' own contiguous allocations, aligned alike whenever the input is.
inline bool wide_copyable(const View3& v, int64_t features, int64_t bytes) {
  return features % 32 == 0 && v.sf == 1 && (v.st * bytes) % 16 == 0 && (v.sb * bytes) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(v.data) % 16 == 0;
}

// A fast kernel over all neurons, its ring as deep as pick_stages allows. stage_bytes: one
// stage of a block's rings; fixed_bytes: the rest of its shared memory.
template <typename Args>
cudaError_t launch_ring_kernel(void (*kernel)(Args, int), DeviceLimits (&cache)[kMaxDevices], const Args& a,
                               int64_t stage_bytes, int64_t fixed_bytes, cudaStream_t stream) {
  const int64_t neurons = a.shape.neurons();
  const unsigned blocks = static_cast<unsigned>(blocks_for(neurons));
  const int stages = pick_stages(kernel, cache, neurons, stage_bytes, fixed_bytes);
  kernel<<<blocks, kBlock, stages * stage_bytes + fixed_bytes, stream>>>(a, stages);
  return cudaGetLastError();
}

// One launcher per data type, synaptic stage and copy width (each .cu file instantiates its own,
// so they compile in parallel); the cell type is dispatched inside.
template <typename T, bool Syn, bool Wide>
cudaError_t launch_forward(const MembraneForwardArgs<float>& a, cudaStream_t stream) {
  cudaError_t error = cudaSuccess;
  with_cell_type(a.p, [&](auto* cell) {
    using C = std::remove_pointer_t<decltype(cell)>;
    static DeviceLimits cache[kMaxDevices];
    constexpr int64_t stage_bytes = int64_t{kBlock} * kChunk * sizeof(T);
    static_assert(2 * stage_bytes <= kMaxLaunchSharedBytes, "two ring stages per launch");
    error = launch_ring_kernel(membrane_forward_fast<C, T, Syn, Wide>, cache, a, stage_bytes, 0, stream);
  });
  return error;
}

template <typename T, bool Syn, bool Wide>
cudaError_t launch_backward(const MembraneBackwardArgs<float>& a, cudaStream_t stream) {
  cudaError_t error = cudaSuccess;
  with_cell_type(a.p, [&](auto* cell) {
    using C = std::remove_pointer_t<decltype(cell)>;
    static DeviceLimits cache[kMaxDevices];
    constexpr int S = backward_segments<C, T>();
    constexpr int64_t stage_bytes =
        int64_t{kBlock} * (2 * S * K * sizeof(T) + checkpoint_slots<S, Syn>() * sizeof(float));
    constexpr int64_t fixed_bytes = int64_t{kBlock} * scratch_slots<T, Syn>() * sizeof(float);
    static_assert(2 * stage_bytes + fixed_bytes <= kMaxLaunchSharedBytes, "two ring stages per launch");
    error = launch_ring_kernel(membrane_backward_fast<C, T, Syn, Wide>, cache, a, stage_bytes, fixed_bytes, stream);
  });
  return error;
}

// The instances of one data type, synaptic stage and copy width: each .cu file of the fast kernels
// holds one such line (or declares them extern), so the twelve compile in parallel.
#define EXODUS_FAST_INSTANCES(EXTERN, T, SYN, WIDE)                                                          \
  EXTERN template cudaError_t launch_forward<T, SYN, WIDE>(const MembraneForwardArgs<float>&, cudaStream_t); \
  EXTERN template cudaError_t launch_backward<T, SYN, WIDE>(const MembraneBackwardArgs<float>&, cudaStream_t);

}  // namespace fast
}  // namespace exodus
