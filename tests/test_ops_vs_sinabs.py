"""The kernels against sinabs BPTT over the full option matrix (DESIGN.md "Conformance")."""

import itertools

import pytest
import torch
from sinabs.activation import (
    Gaussian, Heaviside, MaxSpike, MembraneReset, MembraneSubtract, MultiGaussian, MultiSpike,
    PeriodicExponential, SingleExponential, SingleSpike,
)

from conftest import DEVICES, cuda_kernel_names, needs_cuda, scan_expected
from oracle import Config, make_inputs, rel_err, run_exodus, run_sinabs

from exodus_jit import ops
from exodus_jit.ops import Surrogate

SPIKE_FNS = {"multi": MultiSpike, "single": SingleSpike, "max2": MaxSpike(2)}
RESET_FNS = {
    "subtract": MembraneSubtract(),
    "subtract0.5": MembraneSubtract(subtract_value=0.5),
    "reset0": MembraneReset(),
    "reset0.3": MembraneReset(reset_value=0.3),
}
SURROGATES = {
    "sexp": SingleExponential(),
    "pexp": PeriodicExponential(grad_width=0.7, grad_scale=0.9),
    "heavi": Heaviside(window=0.5),
    "gauss": Gaussian(mu=0.1, sigma=0.4, grad_scale=1.1),
    "mgauss": MultiGaussian(),
}

MATRIX = list(itertools.product(SPIKE_FNS, RESET_FNS, SURROGATES, [None, -0.5], [None, 5.0], [False, True], [False, True],
                                [True, False]))


def assert_same(cfg: Config, shape, device="cpu", dtype=torch.float32):
    x, v0, i0, weights = make_inputs(shape, cfg, device, dtype)
    ref = run_sinabs(cfg, x, v0, i0, weights)
    got = run_exodus(cfg, x, v0, i0, weights)
    assert torch.equal(got.out, ref.out.to(got.out.dtype)), "outputs differ"
    if cfg.record:
        assert torch.equal(got.v_rec, ref.v_rec), "recorded states differ"
    assert torch.equal(got.v_final, ref.v_final), "final states differ"
    assert rel_err(got.out_sum, ref.out_sum) < 1e-6, "output sums differ"
    if ref.i_final is not None:
        assert torch.equal(got.i_final, ref.i_final)
    assert set(got.grads) == set(ref.grads)
    for name, g_ref in ref.grads.items():
        bound = 1e-4 if name.startswith("alpha") else 1e-5
        assert rel_err(got.grads[name], g_ref) < bound, f"grad of {name}: {rel_err(got.grads[name], g_ref):.2e}"
    return ref


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spike,reset,surrogate,min_v,tau_syn,norm_input,alpha_grad,record", MATRIX)
def test_spiking_matrix(device, spike, reset, surrogate, min_v, tau_syn, norm_input, alpha_grad, record,
                        kernels_backend):
    cfg = Config(SPIKE_FNS[spike], RESET_FNS[reset], SURROGATES[surrogate], min_v, tau_syn, norm_input, alpha_grad,
                 record=record)
    ref = assert_same(cfg, (3, 27, 7), device)  # 27 steps: three whole checkpoint segments and a part
    assert ref.out.abs().sum() > 0, "the inputs should make neurons spike"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("min_v", [None, -0.2])
@pytest.mark.parametrize("norm_input", [False, True])
@pytest.mark.parametrize("alpha_grad", [False, True])
@pytest.mark.parametrize("record", [True, False])
@pytest.mark.parametrize("tau_syn", [None, 4.0])
def test_expleak(device, min_v, norm_input, alpha_grad, record, tau_syn, kernels_backend):
    cfg = Config(min_v=min_v, norm_input=norm_input, alpha_grad=alpha_grad, record=record, tau_syn=tau_syn)
    assert_same(cfg, (3, 30, 5), device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1, 1, 4), (2, 1, 3), (1, 40, 1), (2, 9, 3, 4, 5), (4, 17)])
@pytest.mark.parametrize("record", [True, False])
def test_shapes(device, shape, record, kernels_backend):
    cfg = Config(MultiSpike, MembraneSubtract(), SingleExponential(), min_v=-1.0, tau_syn=3.0, record=record)
    assert_same(cfg, shape, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("record", [True, False])
def test_iaf_alpha_one(device, record, kernels_backend):
    cfg = Config(MultiSpike, MembraneSubtract(), SingleExponential(), alpha_mem=1.0, alpha_grad=False, record=record)
    assert_same(cfg, (2, 50, 6), device)


LONG_CONFIGS = {
    "lif": {},
    "lif_minv": {"min_v_mem": -0.5},
    "reset_to_value": {"reset": "to_value", "reset_value": 0.1},
    "single_heaviside": {"spike": "single", "surrogate": Surrogate.heaviside(0.4)},
    "max_spikes": {"spike": "max", "max_spikes": 2},
    "expleak": {"spike": "none"},
    "lif_syn": {"alpha_syn": 0.8},  # the synaptic stage fused into the membrane kernels
    "lif_minv_syn": {"min_v_mem": -0.5, "alpha_syn": 0.7},
}


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("name", LONG_CONFIGS)
@pytest.mark.parametrize("shape", [(3, 203, 37), (48, 70, 1100), (3, 203, 64), (48, 70, 1024)])
def test_cuda_matches_cpu_on_long_and_wide_layers(name, shape, kernels_backend):
    """Sequences many checkpoint segments long (the GPU's prefetch ring wraps around many times)
    and layers wide enough for the GPU to choose a shallow ring: the CUDA kernels equal the CPU
    kernels, which the matrix above holds to sinabs. Features a multiple of 32 take the fast
    kernels' 16-byte copies and stores, the others 4-byte ones."""
    x = torch.randn(shape) * 4
    (out_cpu, vf_cpu, *g_cpu), (out_gpu, vf_gpu, *g_gpu) = _membrane_on_both(x, LONG_CONFIGS[name], False)
    assert torch.equal(out_gpu, out_cpu) and torch.equal(vf_gpu, vf_cpu)
    _assert_gradients_close(g_gpu, g_cpu)


def _assert_gradients_close(grads_a, grads_b):
    """_membrane_on_both's gradients (u, v0, alpha, then with the synaptic stage i0, alpha_syn and
    the final current) of one device against the other's: rel_err(a, b) within 1e-5 each, the
    final current (a value, not a gradient) equal."""
    for name, a, b in zip(("u", "v0", "alpha", "i0", "alpha_syn", "i_final"), grads_a, grads_b):
        bound = 0 if name == "i_final" else 1e-5  # i_final is a value: equal
        assert rel_err(a, b) <= bound, f"{name}: {rel_err(a, b):.2e}"


SCAN_CONFIGS = ["lif", "lif_minv", "reset_to_value", "single_heaviside", "max_spikes", "expleak", "lif_syn",
                "lif_minv_syn"]


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("name", SCAN_CONFIGS)
@pytest.mark.parametrize("shape", [(1, 64, 1), (3, 70, 37), (2, 501, 96), (16, 500, 512)])
def test_cuda_scan_backward_matches_cpu(name, shape, kernels_backend):
    """Layers too small to fill the GPU (at most one 64-neuron block per multiprocessor) and at
    least 64 steps long take the backward as a scan over time (cuda_scan_backward.cuh): ranges of
    checkpoint segments per thread, their carries chained per neuron. Its gradients equal the
    CPU kernels' within float32 rounding, also where ranges are empty (70 steps: 9 segments over
    8 ranges), a segment is partial, a block is partly filled, and with out_sum's gradient. With
    the fused synaptic stage the carry is two numbers (the current's too): i0's and alpha_syn's
    gradients likewise."""
    x = torch.randn(shape) * 4
    (out_cpu, vf_cpu, sum_cpu, *g_cpu), (out_gpu, vf_gpu, sum_gpu, *g_gpu) = _membrane_on_both(
        x, LONG_CONFIGS[name], True)
    assert torch.equal(out_gpu, out_cpu) and torch.equal(vf_gpu, vf_cpu)
    assert rel_err(sum_gpu, sum_cpu) < 1e-6
    syn = "alpha_syn" in LONG_CONFIGS[name]
    assert len(g_cpu) == (6 if syn else 3)
    _assert_gradients_close(g_cpu, g_gpu)
    u, v0 = x.cuda().requires_grad_(), torch.zeros(shape[0], shape[2], device="cuda")
    kwargs = dict(LONG_CONFIGS[name], **({"i_syn": torch.zeros_like(v0)} if syn else {}))
    names = cuda_kernel_names(lambda: ops.membrane(u, v0, 0.9, 1.0, **kwargs).output.sum().backward())
    assert any("membrane_backward_fast_scan" in n for n in names) == scan_expected(shape), names


def _membrane_on_both(x, kwargs, with_sum, devices=("cpu", "cuda")):
    """The same membrane call, loss and gradients on each device, results on the CPU: output,
    final state, the output sum (with_sum only) and the gradients of input, v0 and alpha; with
    kwargs["alpha_syn"] (a number: the fused synaptic stage) also those of i0 and alpha_syn, and
    the final current."""
    shape = x.shape
    weights = torch.randn(shape).to(x.dtype)
    v_start, i_start = torch.rand(shape[0], shape[2]), torch.rand(shape[0], shape[2]) * 0.2
    kwargs = dict(kwargs)
    alpha_syn = kwargs.pop("alpha_syn", None)
    results = []
    for device in devices:
        u = x.to(device).requires_grad_()
        v0 = v_start.to(device).requires_grad_()
        alpha = torch.full((shape[2],), 0.9, device=device).requires_grad_()
        leaves = [u, v0, alpha]
        if alpha_syn is not None:
            i0 = i_start.to(device).requires_grad_()
            a_syn = torch.full((shape[2],), alpha_syn, device=device).requires_grad_()
            kwargs.update(i_syn=i0, alpha_syn=a_syn)
            leaves += [i0, a_syn]
        r = ops.membrane(u, v0, alpha, 1.0, norm_input=True, sum_output=with_sum, **kwargs)
        loss = (r.output * weights.to(device)).float().sum() + r.v_final.sum()
        if with_sum:
            loss = loss + r.output_sum.sum()
        if alpha_syn is not None:
            loss = loss + 0.5 * r.i_final.sum()
        grads = torch.autograd.grad(loss, leaves)
        kept = (r.output, r.v_final, r.output_sum) if with_sum else (r.output, r.v_final)
        extra = () if alpha_syn is None else (r.i_final,)
        results.append([t.detach().cpu() for t in (*kept, *grads, *extra)])
    return results


class HalfWidthExponential:
    """A surrogate sinabs does not ship: runs through the PyTorch-evaluated path."""

    def __call__(self, v_mem, spike_threshold):
        return torch.exp(-torch.abs(v_mem - spike_threshold) * 2.0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reset", ["subtract", "reset0"])
@pytest.mark.parametrize("record", [True, False])
def test_custom_surrogate_callable(device, reset, record, kernels_backend):
    # without record_states, membrane() is asked for the fused synaptic stage and runs the two ops
    cfg = Config(MultiSpike, RESET_FNS[reset], HalfWidthExponential(), min_v=-0.5, tau_syn=4.0, record=record)
    assert_same(cfg, (2, 20, 6), device)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["lif", "lif_minv", "reset_to_value", "expleak", "lif_syn"])
@pytest.mark.parametrize("shape", [(4, 37, 64), (2, 150, 96), (3, 20, 40)])
def test_cuda_half_types_match_cpu(dtype, name, shape, kernels_backend):
    """2-byte data: feature counts that are multiples of 32 take the fast kernels (warps copy
    neuron pairs), others the general ones; both compute in float32 like the CPU kernels, so
    outputs and states are equal and gradients equal up to their rounding to 2 bytes."""
    x = (torch.randn(shape) * 4).to(dtype)
    (out_cpu, vf_cpu, sum_cpu, *g_cpu), (out_gpu, vf_gpu, sum_gpu, *g_gpu) = _membrane_on_both(
        x, LONG_CONFIGS[name], True)
    assert torch.equal(out_gpu, out_cpu) and torch.equal(vf_gpu, vf_cpu)
    assert rel_err(sum_gpu, sum_cpu) < 1e-6
    for name_, a, b in zip(("u", "v0", "alpha", "i0", "alpha_syn", "i_final"), g_gpu, g_cpu):
        bound = 0 if name_ == "i_final" else 2e-3  # i_final is a value (float32): equal
        assert rel_err(a, b) <= bound, f"{name_}: {rel_err(a, b):.2e}"
