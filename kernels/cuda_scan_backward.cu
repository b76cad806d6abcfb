// The fast backward as a scan over time (cuda_scan_backward.cuh): which calls it takes, and the
// instances for non-spiking and single-spike cells without the synaptic stage (multi- and
// max-spike cells in cuda_scan_backward_multi.cu and _max.cu, the synaptic stage's instances in
// cuda_scan_backward_syn[_multi, _max].cu), in files of their own so that they compile in
// parallel.
#include "cuda_scan_backward.cuh"

namespace exodus {
namespace fast {

EXODUS_SCAN_INSTANCES(, SpikeKind::None, false)
EXODUS_SCAN_INSTANCES(, SpikeKind::Single, false)
EXODUS_SCAN_INSTANCES(extern, SpikeKind::Multi, false)
EXODUS_SCAN_INSTANCES(extern, SpikeKind::Max, false)
EXODUS_SCAN_INSTANCES(extern, SpikeKind::None, true)
EXODUS_SCAN_INSTANCES(extern, SpikeKind::Single, true)
EXODUS_SCAN_INSTANCES(extern, SpikeKind::Multi, true)
EXODUS_SCAN_INSTANCES(extern, SpikeKind::Max, true)

}  // namespace fast

// float32 data (2-byte data keeps the ring kernel), on the fast path
bool scan_backward_takes(const MembraneBackwardArgs<float>& a) {
  if (a.dtype != DType::Float32) return false;
  switch (kernel_choice()) {
    case KernelChoice::Ring: return false;
    case KernelChoice::Scan: return true;
    default: return fast::scan_suits(a.shape.neurons(), a.shape.time, multiprocessor_count());
  }
}

// by spike kind as with_cell_type dispatches (neuron_cell.h), and synaptic stage
template <bool Syn>
cudaError_t launch_scan_backward_of(const MembraneBackwardArgs<float>& a, cudaStream_t stream) {
  switch (a.p.spike) {
    case SpikeKind::None: return fast::launch_backward_scan<SpikeKind::None, Syn>(a, stream);
    case SpikeKind::Single: return fast::launch_backward_scan<SpikeKind::Single, Syn>(a, stream);
    case SpikeKind::Max: return fast::launch_backward_scan<SpikeKind::Max, Syn>(a, stream);
    default: return fast::launch_backward_scan<SpikeKind::Multi, Syn>(a, stream);
  }
}

cudaError_t launch_scan_backward(const MembraneBackwardArgs<float>& a, cudaStream_t stream) {
  return a.syn.present() ? launch_scan_backward_of<true>(a, stream) : launch_scan_backward_of<false>(a, stream);
}

}  // namespace exodus
