// The spike count's v / theta in the fast CUDA kernels, bit-identical to IEEE division without
// its per-step branch.
//
// CUDA's div.rn.f32 runs, on its fast path: r = rcp.approx(theta), refined once to y; then
// q0 = v y, rem = v - theta q0 (fma), q = q0 + y rem (fma). An FCHK instruction sends the inputs
// whose exponents it cannot vouch for to a slow subroutine. Per time step that is a reciprocal,
// seven dependent-ish instructions and a branch, which splits every unrolled chunk into basic
// blocks the compiler cannot schedule across. Here the reciprocal is computed once per neuron
// (theta is constant) with the same instructions, and each step runs the three fmas of q.
// Instead of FCHK, a step whose membrane lies where the quotient may differ from IEEE's in a
// way the spike count shows sets `unsafe`, and the caller runs the whole chunk again with IEEE
// division; a theta outside [2^-60, 2^61) (or not positive) marks every chunk. Inside the ranges
// no quotient, remainder or reciprocal is subnormal or overflows, which is where the fast path is
// exact. tests/test_fast_kernels.py compares both forms of the count below with IEEE division's
// for every float v, for thresholds across the range.
#pragma once

#include <cuda_runtime.h>

namespace exodus {
namespace fast {

// theta's reciprocal as CUDA's division computes it, whether theta is in range, and whether it
// is a power of two there (PowerOfTwoDivision).
struct Reciprocal {
  float y;
  bool theta_ok, power_of_two;
  __device__ explicit Reciprocal(float theta) {
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(theta));
    y = fmaf(r, fmaf(-theta, r, 1.0f), r);
    theta_ok = theta > 0.f && in_range(theta) && theta < 0x1p38f;  // 2^38: see count
    power_of_two = theta_ok && is_power_of_two(theta);
  }
  // |x| in [2^-60, 2^61): biased exponent in [67, 187]
  __device__ static bool in_range(float x) { return ((__float_as_uint(x) >> 23) & 0xffu) - 67u <= 120u; }
  // +-2^k for a normal x (no mantissa bits)
  __device__ static bool is_power_of_two(float x) { return (__float_as_uint(x) & 0x7fffffu) == 0u; }
};

// sinabs' spike count (v > 0) * trunc(v / theta) with the neuron's Reciprocal: IEEE division's
// bits wherever it leaves *unsafe alone (where it sets it, the caller repeats the chunk with IEEE
// division). Two forms of the same values:
// - count: for v <= 0 the count is a zero of v's sign, v * 0, whatever the quotient (the IEEE
//   quotient is finite there, as |v| < 2^61, so its zero has v's sign too); for 0 < v < 2^-60
//   the quotient is below 1, so trunc gives +0 however its last bits round; in [2^-60, 2^61) the
//   three fmas give IEEE's quotient. trunc is two adds of fixed latency instead of FRND (which
//   waits on the short scoreboard): for 0 <= q <= 2^23, q + 2^23 rounded toward zero is
//   floor(q) + 2^23 exactly. Flagged: |q| > 2^23 and NaN, one compare off the step's chain;
//   with theta < 2^38 (else theta_ok is false) that also keeps |v| < 2^61.
// - masked_count: sinabs' expression with the fast quotient, which is IEEE's for |v| in
//   [2^-60, 2^61) and for +0; flags every other v (a six-instruction range test per step).
// The forward takes count (fewer instructions: faster at every size, kernel A/B in
// benchmarks/NOTES.md, versions 30 and 39); so does the backward's recomputation but for float32
// cells that clip (min_v), which take masked_count (with count 2-10% slower, version 39).
// Thresholds 2^k take PowerOfTwoDivision below instead, in the forward and in the backward of
// 2-byte data (version 41).

// count's trunc and flag, from a quotient equal to IEEE's
__device__ __forceinline__ float count_of_quotient(float v, float q, bool* unsafe) {
  *unsafe |= !(fabsf(q) <= 0x1p23f);
  return v > 0.f ? __fadd_rz(q, 0x1p23f) - 0x1p23f : v * 0.f;  // trunc(q) for 0 <= q <= 2^23
}

struct ReciprocalDivision {
  static constexpr bool kExactSubtract = false;  // the reset as sinabs writes it (Cell::reset)
  float y;
  bool* unsafe;
  __device__ ReciprocalDivision(float y_, bool* unsafe_) : y(y_), unsafe(unsafe_) {}
  __device__ float quotient(float v, float theta) const {
    const float q0 = fmaf(v, y, 0.0f);
    const float rem = fmaf(-theta, q0, v);
    return fmaf(y, rem, q0);
  }
  __device__ float count(float v, float theta) const { return count_of_quotient(v, quotient(v, theta), unsafe); }
  __device__ float masked_count(float v, float theta) const {
    const float q = quotient(v, theta);
    *unsafe |= !Reciprocal::in_range(v) & (__float_as_uint(v) != 0u);
    return static_cast<float>(v > 0.f) * truncf(q);
  }
};

// ReciprocalDivision with masked_count as its count (spike_count_of calls count).
struct MaskedReciprocalDivision : ReciprocalDivision {
  using ReciprocalDivision::ReciprocalDivision;
  __device__ float count(float v, float theta) const { return masked_count(v, theta); }
};

// For a threshold theta = 2^k in range (Reciprocal::power_of_two; sinabs' default 1.0 is one),
// and with a subtracting reset a subtract value 2^j in range (exact_subtract), three instructions
// fewer on each step's dependency chain, same bits:
// - the quotient is one multiply: y = 2^-k exactly, so v y and IEEE's v / theta round the same
//   real number (subnormal results too: nothing flushes to zero here); count's trunc and flag as
//   ReciprocalDivision's;
// - the reset v - s * subtract is one fma: s is a whole number of at most 2^23 where the step is
//   not flagged, and 2^-60 <= |subtract| < 2^61, so s * subtract is a zero or lies between 2^-60
//   and 2^84 in magnitude: exact, and fusing it into the subtraction leaves the subtraction's
//   single rounding (and its signs of zero).
// tests/test_fast_kernels.py checks both against IEEE arithmetic for every float v.
struct PowerOfTwoDivision {
  static constexpr bool kExactSubtract = true;
  float y;
  bool* unsafe;
  __device__ PowerOfTwoDivision(float y_, bool* unsafe_) : y(y_), unsafe(unsafe_) {}
  __device__ float quotient(float v, float) const { return __fmul_rn(v, y); }
  __device__ float count(float v, float theta) const { return count_of_quotient(v, quotient(v, theta), unsafe); }
  __device__ float subtract_spikes(float v, float s, float subtract) const { return fmaf(-s, subtract, v); }
};

// Whether a subtracting reset's value allows PowerOfTwoDivision::subtract_spikes.
__device__ __forceinline__ bool exact_subtract(float subtract) {
  return Reciprocal::in_range(subtract) && Reciprocal::is_power_of_two(subtract);
}

}  // namespace fast
}  // namespace exodus
