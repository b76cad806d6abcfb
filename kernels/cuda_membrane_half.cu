// The float16 instances of the fast membrane kernels (cuda_membrane.cuh), in a file of their own so
// that they compile in parallel with the others.
#include "cuda_membrane.cuh"

namespace exodus {
namespace fast {

template cudaError_t launch_forward<__half>(const MembraneForwardArgs<float>&, cudaStream_t);
template cudaError_t launch_backward<__half>(const MembraneBackwardArgs<float>&, cudaStream_t);

}  // namespace fast
}  // namespace exodus
