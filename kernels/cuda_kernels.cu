// CUDA kernels: one thread per neuron (b, f) walking time, f fastest so that every time step is
// one coalesced access across a warp of the (B, T, F) tensors.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "cuda_kernels.h"
#include "neuron_loops.h"

namespace exodus {

KernelChoice kernel_choice() {
  static const KernelChoice choice = [] {
    const char* value = std::getenv("EXODUS_JIT_KERNELS");
    if (value == nullptr) return KernelChoice::Auto;
    if (std::strcmp(value, "general") == 0) return KernelChoice::General;
    if (std::strcmp(value, "ring") == 0) return KernelChoice::Ring;
    if (std::strcmp(value, "scan") == 0) return KernelChoice::Scan;
    return KernelChoice::Auto;
  }();
  return choice;
}

int multiprocessor_count() {
  constexpr int kDevices = 128;
  static int cache[kDevices] = {};
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kDevices) return 0;
  if (cache[device] == 0) cudaDeviceGetAttribute(&cache[device], cudaDevAttrMultiProcessorCount, device);
  return cache[device];
}

namespace {

// Register caps chosen from ptxas reports (no spills): 4 blocks of 256 per multiprocessor
// forward, 2-3 backward, so enough loads are in flight to cover memory latency.
constexpr int kMaxThreads = 256;

template <typename T, typename A>
__global__ void __launch_bounds__(kMaxThreads, 4) membrane_forward_kernel(const MembraneForwardArgs<A> a) {
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  // for a backward on the fast kernels (TauSums): it can follow this forward where only the
  // forward has extras (recorded states that get no gradient)
  if (n == 0 && a.tau_sums_counter) *a.tau_sums_counter = 0;
  if (n < a.shape.neurons()) membrane_forward_neuron<T, A>(a, n / a.shape.features, n % a.shape.features);
}

template <typename T, typename A>
__global__ void __launch_bounds__(kMaxThreads, 2) membrane_backward_kernel(const MembraneBackwardArgs<A> a) {
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (n < a.shape.neurons()) membrane_backward_neuron<T, A>(a, n / a.shape.features, n % a.shape.features);
}

template <typename T, typename A>
__global__ void __launch_bounds__(kMaxThreads, 4) synaptic_forward_kernel(const SynapticForwardArgs<A> a) {
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (n < a.shape.neurons()) synaptic_forward_neuron<T, A>(a, n / a.shape.features, n % a.shape.features);
}

template <typename T, typename A>
__global__ void __launch_bounds__(kMaxThreads, 3) synaptic_backward_kernel(const SynapticBackwardArgs<A> a) {
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (n < a.shape.neurons()) synaptic_backward_neuron<T, A>(a, n / a.shape.features, n % a.shape.features);
}

// Threads per block: as many as keep every multiprocessor busy with two or more blocks; small
// layers (few neurons) get smaller blocks rather than idle multiprocessors.
int threads_for(int64_t neurons) {
  const int known = multiprocessor_count();
  const int64_t sms = known > 0 ? known : 80;
  int threads = kMaxThreads;
  while (threads > 32 && (neurons + threads - 1) / threads < 2 * sms) threads /= 2;
  return threads;
}

template <typename A, typename Launch>
cudaError_t with_storage_type(DType dtype, Launch launch) {
  if constexpr (std::is_same<A, double>::value) {
    if (dtype != DType::Float64) return cudaErrorInvalidValue;
    launch(double{});
  } else {
    switch (dtype) {
      case DType::Float32: launch(float{}); break;
      case DType::Float16: launch(__half{}); break;
      case DType::BFloat16: launch(__nv_bfloat16{}); break;
      default: return cudaErrorInvalidValue;
    }
  }
  return cudaGetLastError();
}

// The fast membrane kernels take the calls they can (unless EXODUS_JIT_KERNELS=general, which
// benchmarks and tests use to compare); everything else runs the general kernels here.
bool fast_kernels_enabled() { return kernel_choice() != KernelChoice::General; }

// TauSums are summed by the fast backward only (sums_taus_in_kernel): a call that sets them and
// would reach the general kernels is refused, never run with its gradient of tau left unwritten.
template <typename A>
bool general_kernels_take(const MembraneBackwardArgs<A>& a) { return !a.tau_sums.present(); }
template <class Args>
bool general_kernels_take(const Args&) { return true; }

template <typename A, template <typename> class Args>
bool ran_fast(const Args<A>& a, cudaStream_t stream, cudaError_t& error) {
  if constexpr (std::is_same<A, float>::value &&
                (std::is_same<Args<A>, MembraneForwardArgs<A>>::value || std::is_same<Args<A>, MembraneBackwardArgs<A>>::value)) {
    if (!fast_kernels_enabled() || !fast_path(a)) return false;
    error = launch_fast(a, stream);
    return true;
  }
  return false;
}

}  // namespace

bool sums_taus_in_kernel(const MembraneBackwardArgs<float>& a) { return fast_kernels_enabled() && fast_path(a); }

#define EXODUS_DEFINE_LAUNCH(ARGS, KERNEL)                                                   \
  template <typename A>                                                                      \
  cudaError_t launch(const ARGS<A>& a, cudaStream_t stream) {                                \
    cudaError_t fast_error = cudaSuccess;                                                    \
    if (ran_fast(a, stream, fast_error)) return fast_error;                                  \
    if (!general_kernels_take(a)) return cudaErrorInvalidValue;                              \
    const int64_t neurons = a.shape.neurons();                                               \
    const int threads = threads_for(neurons);                                                \
    const unsigned blocks = static_cast<unsigned>((neurons + threads - 1) / threads);        \
    return with_storage_type<A>(a.dtype, [&](auto tag) {                                     \
      KERNEL<decltype(tag), A><<<blocks, threads, 0, stream>>>(a);                           \
    });                                                                                      \
  }                                                                                          \
  template cudaError_t launch<float>(const ARGS<float>&, cudaStream_t);                      \
  template cudaError_t launch<double>(const ARGS<double>&, cudaStream_t);

EXODUS_DEFINE_LAUNCH(MembraneForwardArgs, membrane_forward_kernel)
EXODUS_DEFINE_LAUNCH(MembraneBackwardArgs, membrane_backward_kernel)
EXODUS_DEFINE_LAUNCH(SynapticForwardArgs, synaptic_forward_kernel)
EXODUS_DEFINE_LAUNCH(SynapticBackwardArgs, synaptic_backward_kernel)
#undef EXODUS_DEFINE_LAUNCH

}  // namespace exodus
