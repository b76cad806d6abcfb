// Launchers of the CUDA kernels; torch-free so that nvcc compiles only CUDA code.
#pragma once

#include <cuda_runtime_api.h>

#include "kernel_args.h"

namespace exodus {

template <typename A> cudaError_t launch(const MembraneForwardArgs<A>& a, cudaStream_t stream);
template <typename A> cudaError_t launch(const MembraneBackwardArgs<A>& a, cudaStream_t stream);
template <typename A> cudaError_t launch(const SynapticForwardArgs<A>& a, cudaStream_t stream);
template <typename A> cudaError_t launch(const SynapticBackwardArgs<A>& a, cudaStream_t stream);

}  // namespace exodus
