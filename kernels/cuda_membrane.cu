// Which calls the fast membrane kernels (cuda_membrane.cuh) take, and their dispatch by data
// type, synaptic stage and copy width; the plain float32 instances are compiled here, the others
// in files of their own (cuda_membrane_<type>[_syn][_wide].cu) so that the twelve compile in
// parallel.
#include "cuda_membrane.cuh"

namespace exodus {
namespace fast {

EXODUS_FAST_INSTANCES(, float, false, false)
EXODUS_FAST_INSTANCES(extern, float, true, false)
EXODUS_FAST_INSTANCES(extern, __half, false, false)
EXODUS_FAST_INSTANCES(extern, __half, true, false)
EXODUS_FAST_INSTANCES(extern, __nv_bfloat16, false, false)
EXODUS_FAST_INSTANCES(extern, __nv_bfloat16, true, false)
EXODUS_FAST_INSTANCES(extern, float, false, true)
EXODUS_FAST_INSTANCES(extern, float, true, true)
EXODUS_FAST_INSTANCES(extern, __half, false, true)
EXODUS_FAST_INSTANCES(extern, __half, true, true)
EXODUS_FAST_INSTANCES(extern, __nv_bfloat16, false, true)
EXODUS_FAST_INSTANCES(extern, __nv_bfloat16, true, true)

namespace {

// The data layouts the fast kernels read: 4-byte data any way; 2-byte data in warp-copyable pairs.
bool data_ok(DType dtype, const View3& v, int64_t features) {
  if (dtype == DType::Float32) return true;
  return (dtype == DType::Float16 || dtype == DType::BFloat16) && pairs_copyable(v, features);
}

}  // namespace
}  // namespace fast

// The fast kernels step kChunk rows of any tensor with int offsets and count steps in ints; both
// directions check the same limits, so a call's two directions always run the same family of
// kernels.
bool fast_path(const MembraneForwardArgs<float>& a) {
  return without_extras(a) && fast::data_ok(a.dtype, a.u, a.shape.features) && fast::fits_int(a.shape.time) &&
         fast::fits_int(a.shape.features * fast::kChunk) && fast::fits_int(a.u.st * fast::kChunk);
}

// two partials per block of the fast backward's grid, then the counter
int64_t tau_sums_words(int64_t neurons) { return 2 * fast::blocks_for(neurons) + 1; }

bool fast_path(const MembraneBackwardArgs<float>& a) {
  return without_extras(a) && fast::data_ok(a.dtype, a.u, a.shape.features) &&
         fast::data_ok(a.dtype, a.g_out, a.shape.features) && fast::fits_int(a.shape.time) &&
         fast::fits_int(a.shape.features * fast::kChunk) && fast::fits_int(a.u.st * fast::kChunk) &&
         fast::fits_int(a.g_out.st * fast::kChunk);
}

namespace {

int64_t element_bytes(DType dtype) { return dtype == DType::Float32 ? 4 : 2; }

// Whether a call's data all take 16-byte copies.
bool wide(const MembraneForwardArgs<float>& a) {
  return fast::wide_copyable(a.u, a.shape.features, element_bytes(a.dtype));
}
bool wide(const MembraneBackwardArgs<float>& a) {
  return fast::wide_copyable(a.u, a.shape.features, element_bytes(a.dtype)) &&
         fast::wide_copyable(a.g_out, a.shape.features, element_bytes(a.dtype));
}

// Calls launch(T{}, syn, wide) with the data type, the synaptic stage and the copy width
// (std::bool_constant) of a call.
template <class Args, typename Launch>
cudaError_t with_fast_instance(const Args& a, Launch launch) {
  auto with_width = [&](auto tag, auto syn) {
    return wide(a) ? launch(tag, syn, std::true_type{}) : launch(tag, syn, std::false_type{});
  };
  auto with_syn = [&](auto tag) {
    return a.syn.present() ? with_width(tag, std::true_type{}) : with_width(tag, std::false_type{});
  };
  switch (a.dtype) {
    case DType::Float32: return with_syn(float{});
    case DType::Float16: return with_syn(__half{});
    case DType::BFloat16: return with_syn(__nv_bfloat16{});
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t launch_fast(const MembraneForwardArgs<float>& a, cudaStream_t stream) {
  return with_fast_instance(a, [&](auto tag, auto syn, auto wide) {
    return fast::launch_forward<decltype(tag), decltype(syn)::value, decltype(wide)::value>(a, stream);
  });
}

cudaError_t launch_fast(const MembraneBackwardArgs<float>& a, cudaStream_t stream) {
  if (scan_backward_takes(a)) return launch_scan_backward(a, stream);
  return with_fast_instance(a, [&](auto tag, auto syn, auto wide) {
    return fast::launch_backward<decltype(tag), decltype(syn)::value, decltype(wide)::value>(a, stream);
  });
}

}  // namespace exodus
