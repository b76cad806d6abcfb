// Registers the CUDA operators as torch.ops.exodus_jit_cuda.*: kernels run on PyTorch's current
// stream of the input's device, never on the legacy default stream.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda_kernels.h"
#include "ops_autograd.h"

namespace exodus {

struct CudaBackend {
  struct Guard {
    c10::cuda::CUDAGuard device_guard;
    explicit Guard(const at::Tensor& t) : device_guard(cuda_device(t)) {}
    static c10::Device cuda_device(const at::Tensor& t) {
      TORCH_CHECK_VALUE(t.is_cuda(), "exodus_jit_cuda ops take CUDA tensors, got ", t.device());
      return t.device();
    }
  };
  template <typename Args>
  static void run(const Args& a) {
    C10_CUDA_CHECK(launch(a, c10::cuda::getCurrentCUDAStream().stream()));
  }

  // The fast backward kernels sum a scalar tau's gradient themselves (TauSums, kernel_args.h).
  static int64_t tau_sums_words(int64_t neurons) { return exodus::tau_sums_words(neurons); }
  static bool sums_taus_in_kernel(const MembraneBackwardArgs<float>& a) { return exodus::sums_taus_in_kernel(a); }

  // alpha = exp(-1/tau) computed by the membrane kernels from tau (Param::from_tau), and, where
  // the backward kernel did not sum it (TauSums), tau's gradient from alpha's per-neuron one
  // (B, F') in one launch (cuda_decay.cu); tau: (1,) or (F',) values, contiguous, in the state dtype.
  static constexpr bool kDecayInKernels = true;
  static at::Tensor decay_grad(const at::Tensor& g_alpha, const at::Tensor& tau) {
    Guard guard(g_alpha);
    at::Tensor g_tau = at::empty_like(tau);
    if (g_alpha.numel() == 0) return g_tau.zero_();
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
    with_state_type(g_alpha.scalar_type(), [&](auto zero) {
      using A = decltype(zero);
      DecayGradArgs<A> a{g_alpha.size(0), g_alpha.size(1), g_alpha.data_ptr<A>(), tau.data_ptr<A>(),
                         tau.numel() == g_alpha.size(1), g_tau.data_ptr<A>(), nullptr, nullptr, 0};
      at::Tensor scratch;  // partial sums, then the counter of finished blocks
      if (!a.per_feature) {
        a.blocks = decay_grad_blocks(g_alpha.numel());
        scratch = at::empty({a.blocks + 1}, g_alpha.options());
        a.partials = scratch.data_ptr<A>();
        a.counter = reinterpret_cast<unsigned*>(a.partials + a.blocks);
        C10_CUDA_CHECK(cudaMemsetAsync(a.counter, 0, sizeof(unsigned), stream));
      }
      C10_CUDA_CHECK(launch(a, stream));
    });
    return g_tau;
  }
};

}  // namespace exodus

EXODUS_DEFINE_OPS(exodus_jit_cuda, exodus::CudaBackend)
EXODUS_DEFINE_AUTOGRAD_OPS(exodus_jit_cuda, exodus::CudaBackend)
