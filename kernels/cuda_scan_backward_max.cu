// The scan backward's instances for max-spike cells (cuda_scan_backward.cuh), in a file of their
// own so that they compile in parallel with the others.
#include "cuda_scan_backward.cuh"

namespace exodus {
namespace fast {

EXODUS_SCAN_INSTANCES(, SpikeKind::Max, false)

}  // namespace fast
}  // namespace exodus
