// tau's gradient where the membrane kernels computed alpha = exp(-1/tau) from tau themselves
// (Param::from_tau): one launch after the backward kernel, in place of a PyTorch sum and the
// elementwise operations of alpha's backward. See DecayGradArgs in kernel_args.h.
#include "cuda_kernels.h"

namespace exodus {
namespace {

constexpr int kGradThreads = 256;
constexpr int64_t kNeuronsPerPartial = 4096;  // per block, for one tau
constexpr int kMaxPartials = 1024;

// autograd's arithmetic for alpha = exp(-1/tau): exp's backward (times alpha), then the
// reciprocal's (times (1/tau)^2; with "times -1" the two signs cancel exactly)
template <typename A>
__device__ A tau_grad(A g_alpha, A tau) {
  const A reciprocal = A(1) / tau;
  return (g_alpha * decay_of_tau(tau)) * (reciprocal * reciprocal);
}

// The block's values summed in a fixed tree (deterministic); every thread gets the sum.
template <typename A>
__device__ A block_sum(A value, A* shared) {
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int half = kGradThreads / 2; half > 0; half >>= 1) {
    if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
    __syncthreads();
  }
  const A sum = shared[0];
  __syncthreads();  // shared may be refilled next
  return sum;
}

// One tau per feature: a thread per feature sums its column over the batch, in batch order.
template <typename A>
__global__ void decay_grad_per_feature(const DecayGradArgs<A> a) {
  const int64_t f = blockIdx.x * static_cast<int64_t>(kGradThreads) + threadIdx.x;
  if (f >= a.cols) return;
  A sum = A(0);
  for (int64_t b = 0; b < a.rows; ++b) sum += a.g_alpha[b * a.cols + f];
  a.g_tau[f] = tau_grad(sum, a.tau[f]);
}

// One tau: each block sums a contiguous range into a partial; the last block to finish adds the
// partials in index order (so which block is last does not change the result).
template <typename A>
__global__ void decay_grad_single(const DecayGradArgs<A> a) {
  __shared__ A shared[kGradThreads];
  __shared__ bool last;
  const int64_t n = a.rows * a.cols;
  const int64_t per_block = (n + a.blocks - 1) / a.blocks;
  const int64_t begin = blockIdx.x * per_block;
  const int64_t end = begin + per_block < n ? begin + per_block : n;
  A sum = A(0);
  for (int64_t i = begin + threadIdx.x; i < end; i += kGradThreads) sum += a.g_alpha[i];
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) {
    a.partials[blockIdx.x] = sum;
    __threadfence();  // the partial is visible before the count says so
    last = atomicAdd(a.counter, 1u) == static_cast<unsigned>(a.blocks - 1);
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  A total = A(0);
  for (int i = threadIdx.x; i < a.blocks; i += kGradThreads) total += __ldcg(a.partials + i);  // from L2
  total = block_sum(total, shared);
  if (threadIdx.x == 0) a.g_tau[0] = tau_grad(total, a.tau[0]);
}

}  // namespace

int decay_grad_blocks(int64_t n) {
  const int64_t blocks = (n + kNeuronsPerPartial - 1) / kNeuronsPerPartial;
  return static_cast<int>(blocks < 1 ? 1 : blocks > kMaxPartials ? kMaxPartials : blocks);
}

template <typename A>
cudaError_t launch(const DecayGradArgs<A>& a, cudaStream_t stream) {
  if (a.per_feature) {
    const int64_t blocks = (a.cols + kGradThreads - 1) / kGradThreads;
    decay_grad_per_feature<A><<<static_cast<unsigned>(blocks), kGradThreads, 0, stream>>>(a);
  } else {
    decay_grad_single<A><<<static_cast<unsigned>(a.blocks), kGradThreads, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

template cudaError_t launch<float>(const DecayGradArgs<float>&, cudaStream_t);
template cudaError_t launch<double>(const DecayGradArgs<double>&, cudaStream_t);

}  // namespace exodus
