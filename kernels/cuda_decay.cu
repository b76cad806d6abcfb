// alpha = exp(-1/tau) from time constants on the GPU in one launch each way (the three PyTorch
// operations it replaces cost three launches per layer call): see DecayArgs in kernel_args.h.
#include <cmath>

#include "cuda_kernels.h"

namespace exodus {
namespace {

constexpr int kDecayThreads = 256;

template <typename A, typename Tau>
__global__ void decay_forward_kernel(const DecayArgs<A, Tau> a) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < a.n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Tau reciprocal = Tau(1) / a.tau[i];   // torch.reciprocal
    const Tau alpha = exp(reciprocal * Tau(-1));  // times -1, torch.exp
    a.decay[i] = alpha;
    a.alpha[i] = static_cast<A>(alpha);          // .to(state dtype)
    a.reciprocal_sq[i] = reciprocal * reciprocal;
  }
}

template <typename A, typename Tau>
__global__ void decay_backward_kernel(const DecayArgs<A, Tau> a) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < a.n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // .to(tau's dtype), exp's backward (times alpha), the reciprocal's (times (1/tau)^2; the two
    // signs, of "times -1" and of the reciprocal's derivative, cancel exactly)
    a.g_tau[i] = (static_cast<Tau>(a.g_alpha[i]) * a.decay[i]) * a.reciprocal_sq[i];
  }
}

unsigned decay_blocks(int64_t n) {
  const int64_t blocks = (n + kDecayThreads - 1) / kDecayThreads;
  return static_cast<unsigned>(blocks < 1024 ? (blocks > 0 ? blocks : 1) : 1024);
}

}  // namespace

template <typename A, typename Tau>
cudaError_t launch_decay_forward(const DecayArgs<A, Tau>& a, cudaStream_t stream) {
  decay_forward_kernel<A, Tau><<<decay_blocks(a.n), kDecayThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename A, typename Tau>
cudaError_t launch_decay_backward(const DecayArgs<A, Tau>& a, cudaStream_t stream) {
  decay_backward_kernel<A, Tau><<<decay_blocks(a.n), kDecayThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

#define EXODUS_DECAY_INSTANCES(A, TAU)                                                                   \
  template cudaError_t launch_decay_forward<A, TAU>(const DecayArgs<A, TAU>&, cudaStream_t);           \
  template cudaError_t launch_decay_backward<A, TAU>(const DecayArgs<A, TAU>&, cudaStream_t);
EXODUS_DECAY_INSTANCES(float, float)
EXODUS_DECAY_INSTANCES(double, float)
EXODUS_DECAY_INSTANCES(double, double)
#undef EXODUS_DECAY_INSTANCES

}  // namespace exodus
