// The fast backward as a scan over time (cuda_scan_backward.cuh): which calls it takes, and the
// instances for non-spiking and single-spike cells (multi- and max-spike cells in
// cuda_scan_backward_multi.cu and _max.cu), in files of their own so that they compile in
// parallel.
#include <cstdlib>
#include <cstring>

#include "cuda_scan_backward.cuh"

namespace exodus {
namespace fast {

EXODUS_SCAN_INSTANCES(, SpikeKind::None)
EXODUS_SCAN_INSTANCES(, SpikeKind::Single)
EXODUS_SCAN_INSTANCES(extern, SpikeKind::Multi)
EXODUS_SCAN_INSTANCES(extern, SpikeKind::Max)

}  // namespace fast

namespace {

// EXODUS_JIT_KERNELS=ring keeps every fast backward on the ring kernel, =scan takes the scan for
// every float32 call without the synaptic stage, also where it does not suit (both for
// comparisons and tests); otherwise scan_suits decides.
enum class ScanChoice { Suited, Never, Always };

ScanChoice scan_choice() {
  static const ScanChoice choice = [] {
    const char* value = std::getenv("EXODUS_JIT_KERNELS");
    if (value != nullptr && std::strcmp(value, "ring") == 0) return ScanChoice::Never;
    if (value != nullptr && std::strcmp(value, "scan") == 0) return ScanChoice::Always;
    return ScanChoice::Suited;
  }();
  return choice;
}

// The current device's multiprocessors, looked up once per device.
int multiprocessors() {
  constexpr int kDevices = 64;
  static int cache[kDevices] = {};
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kDevices) return 0;
  if (cache[device] == 0) cudaDeviceGetAttribute(&cache[device], cudaDevAttrMultiProcessorCount, device);
  return cache[device];
}

}  // namespace

// float32 data without the synaptic stage (the others keep the ring kernel), on the fast path
bool scan_backward_takes(const MembraneBackwardArgs<float>& a) {
  if (a.dtype != DType::Float32 || a.syn.present()) return false;
  switch (scan_choice()) {
    case ScanChoice::Never: return false;
    case ScanChoice::Always: return true;
    default: return fast::scan_suits(a.shape.neurons(), a.shape.time, multiprocessors());
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
