// Launchers of the CUDA kernels; torch-free so that nvcc compiles only CUDA code.
#pragma once

#include <cuda_runtime_api.h>

#include "kernel_args.h"

namespace exodus {

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
// fill the GPU, which launch_fast chooses where it pays (unless EXODUS_JIT_KERNELS=ring).
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
