// Deterministic sums over all blocks of a launch, for the kernels that reduce a parameter's
// gradient (cuda_decay.cu; the fast backward, cuda_membrane.cuh): each block sums its values in a
// fixed tree into a partial sum; the block that finishes last, counted by an atomic counter, adds
// the partials in index order. Which block finishes last does not change the result, and no
// second launch is needed.
#pragma once

#include "kernel_args.h"

namespace exodus {

// shared[0 .. Threads) summed in a fixed tree (at each level slot i adds slot i + half), by the
// block's first `live` threads (1 .. Threads; those after them may have returned: barriers wait
// for threads that have not), so the bits do not depend on `live`; every live thread gets the sum.
template <int Threads, typename A>
__device__ A tree_sum(A* shared, int live) {
  static_assert(Threads > 0 && (Threads & (Threads - 1)) == 0, "a power of two");
  __syncthreads();
  EXODUS_UNROLL
  for (int half = Threads / 2; half > 0; half >>= 1) {
    for (int i = threadIdx.x; i < half; i += live) shared[i] += shared[i + half];
    __syncthreads();
  }
  const A sum = shared[0];
  __syncthreads();  // shared may be refilled next
  return sum;
}

// The values of the block's first `live` threads (the others may have returned) summed in a
// fixed tree (tree_sum, the missing threads' slots zero); every live thread gets the sum.
// shared: Threads words free to use.
template <int Threads, typename A>
__device__ A block_sum(A value, A* shared, int live = Threads) {
  shared[threadIdx.x] = value;
  for (int i = live + threadIdx.x; i < Threads; i += live) shared[i] = A(0);
  return tree_sum<Threads>(shared, live);
}

// Thread 0 stores the block's N partial sums (sums[i] at partials[i * stride + blockIdx.x]) and
// counts the block as finished; returns, in every thread, whether it was the last block of the
// launch, which then sees every block's partials. counter: zero before the launch; the last
// block leaves it zero. last: one shared word.
template <int N, typename A>
__device__ bool store_partials(const A (&sums)[N], A* partials, int64_t stride, unsigned* counter, int* last) {
  if (threadIdx.x == 0) {
    EXODUS_UNROLL
    for (int i = 0; i < N; ++i) partials[i * stride + blockIdx.x] = sums[i];
    __threadfence();  // the partials are visible before the count says so
    const bool is_last = atomicAdd(counter, 1u) == gridDim.x - 1;
    if (is_last) *counter = 0;  // every block has counted: ready for the next launch
    *last = is_last;
  }
  __syncthreads();
  const bool is_last = *last != 0;
  if (is_last) __threadfence();
  return is_last;
}

// partials[0 .. count) summed in a fixed order, whichever block and however many of its threads
// (`live`, as tree_sum) do it: slot i of shared adds partials i, i + Threads, ... in turn, read
// from L2, where the other blocks' stores are; then tree_sum. Every live thread gets the sum.
template <int Threads, typename A>
__device__ A sum_partials(const A* partials, int64_t count, A* shared, int live = Threads) {
  for (int i = threadIdx.x; i < Threads; i += live) {
    A total = A(0);
    for (int64_t j = i; j < count; j += Threads) total += __ldcg(partials + j);
    shared[i] = total;
  }
  return tree_sum<Threads>(shared, live);
}

// The end of a fast backward launch that sums scalar taus' gradients itself (TauSums): the
// block's first `neurons` threads (its neurons; the others have returned) call it with their
// neuron's gradients of alpha and alpha_syn. The result does not depend on which block finishes
// last, though the last block may be the one with fewer threads. tau, tau_syn: the time
// constants (Param data with from_tau); shared: Threads + 1 words free to use.
template <int Threads>
__device__ void finish_tau_sums(const TauSums<float>& t, float g_alpha, float g_alpha_syn, const float* tau,
                                const float* tau_syn, float* shared, int neurons) {
  const float sums[2] = {t.g_tau ? block_sum<Threads>(g_alpha, shared, neurons) : 0.f,
                         t.g_tau_syn ? block_sum<Threads>(g_alpha_syn, shared, neurons) : 0.f};
  if (!store_partials(sums, t.partials, gridDim.x, t.counter, reinterpret_cast<int*>(shared + Threads))) return;
  if (t.g_tau) {
    const float total = sum_partials<Threads>(t.partials, gridDim.x, shared, neurons);
    if (threadIdx.x == 0) *t.g_tau = tau_grad_of(total, *tau);
  }
  if (t.g_tau_syn) {
    const float total = sum_partials<Threads>(t.partials + gridDim.x, gridDim.x, shared, neurons);
    if (threadIdx.x == 0) *t.g_tau_syn = tau_grad_of(total, *tau_syn);
  }
}

}  // namespace exodus
