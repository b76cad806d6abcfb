// Launchers of the CUDA kernels; torch-free so that nvcc compiles only CUDA code.
#pragma once

#include <cuda_runtime_api.h>

#include "kernel_args.h"

namespace exodus {

// Which CUDA kernels run, from EXODUS_JIT_KERNELS (read once per process; for comparisons and
// tests): General never takes the fast kernels, Ring never the scan backward, Scan the scan
// backward for every float32 fast backward (the fused synaptic stage's too); Auto (unset or
// anything else) lets each call choose.
enum class KernelChoice { Auto, General, Ring, Scan };
KernelChoice kernel_choice();

// The current device's multiprocessors, looked up once per device (0 where unknown).
int multiprocessor_count();

namespace fast {
// Threads per block of the fast kernels, one neuron each (small blocks spread small layers over
// all SMs), and so the grid of any kernel that sums TauSums' partials per block (its scratch,
// tau_sums_words, holds one pair per such block).
constexpr int kBlock = 64;
inline int64_t blocks_for(int64_t neurons) { return (neurons + kBlock - 1) / kBlock; }
}  // namespace fast

template <typename A> cudaError_t launch(const MembraneForwardArgs<A>& a, cudaStream_t stream);
template <typename A> cudaError_t launch(const MembraneBackwardArgs<A>& a, cudaStream_t stream);
template <typename A> cudaError_t launch(const SynapticForwardArgs<A>& a, cudaStream_t stream);
template <typename A> cudaError_t launch(const SynapticBackwardArgs<A>& a, cudaStream_t stream);

// The fast membrane kernels (cuda_membrane.cu): float32 data without recorded states or given
// surrogate values. fast_path says whether a call qualifies.
bool fast_path(const MembraneForwardArgs<float>& a);
bool fast_path(const MembraneBackwardArgs<float>& a);
cudaError_t launch_fast(const MembraneForwardArgs<float>& a, cudaStream_t stream);
cudaError_t launch_fast(const MembraneBackwardArgs<float>& a, cudaStream_t stream);
// The fast backward as a scan over time (cuda_scan_backward.cu) for float32 layers too small to
// fill the GPU, which launch_fast chooses where it pays (or as kernel_choice() says).
bool scan_backward_takes(const MembraneBackwardArgs<float>& a);
cudaError_t launch_scan_backward(const MembraneBackwardArgs<float>& a, cudaStream_t stream);

// Whether a backward call's scalar taus can have their gradients summed inside its kernel
// (TauSums: the fast kernels take it), and the scratch words that needs for a call of `neurons`
// neurons (the partials of two taus and the counter), which the forward allocates behind its
// checkpoints.
bool sums_taus_in_kernel(const MembraneBackwardArgs<float>& a);
int64_t tau_sums_words(int64_t neurons);

// tau's gradient from alpha's per-neuron gradient (cuda_decay.cu), for float and double; the
// partial sums' count for one tau of n = rows * cols neurons.
int decay_grad_blocks(int64_t n);
template <typename A> cudaError_t launch(const DecayGradArgs<A>& a, cudaStream_t stream);

}  // namespace exodus
