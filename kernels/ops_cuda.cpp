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
};

}  // namespace exodus

EXODUS_DEFINE_OPS(exodus_jit_cuda, exodus::CudaBackend)
EXODUS_DEFINE_AUTOGRAD_OPS(exodus_jit_cuda, exodus::CudaBackend)
