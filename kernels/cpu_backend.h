// The CPU backend of ops_impl.h: runs each neuron's time loop, neurons spread over torch's
// intra-op threads (at::parallel_for, so torch.set_num_threads applies).
#pragma once

#include <ATen/core/Tensor.h>

#include "kernel_args.h"

namespace exodus {

struct CpuBackend {
  // alpha from tau with PyTorch's CPU operations (its vectorised exp differs from std::exp)
  static constexpr bool kDecayInKernels = false;
  struct Guard {
    explicit Guard(const at::Tensor& t) {
      TORCH_CHECK_VALUE(t.device().is_cpu(), "exodus_jit_cpu ops take CPU tensors, got ", t.device());
    }
  };
  template <typename A> static void run(const MembraneForwardArgs<A>& a);
  template <typename A> static void run(const MembraneBackwardArgs<A>& a);
  template <typename A> static void run(const SynapticForwardArgs<A>& a);
  template <typename A> static void run(const SynapticBackwardArgs<A>& a);
  // tau's gradient from alpha's per neuron, with PyTorch's operations (ops_autograd.h)
  static int64_t tau_sums_words(int64_t) { return 0; }
  static bool sums_taus_in_kernel(const MembraneBackwardArgs<float>&) { return false; }
};

}  // namespace exodus
