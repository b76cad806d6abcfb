// tau's gradient where the membrane kernels computed alpha = exp(-1/tau) from tau themselves
// (Param::from_tau) and the backward kernel did not sum it itself (TauSums: a scalar tau on the
// fast kernels): one launch after the backward kernel, in place of a PyTorch sum and the
// elementwise operations of alpha's backward. See DecayGradArgs in kernel_args.h.
#include "cuda_kernels.h"
#include "cuda_sums.cuh"

namespace exodus {
namespace {

constexpr int kGradThreads = 256;
constexpr int64_t kNeuronsPerPartial = 4096;  // per block, for one tau
constexpr int kMaxPartials = 1024;

// One tau per feature: a thread per feature sums its column over the batch, in batch order.
template <typename A>
__global__ void decay_grad_per_feature(const DecayGradArgs<A> a) {
  const int64_t f = blockIdx.x * static_cast<int64_t>(kGradThreads) + threadIdx.x;
  if (f >= a.cols) return;
  A sum = A(0);
  for (int64_t b = 0; b < a.rows; ++b) sum += a.g_alpha[b * a.cols + f];
  a.g_tau[f] = tau_grad_of(sum, a.tau[f]);
}

// One tau: each block sums a contiguous range into a partial; the last block to finish adds the
// partials in index order (cuda_sums.cuh).
template <typename A>
__global__ void decay_grad_single(const DecayGradArgs<A> a) {
  __shared__ A shared[kGradThreads];
  __shared__ int last;
  const int64_t n = a.rows * a.cols;
  const int64_t per_block = (n + a.blocks - 1) / a.blocks;
  const int64_t begin = blockIdx.x * per_block;
  const int64_t end = begin + per_block < n ? begin + per_block : n;
  A sum = A(0);
  for (int64_t i = begin + threadIdx.x; i < end; i += kGradThreads) sum += a.g_alpha[i];
  const A sums[1] = {block_sum<kGradThreads>(sum, shared)};
  if (!store_partials(sums, a.partials, 0, a.counter, &last)) return;
  const A total = sum_partials<kGradThreads>(a.partials, a.blocks, shared);
  if (threadIdx.x == 0) a.g_tau[0] = tau_grad_of(total, a.tau[0]);
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
