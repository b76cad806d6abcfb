"""The fast CUDA kernels' spike count (kernels/cuda_division.cuh) against IEEE division's for
every float, and the kernels against the reference at membrane magnitudes where that division
hands chunks back to IEEE division."""

from pathlib import Path

import pytest
import torch

from conftest import DEVICES, needs_cuda
from exodus_jit import ops
from oracle import rel_err

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RANGE_EXPONENTS = (-60, 61)  # thresholds (and, for masked_count, |v|) in [2^-60, 2^61) divide without IEEE division
THETA_LIMIT = 2.0**38  # ... and thresholds below 2^38 (count's trunc as two adds)


def _thresholds() -> torch.Tensor:
    """Float32 thresholds inside the range: its edges, around 1, and log-uniform ones."""
    def f32(x):
        return torch.tensor(x, dtype=torch.float32)

    def step(x, towards):
        return torch.nextafter(x, f32(towards))

    lo, hi = f32(2.0 ** RANGE_EXPONENTS[0]), f32(2.0 ** RANGE_EXPONENTS[1])
    one = f32(1.0)
    edges = [lo, step(lo, 1.0), step(hi, 0.0), one, step(one, 0.0), step(one, 2.0)] + [
        f32(x) for x in (0.5, 0.1, 1.0 / 3.0, 0.3, 7.0, 1e-10, 1e10, 1.5 * 2.0 ** 40)]
    random = torch.exp2(torch.empty(48, dtype=torch.float64).uniform_(*RANGE_EXPONENTS)).float()
    return torch.cat([torch.stack(edges), random.clamp(lo, step(hi, 0.0))])


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("masked", [False, True])
def test_reciprocal_division_counts_spikes_as_ieee_division_for_every_float(masked):
    """Both forms of the fast spike count (the forward's, and the float32 backward's masked one)
    give IEEE division's bits for every float membrane they do not flag, and flag exactly the
    membranes their contract names: count those whose IEEE quotient exceeds 2^23 in magnitude or
    is NaN, masked_count those outside [2^-60, 2^61) in magnitude but +0; every membrane for
    thresholds at or above 2^38."""
    compare = _division_check()
    # masked_count: v outside [2^-60, 2^61), +0 aside (it divides exactly), either sign
    outside = (256 - (RANGE_EXPONENTS[1] - RANGE_EXPONENTS[0])) * 2**24 - 1
    thetas = _thresholds()
    result = compare(thetas.cuda(), thetas.cuda(), int(masked)).cpu()
    for theta, (bad, flagged, first_bad, wrong_flags) in zip(thetas.tolist(), result.tolist()):
        assert bad == 0, f"theta {theta!r}: {bad} spike counts differ from IEEE division's, first v bits {first_bad:#x}"
        assert wrong_flags == 0, f"theta {theta!r}: {wrong_flags} steps flagged against the contract"
        if theta >= THETA_LIMIT:
            assert flagged == 2**32, f"theta {theta!r}"
        elif masked:
            assert flagged == outside, f"theta {theta!r}: {flagged} steps flagged, expected {outside}"
        else:  # at least every v of magnitude 2^24 theta or more, NaNs included
            assert flagged >= 2 * (2**31 - _bits(2.0**24 * theta)), f"theta {theta!r}"
    # thresholds outside the range (or not positive) flag every step: IEEE division throughout
    outside_thetas = torch.tensor([0.0, -1.0, 1e-30, 1e30], device="cuda")
    for theta, (bad, flagged, _, wrong_flags) in zip(outside_thetas.tolist(), compare(
            outside_thetas, outside_thetas, int(masked)).cpu().tolist()):
        assert bad == 0 and flagged == 2**32 and wrong_flags == 0, f"theta {theta!r}"


@needs_cuda
@pytest.mark.cuda
def test_power_of_two_division_counts_and_resets_as_ieee_arithmetic_for_every_float():
    """Thresholds 2^k in range (sinabs' default 1.0 among them) take a one-multiply quotient and
    a fused reset: for every float membrane they do not flag, the spike count equals IEEE
    division's and v - s * subtract (subtract 2^j in range: the threshold itself, the range's
    edges, others) equals sinabs' two roundings, signs of zeros included; they flag exactly the
    membranes whose IEEE quotient exceeds 2^23 in magnitude or is NaN."""
    compare = _division_check()
    exponents = [RANGE_EXPONENTS[0], RANGE_EXPONENTS[0] + 1, -1, 0, 1, 36, 37] + \
        torch.randint(RANGE_EXPONENTS[0], 38, (9,)).tolist()
    sub_exponents = exponents[:8] + [RANGE_EXPONENTS[0], RANGE_EXPONENTS[1] - 1] + \
        torch.randint(RANGE_EXPONENTS[0], RANGE_EXPONENTS[1], (len(exponents) - 10,)).tolist()
    thetas = torch.tensor([2.0**e for e in exponents], dtype=torch.float32)
    subtracts = torch.tensor([2.0**e for e in sub_exponents], dtype=torch.float32)
    subtracts[1::3] *= -1  # either sign
    result = compare(thetas.cuda(), subtracts.cuda(), 2).cpu()
    for theta, subtract, (bad, flagged, first_bad, wrong_flags) in zip(thetas.tolist(), subtracts.tolist(),
                                                                       result.tolist()):
        case = f"theta {theta!r}, subtract {subtract!r}"
        assert bad == 0, f"{case}: {bad} counts or resets differ from IEEE arithmetic's, first v bits {first_bad:#x}"
        assert wrong_flags == 0, f"{case}: {wrong_flags} steps flagged against the contract"
        assert flagged >= 2 * (2**31 - _bits(2.0**24 * theta)), case  # |v| >= 2^24 theta, NaNs


def _division_check():
    """The fixture's compare(thetas, subtracts, form) operator, built on first use."""
    from exodus_jit.jit import ExtensionSpec, prepare
    from exodus_jit.ops._extension import kernels_dir

    prepare(ExtensionSpec("exodus_division_check", (FIXTURES / "division_check.cu",),
                          depends=(kernels_dir() / "cuda_division.cuh",), include_dirs=(kernels_dir(),)))
    return torch.ops.exodus_division_check.compare


def _bits(x: float) -> int:
    """The bits of the float32 nearest x, as an int."""
    return int(torch.tensor(x, dtype=torch.float32).view(torch.int32))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spike", ["multi", "max"])
def test_kernels_equal_reference_at_extreme_magnitudes(device, spike):
    """Membranes from 1e-35 to 1e20 (past 2^61, where chunks fall back to IEEE division) and
    thresholds from 1e-15 to 1e25 (per neuron; past 2^61 every chunk falls back), zeros
    included: outputs and states bit-identical to the reference, gradients close."""
    B, T, F = 3, 45, 64
    u = torch.randn(B, T, F) * 10 ** torch.empty(B, T, F).uniform_(-35, 20)
    u[:, :6] = 0  # +0 membranes count +0 spikes
    u[0, 0, :5] = -0.0  # with v0 = -0 a -0 membrane, which counts -0 spikes (as sinabs)
    threshold = 10 ** torch.empty(F).uniform_(-15, 25)
    threshold[:8] = 1.0
    u, threshold = u.to(device), threshold.to(device)
    v0 = torch.zeros(B, F, device=device)
    v0[0, :5] = -0.0
    alpha = torch.tensor(0.9, device=device)
    weights = torch.randn(B, T, F, dtype=torch.float64, device=device)
    results = {}
    for backend in ("kernels", "reference"):
        ops.set_backend(backend)
        try:
            leaves = [t.clone().requires_grad_() for t in (u, v0, alpha)]
            r = ops.membrane(*leaves, threshold, spike=spike, max_spikes=1000, norm_input=True, sum_output=True)
            loss = (r.output.double() * weights).sum() + r.v_final.double().sum()
            results[backend] = (r, torch.autograd.grad(loss, leaves))
        finally:
            ops.set_backend(None)
    (got, g_got), (ref, g_ref) = results["kernels"], results["reference"]
    # to the bit, signs of zeros included
    assert torch.equal(got.output.view(torch.int32), ref.output.view(torch.int32))
    assert torch.equal(got.v_final.view(torch.int32), ref.v_final.view(torch.int32))
    assert torch.isfinite(got.output).all() and (got.output.view(torch.int32) == -2**31).any()
    for a, b in zip(g_got, g_ref):
        assert rel_err(a, b) < 1e-4


def _offset_copy(t: torch.Tensor) -> torch.Tensor:
    """t's values in a tensor whose data starts 4 bytes past a 16-byte boundary."""
    shift = 4 // t.element_size()
    buffer = torch.empty(t.numel() + shift, dtype=t.dtype, device=t.device)
    view = buffer[shift:].view(t.shape)
    view.copy_(t)
    return view


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("syn", [False, True])
@pytest.mark.parametrize("shifted", ["input", "grad"])
def test_copy_widths_give_the_same_bits(dtype, syn, shifted, kernels_backend):
    """The fast kernels copy the data of a warp 16 bytes at a time where its rows are 16-byte
    aligned (features a multiple of 32, contiguous) and 4 bytes at a time otherwise: the same
    values at a shifted address (the input, or the output gradient, so only the backward
    changes) give the same bits forward and backward. T = 45 ends on a partial chunk."""
    B, T, F = 3, 45, 96
    x = (torch.randn(B, T, F, device="cuda") * 3).to(dtype)
    grad = torch.randn(B, T, F, device="cuda").to(dtype)
    v0_start = torch.rand(B, F, device="cuda")
    results = []
    for layout in ("aligned", "shifted"):
        u = _offset_copy(x) if layout == "shifted" and shifted == "input" else x.clone()
        g = _offset_copy(grad) if layout == "shifted" and shifted == "grad" else grad.clone()
        assert (u.data_ptr() % 16 != 0) == (layout == "shifted" and shifted == "input")
        u.requires_grad_()
        v0 = v0_start.clone().requires_grad_()
        tau = torch.tensor(8.0, device="cuda", requires_grad=True)
        synapse = {"i_syn": torch.zeros(B, F, device="cuda"), "alpha_syn": 0.8} if syn else {}
        r = ops.membrane(u, v0, ops.Decay(tau), min_v_mem=-0.5, norm_input=True, sum_output=True, **synapse)
        torch.autograd.backward([r.output, r.v_final], [g, torch.ones_like(r.v_final)])
        results.append((r.output, r.v_final, r.output_sum, u.grad, v0.grad, tau.grad))
    for got, expected in zip(*results):
        assert torch.equal(got, expected)
