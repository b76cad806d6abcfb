// Asynchronous copies global -> shared memory (cp.async, sm_80+; older GPUs copy synchronously)
// and their waits, for the kernels that stage upcoming time steps in shared memory: the fast
// kernels' rings (cuda_membrane.cuh) and the scan backward's stages (cuda_scan_backward.cuh).
#pragma once

#include <cuda_runtime.h>

namespace exodus {
namespace fast {

// The copies ask L2 to fetch 256 bytes around each miss (`.L2::256B`, a hint): a warp reads a
// 128-byte (fp32) or 64-byte (2-byte data) piece of a row per step, and the neighbouring warps
// read the rest of the row's neighbourhood soon after (measured: -1.4% at fp32 16x500x16384).

// 4-byte asynchronous copy global -> shared (sm_80+); older GPUs copy synchronously. dst is
// both the generic pointer and its shared-window address (computed once per thread).
__device__ __forceinline__ void copy_async(void* dst, unsigned dst_shared, const void* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.ca.shared.global.L2::256B [%0], [%1], 4;\n" ::"r"(dst_shared), "l"(src) : "memory");
#else
  *static_cast<unsigned*>(dst) = *static_cast<const unsigned*>(src);
#endif
}

// 16-byte asynchronous copy global -> shared (to the shared-window address dst) that skips L1:
// each input is read once.
__device__ __forceinline__ void copy_async16(unsigned dst, const void* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
#else
  *static_cast<uint4*>(__cvta_shared_to_generic(dst)) = *static_cast<const uint4*>(src);
#endif
}

// 16 bytes from the shared-window address src, and to global memory.
__device__ __forceinline__ uint4 load_shared16(unsigned src) {
  uint4 v;
  asm("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(src));
  return v;
}

__device__ __forceinline__ void commit_copies() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until all but the newest `pending` groups of this thread's copies have landed.
template <int N>
__device__ __forceinline__ void wait_copies_n() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

__device__ __forceinline__ void wait_copies(int pending) {
  switch (pending) {  // the count must be an immediate; `stages` is uniform, so no divergence
    case 1: wait_copies_n<1>(); break;
    case 2: wait_copies_n<2>(); break;
    case 3: wait_copies_n<3>(); break;
    case 4: wait_copies_n<4>(); break;
    case 5: wait_copies_n<5>(); break;
    case 6: wait_copies_n<6>(); break;
    case 7: wait_copies_n<7>(); break;
    default: wait_copies_n<0>(); break;
  }
}

}  // namespace fast
}  // namespace exodus
