// The bfloat16 synaptic-stage instances of the fast membrane kernels (cuda_membrane.cuh), in a file
// of their own so that they compile in parallel with the others.
#include "cuda_membrane.cuh"

namespace exodus {
namespace fast {

EXODUS_FAST_INSTANCES(, __nv_bfloat16, true, false)

}  // namespace fast
}  // namespace exodus
