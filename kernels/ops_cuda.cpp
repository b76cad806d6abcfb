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

  // alpha from tau in one launch each way (cuda_decay.cu) for the dtype pairs it has; false: the
  // caller runs PyTorch's operations instead.
  static constexpr bool kDecayKernels = true;
  static bool decay_forward(const at::Tensor& tau, const at::Tensor& alpha, const at::Tensor& decay,
                            const at::Tensor& reciprocal_sq) {
    return with_decay_types(alpha.scalar_type(), tau.scalar_type(), [&](auto a_tag, auto tau_tag) {
      using A = decltype(a_tag);
      using Tau = decltype(tau_tag);
      DecayArgs<A, Tau> a{tau.numel(), tau.data_ptr<Tau>(), alpha.data_ptr<A>(), decay.data_ptr<Tau>(),
                          reciprocal_sq.data_ptr<Tau>(), nullptr, nullptr};
      C10_CUDA_CHECK(launch_decay_forward(a, c10::cuda::getCurrentCUDAStream().stream()));
    });
  }
  static bool decay_backward(const at::Tensor& g_alpha, const at::Tensor& decay, const at::Tensor& reciprocal_sq,
                             const at::Tensor& g_tau) {
    return with_decay_types(g_alpha.scalar_type(), decay.scalar_type(), [&](auto a_tag, auto tau_tag) {
      using A = decltype(a_tag);
      using Tau = decltype(tau_tag);
      DecayArgs<A, Tau> a{decay.numel(), nullptr, nullptr, decay.data_ptr<Tau>(), reciprocal_sq.data_ptr<Tau>(),
                          g_alpha.data_ptr<A>(), g_tau.data_ptr<Tau>()};
      C10_CUDA_CHECK(launch_decay_backward(a, c10::cuda::getCurrentCUDAStream().stream()));
    });
  }
  template <typename Launch>
  static bool with_decay_types(at::ScalarType a, at::ScalarType tau, Launch launch) {
    if (a == at::kFloat && tau == at::kFloat) launch(float{}, float{});
    else if (a == at::kDouble && tau == at::kFloat) launch(double{}, float{});
    else if (a == at::kDouble && tau == at::kDouble) launch(double{}, double{});
    else return false;
    return true;
  }
};

}  // namespace exodus

EXODUS_DEFINE_OPS(exodus_jit_cuda, exodus::CudaBackend)
EXODUS_DEFINE_AUTOGRAD_OPS(exodus_jit_cuda, exodus::CudaBackend)
