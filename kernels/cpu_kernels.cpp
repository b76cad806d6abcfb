// CPU kernels: the per-neuron loops of neuron_loops.h over all neurons, for each storage dtype.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <type_traits>

#include "cpu_backend.h"
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

}  // namespace

template <typename A>
void CpuBackend::run(const MembraneForwardArgs<A>& a) {
  with_storage_type<A>(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    for_each_neuron(a, [&](int64_t b, int64_t f) { membrane_forward_neuron<T, A>(a, b, f); });
  });
}

template <typename A>
void CpuBackend::run(const MembraneBackwardArgs<A>& a) {
  with_storage_type<A>(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    for_each_neuron(a, [&](int64_t b, int64_t f) { membrane_backward_neuron<T, A>(a, b, f); });
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
