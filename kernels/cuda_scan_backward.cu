// The fast backward as a scan over time (cuda_scan_backward.cuh): which calls it takes, and the
// instances for non-spiking and single-spike cells (multi- and max-spike cells in
// cuda_scan_backward_multi.cu and _max.cu), in files of their own so that they compile in
// parallel.
#include "cuda_scan_backward.cuh"

namespace exodus {
namespace fast {

EXODUS_SCAN_INSTANCES(, SpikeKind::None)
EXODUS_SCAN_INSTANCES(, SpikeKind::Single)
EXODUS_SCAN_INSTANCES(extern, SpikeKind::Multi)
EXODUS_SCAN_INSTANCES(extern, SpikeKind::Max)

}  // namespace fast

// float32 data without the synaptic stage (the others keep the ring kernel), on the fast path
bool scan_backward_takes(const MembraneBackwardArgs<float>& a) {
  if (a.dtype != DType::Float32 || a.syn.present()) return false;
  switch (kernel_choice()) {
    case KernelChoice::Ring: return false;
    case KernelChoice::Scan: return true;
    default: return fast::scan_suits(a.shape.neurons(), a.shape.time, multiprocessor_count());
  }
}

// by spike kind as with_cell_type dispatches (neuron_cell.h)
cudaError_t launch_scan_backward(const MembraneBackwardArgs<float>& a, cudaStream_t stream) {
  switch (a.p.spike) {
    case SpikeKind::None: return fast::launch_backward_scan<SpikeKind::None>(a, stream);
    case SpikeKind::Single: return fast::launch_backward_scan<SpikeKind::Single>(a, stream);
    case SpikeKind::Max: return fast::launch_backward_scan<SpikeKind::Max>(a, stream);
    default: return fast::launch_backward_scan<SpikeKind::Multi>(a, stream);
  }
}

}  // namespace exodus
