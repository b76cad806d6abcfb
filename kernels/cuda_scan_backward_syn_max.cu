// The scan backward's instances for max-spike cells with the synaptic stage (cuda_scan_backward.cuh),
// in a file of their own so that they compile in parallel with the others.
#include "cuda_scan_backward.cuh"

namespace exodus {
namespace fast {

EXODUS_SCAN_INSTANCES(, SpikeKind::Max, true)

}  // namespace fast
}  // namespace exodus
