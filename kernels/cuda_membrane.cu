// Which calls the fast membrane kernels (cuda_membrane.cuh) take, and their dispatch by data
// type; the float32 instances are compiled here, the 2-byte ones in their own files so that the
// three compile in parallel.
#include "cuda_membrane.cuh"

namespace exodus {
namespace fast {

template cudaError_t launch_forward<float>(const MembraneForwardArgs<float>&, cudaStream_t);
template cudaError_t launch_backward<float>(const MembraneBackwardArgs<float>&, cudaStream_t);
extern template cudaError_t launch_forward<__half>(const MembraneForwardArgs<float>&, cudaStream_t);
extern template cudaError_t launch_backward<__half>(const MembraneBackwardArgs<float>&, cudaStream_t);
extern template cudaError_t launch_forward<__nv_bfloat16>(const MembraneForwardArgs<float>&, cudaStream_t);
extern template cudaError_t launch_backward<__nv_bfloat16>(const MembraneBackwardArgs<float>&, cudaStream_t);

namespace {

// The data layouts the fast kernels read: 4-byte data any way; 2-byte data in warp-copyable pairs.
bool data_ok(DType dtype, const View3& v, int64_t features) {
  if (dtype == DType::Float32) return true;
  return (dtype == DType::Float16 || dtype == DType::BFloat16) && pairs_copyable(v, features);
}

}  // namespace
}  // namespace fast

bool fast_path(const MembraneForwardArgs<float>& a) {
  return fast::data_ok(a.dtype, a.u, a.shape.features) && a.v_pre == nullptr && a.w_rec == nullptr &&
         fast::fits_int(a.shape.features * fast::K) && fast::fits_int(a.u.st * fast::K);
}

bool fast_path(const MembraneBackwardArgs<float>& a) {
  return fast::data_ok(a.dtype, a.u, a.shape.features) && fast::data_ok(a.dtype, a.g_out, a.shape.features) &&
         a.g_wrec == nullptr && (a.surrogate.kind != SurrogateKind::Given || a.p.spike == SpikeKind::None) &&
         fast::fits_int(a.shape.features * fast::K) && fast::fits_int(a.u.st * fast::K) &&
         fast::fits_int(a.g_out.st * fast::K);
}

cudaError_t launch_fast(const MembraneForwardArgs<float>& a, cudaStream_t stream) {
  switch (a.dtype) {
    case DType::Float32: return fast::launch_forward<float>(a, stream);
    case DType::Float16: return fast::launch_forward<__half>(a, stream);
    case DType::BFloat16: return fast::launch_forward<__nv_bfloat16>(a, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t launch_fast(const MembraneBackwardArgs<float>& a, cudaStream_t stream) {
  switch (a.dtype) {
    case DType::Float32: return fast::launch_backward<float>(a, stream);
    case DType::Float16: return fast::launch_backward<__half>(a, stream);
    case DType::BFloat16: return fast::launch_backward<__nv_bfloat16>(a, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace exodus
