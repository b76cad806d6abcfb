// The spike count's v / theta in the fast CUDA kernels, bit-identical to IEEE division without
// its per-step branch.
//
// CUDA's div.rn.f32 runs, on its fast path: r = rcp.approx(theta), refined once to y; then
// q0 = v y, rem = v - theta q0 (fma), q = q0 + y rem (fma). An FCHK instruction sends the inputs
// whose exponents it cannot vouch for to a slow subroutine. Per time step that is a reciprocal,
// seven dependent-ish instructions and a branch, which splits every unrolled chunk into basic
// blocks the compiler cannot schedule across. Here the reciprocal is computed once per neuron
// (theta is constant) with the same instructions, and each step runs the three fmas of q. Instead
// of FCHK, a step whose membrane lies outside [2^-60, 2^61) (+0 aside, which divides exactly)
// sets `unsafe`, and the caller runs the whole chunk again with IEEE division; a theta outside
// that range (or not positive) marks every chunk. Inside the ranges no quotient, remainder or
// reciprocal is subnormal or overflows, which is where the fast path is exact.
// tests/test_cuda_division.py compares it with IEEE division for every float v, for thresholds
// across the range.
#pragma once

#include <cuda_runtime.h>

namespace exodus {
namespace fast {

// theta's reciprocal as CUDA's division computes it, and whether theta is in range.
struct Reciprocal {
  float y;
  bool theta_ok;
  __device__ explicit Reciprocal(float theta) {
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(theta));
    y = fmaf(r, fmaf(-theta, r, 1.0f), r);
    theta_ok = theta > 0.f && in_range(theta);
  }
  // |x| in [2^-60, 2^61): biased exponent in [67, 187]
  __device__ static bool in_range(float x) { return ((__float_as_uint(x) >> 23) & 0xffu) - 67u <= 120u; }
};

// v / theta with the neuron's Reciprocal; or'ed into *unsafe where the result may differ from
// IEEE division (the caller then repeats the chunk with IeeeDivision). No select on the
// quotient: the three fmas are all it adds to the step's dependency chain.
struct ReciprocalDivision {
  float y;
  bool* unsafe;
  __device__ float operator()(float v, float theta) const {
    const float q0 = fmaf(v, y, 0.0f);
    const float rem = fmaf(-theta, q0, v);
    const float q = fmaf(y, rem, q0);
    // +0 comes out exactly (+0); -0 would come out +0, so it is flagged like the rest outside
    *unsafe |= !Reciprocal::in_range(v) & (__float_as_uint(v) != 0u);
    return q;
  }
};

}  // namespace fast
}  // namespace exodus
