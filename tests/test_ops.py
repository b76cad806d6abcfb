"""The ops against the pure-PyTorch reference: dtypes, shapes, strides, parameters, torch
integration (opcheck, torch.compile), errors."""

import warnings

import pytest
import torch
from hypothesis import given, settings, strategies as st

from conftest import DEVICES, cuda_kernel_names, scan_expected
from exodus_jit import ops
from exodus_jit.ops import Surrogate
from exodus_jit.ops._config import SaveKind, checkpoints
from oracle import rel_err

SURROGATES = [Surrogate.single_exponential(), Surrogate.periodic_exponential(), Surrogate.heaviside(),
              Surrogate.gaussian(), Surrogate.multi_gaussian()]


def run_both(u, v0, alpha, threshold, **kwargs):
    """(kernels result, reference result, kernel grads, reference grads) for one membrane call."""
    results, grads = [], []
    for backend in ("kernels", "reference"):
        ops.set_backend(backend)
        try:
            leaves = [t.detach().clone().requires_grad_() if isinstance(t, torch.Tensor) and t.is_floating_point() else t
                      for t in (u, v0, alpha)]
            r = ops.membrane(leaves[0], leaves[1], leaves[2], threshold, record_states=True, **kwargs)
            weights = torch.linspace(-1, 1, r.output.numel(), dtype=torch.float64, device=u.device).reshape(r.output.shape)
            loss = (r.output.double() * weights).sum() + r.v_final.double().sum() + 0.1 * r.v_rec.double().sum()
            wrt = [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad]
            grads.append(torch.autograd.grad(loss, wrt) if loss.requires_grad else ())
            results.append(r)
        finally:
            ops.set_backend(None)
    return results[0], results[1], grads[0], grads[1]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("surrogate", SURROGATES, ids=lambda s: s.kind.name)
def test_float64_matches_reference(device, surrogate):
    u = torch.randn(3, 20, 6, dtype=torch.float64, device=device) * 2
    v0 = torch.rand(3, 6, dtype=torch.float64, device=device)
    alpha = torch.full((6,), 0.8, dtype=torch.float64, device=device)
    got, ref, g_got, g_ref = run_both(u, v0, alpha, 1.0, min_v_mem=-0.5, surrogate=surrogate)
    assert torch.equal(got.output, ref.output) and torch.equal(got.v_rec, ref.v_rec)
    for a, b in zip(g_got, g_ref):
        assert rel_err(a, b) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_keep_float32_state(device, dtype):
    u = (torch.randn(2, 30, 8, device=device) * 2).to(dtype)
    v0 = torch.zeros(2, 8, device=device)
    got, ref, g_got, g_ref = run_both(u, v0, torch.tensor(0.9, device=device), 1.0, norm_input=False)
    assert got.output.dtype == dtype and got.v_final.dtype == torch.float32
    assert torch.equal(got.output, ref.output) and torch.equal(got.v_rec, ref.v_rec)
    for a, b in zip(g_got, g_ref):
        assert rel_err(a, b) < 1e-2  # the input gradient is rounded to the input's half type


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_and_per_feature_params(device):
    base = torch.randn(20, 3, 2, 5, device=device) * 2  # (T, B, C, N) -> (B, T, C, N) view
    u = base.permute(1, 0, 2, 3)
    assert not u.is_contiguous()
    v0 = torch.rand(3, 2, 5, device=device)
    alpha = torch.rand(2, 1, device=device) * 0.5 + 0.5  # per channel, broadcast over N
    threshold = torch.rand(2, 5, device=device) + 0.5  # per neuron
    got, ref, g_got, g_ref = run_both(u, v0, alpha, threshold, subtract_value=0.7)
    assert torch.equal(got.output, ref.output) and torch.equal(got.v_final, ref.v_final)
    assert g_got[2].shape == alpha.shape
    for a, b in zip(g_got, g_ref):
        assert rel_err(a, b) < 1e-5


def test_backend_environment_variable_is_read_again_by_set_backend_none(monkeypatch):
    """EXODUS_JIT_BACKEND is read at import and again by set_backend(None), not on every call:
    the layers' per-call path reads the kept value. What it names runs (the reference returns no
    kernel-written zero states), and an unknown name is refused at the call."""
    u = torch.randn(2, 5, 3)
    call = ops.MembraneCall(u, 0.9, zero_states=True)
    try:
        ops.set_backend(None)
        before = ops.get_backend()
        monkeypatch.setenv("EXODUS_JIT_BACKEND", "reference" if before == "kernels" else "kernels")
        assert ops.get_backend() == before  # not read on a call
        monkeypatch.setenv("EXODUS_JIT_BACKEND", "reference")
        ops.set_backend(None)
        assert ops.get_backend() == "reference"
        assert call(u, torch.zeros(2, 3)).v_zero is None
        ops.set_backend("kernels")  # an explicit choice wins over the variable
        assert call(u, torch.zeros(2, 3)).v_zero is not None
        monkeypatch.setenv("EXODUS_JIT_BACKEND", "bogus")
        ops.set_backend(None)
        with pytest.raises(ValueError, match="EXODUS_JIT_BACKEND must be one of"):
            ops.membrane(u, torch.zeros(2, 3), 0.9)
    finally:
        monkeypatch.undo()
        ops.set_backend(None)
    assert ops.get_backend() in ops.functional.BACKENDS


@pytest.mark.parametrize("device", DEVICES)
def test_expanded_grad_output(device):
    """grad of .sum() arrives as a stride-0 tensor; the kernels read it without copying."""
    u = (torch.randn(2, 10, 4, device=device) * 2).requires_grad_()
    out = ops.membrane(u, torch.zeros(2, 4, device=device), 0.9).output
    out.sum().backward()
    u_ref = u.detach().clone().requires_grad_()
    ops.set_backend("reference")
    try:
        ops.membrane(u_ref, torch.zeros(2, 4, device=device), 0.9).output.sum().backward()
    finally:
        ops.set_backend(None)
    assert rel_err(u.grad, u_ref.grad) < 1e-6


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_through_two_calls(device):
    """The final state of one call seeds the next; gradients cross the boundary."""
    x = (torch.randn(2, 16, 5, device=device) * 2).requires_grad_()

    def two_calls():
        first = ops.membrane(x[:, :8], torch.zeros(2, 5, device=device), 0.9, min_v_mem=-1.0)
        second = ops.membrane(x[:, 8:], first.v_final, 0.9, min_v_mem=-1.0)
        return torch.cat([first.output, second.output], 1)

    whole = ops.membrane(x, torch.zeros(2, 5, device=device), 0.9, min_v_mem=-1.0).output
    weights = torch.randn_like(whole)
    (g_whole,) = torch.autograd.grad((whole * weights).sum(), x)
    split = two_calls()
    (g_split,) = torch.autograd.grad((split * weights).sum(), x)
    assert torch.equal(whole, split)
    assert rel_err(g_split, g_whole) < 1e-6


@pytest.mark.parametrize("device", DEVICES)
def test_synaptic_current_matches_reference(device):
    x = torch.randn(3, 25, 4, device=device, dtype=torch.float64, requires_grad=True)
    i0 = torch.rand(3, 4, device=device, dtype=torch.float64, requires_grad=True)
    alpha = torch.rand(4, device=device, dtype=torch.float64).requires_grad_()
    i_all, i_final = ops.synaptic_current(x, i0, alpha)
    grads = torch.autograd.grad((i_all * i_all).sum() + i_final.sum(), (x, i0, alpha))
    i_all_ref, i_final_ref = ops.reference.synaptic_current(x, i0, alpha)
    grads_ref = torch.autograd.grad((i_all_ref * i_all_ref).sum() + i_final_ref.sum(), (x, i0, alpha))
    assert torch.equal(i_all, i_all_ref) and torch.equal(i_final, i_final_ref)
    for a, b in zip(grads, grads_ref):
        assert rel_err(a, b) < 1e-12


def _synapse_then_membrane(x, v0, i0, tau_mem, tau_syn, fused, **kwargs):
    """Outputs and gradients of a LIF with a synaptic stage: the stage fused into membrane()
    (i_syn/alpha_syn), or synaptic_current() first (as the layers did before the fusion)."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, v0, i0, tau_mem, tau_syn)]
    x_, v0_, i0_, tau_mem_, tau_syn_ = leaves
    if fused:
        r = ops.membrane(x_, v0_, ops.Decay(tau_mem_), 1.0, norm_input=True, sum_output=True, i_syn=i0_,
                         alpha_syn=ops.Decay(tau_syn_), **kwargs)
        i_final, out = r.i_final, r.output
    else:
        current, i_final = ops.synaptic_current(x_, i0_, ops.Decay(tau_syn_))
        r = ops.membrane(current, v0_, ops.Decay(tau_mem_), 1.0, norm_input=True, sum_output=True, **kwargs)
        out = r.output.to(x.dtype)  # the float32 current gives a float32 output: in the input's dtype as fused
    weights = torch.linspace(-1, 1, x.numel(), dtype=torch.float64).reshape(x.shape)
    loss = ((out.double() * weights).sum() + r.v_final.sum() + 0.5 * i_final.sum() + 0.1 * r.output_sum.sum())
    return (out, r.v_final, i_final, r.output_sum), torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("kwargs", [{}, {"min_v_mem": -0.4}, {"spike": "single", "reset": "to_value"}])
def test_fused_synapse_equals_synaptic_current_then_membrane(dtype, kwargs, kernels_backend):
    """The synaptic stage inside the membrane kernels computes what the two ops compute, to the
    bit: one arithmetic source (synapse_step / synapse_grad) serves both. CPU kernels (the CUDA
    kernels are held to these by the CUDA-vs-CPU tests); the output keeps the input's dtype."""
    x = (torch.randn(3, 29, 40) * 3).to(dtype)
    v0, i0 = torch.rand(3, 40), torch.rand(3, 40) * 0.3
    tau_mem, tau_syn = torch.tensor(6.0), torch.tensor([3.0] * 20 + [5.0] * 20)
    got, got_grads = _synapse_then_membrane(x, v0, i0, tau_mem, tau_syn, True, **kwargs)
    ref, ref_grads = _synapse_then_membrane(x, v0, i0, tau_mem, tau_syn, False, **kwargs)
    assert got[0].dtype == dtype and got[0].abs().sum() > 0
    for a, b in zip(got, ref):
        assert torch.equal(a, b)
    for a, b in zip(got_grads, ref_grads):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_threshold_requiring_grad_gets_none_and_backward_runs(device, kernels_backend):
    """Only a threshold that requires grad (nothing else): autograd records the op, backward runs
    and leaves the threshold without a gradient, as documented."""
    threshold = torch.tensor([1.0, 0.8, 1.2], device=device, requires_grad=True)
    out = ops.membrane(torch.randn(2, 5, 3, device=device) * 3, torch.zeros(2, 3, device=device), 0.9, threshold)
    assert out.output.requires_grad
    out.output.sum().backward()
    assert threshold.grad is None


TAU_SHAPES = {"scalar": (), "per neuron": (6, 7), "broadcast": (6, 1)}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau_shape", TAU_SHAPES.values(), ids=TAU_SHAPES.keys())
def test_alpha_from_tau_is_sinabs_expression_to_the_bit(device, dtype, tau_shape, kernels_backend):
    """ops.Decay(tau): the op computes alpha from tau (a kernel of its own on the GPU); one step
    of a leaky integrator from v0 = 1 without input outputs alpha itself, which must be
    torch.exp(-1.0 / tau) exactly, for taus over six decades."""
    tau = (10 ** (torch.rand(tau_shape, device=device) * 6 - 2)).requires_grad_()  # 0.01 .. 10^4
    x = torch.zeros(3, 1, 6, 7, device=device, dtype=dtype)
    v0 = torch.ones(3, 6, 7, device=device, dtype=dtype)
    out = ops.membrane(x, v0, ops.Decay(tau), spike="none").output
    expected = torch.exp(-1.0 / tau.detach()).to(dtype).expand(3, 6, 7)
    assert torch.equal(out[:, 0], expected)


def _tau_grads(x, v0, tau, weights, alpha_ofs):
    """tau's gradient of one loss through ops.membrane, for each way of making alpha from tau."""
    grads = []
    for alpha_of in alpha_ofs:
        leaf = tau.clone().requires_grad_()
        r = ops.membrane(x, v0, alpha_of(leaf), 1.0, norm_input=True)
        (g,) = torch.autograd.grad((r.output * weights.to(x.dtype)).sum() + r.v_final.sum(), leaf)
        grads.append(g)
    return grads


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau_shape", TAU_SHAPES.values(), ids=TAU_SHAPES.keys())
def test_tau_gradient_equals_autograd_through_alpha(device, dtype, tau_shape, kernels_backend):
    """tau's gradient from the op (Decay) equals autograd's through alpha = exp(-1/tau) passed as
    a tensor: on the CPU to the bit (the same operations in the same order); on the GPU, where
    the kernels compute alpha from tau and one launch sums tau's gradient (scalar and per-neuron
    tau) in an order of its own, to the rounding of that sum (the same rounding autograd's sum
    has against the float64 gradient)."""
    torch.manual_seed(0)
    x = (torch.randn(4, 30, 6, 7, device=device) * 3).to(dtype)
    v0 = torch.zeros(4, 6, 7, device=device, dtype=dtype)
    tau = torch.rand(tau_shape, device=device) * 10 + 2
    weights = torch.randn_like(x)
    decay, autograd = _tau_grads(x, v0, tau.to(dtype), weights, (ops.Decay, lambda t: torch.exp(-1.0 / t)))
    assert decay.abs().sum() > 0
    if device == "cpu" or tau_shape == TAU_SHAPES["broadcast"]:  # the latter: PyTorch's operations on the GPU too
        assert torch.equal(decay, autograd)
    else:
        (exact,) = _tau_grads(x.double(), v0.double(), tau.double(), weights, (lambda t: torch.exp(-1.0 / t),))
        bound = max(rel_err(autograd, exact), torch.finfo(dtype).eps) * 4
        assert rel_err(decay, exact) <= bound


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("features", [1, 3000, 70000])
def test_tau_gradient_sum_on_the_gpu_is_deterministic_and_exact(features, kernels_backend):
    """One tau over many neurons: the GPU sums tau's gradient in two levels (partial sums, then
    the block that finishes last adds them in index order). The same call gives the same bits
    every time, and it is as close to float64's as autograd's sum is (within 4x)."""
    torch.manual_seed(1)
    x = torch.randn(5, 20, features, device="cuda") * 3
    v0 = torch.zeros(5, features, device="cuda")
    tau = torch.tensor(7.0, device="cuda")
    weights = torch.randn_like(x)
    first, second, autograd = _tau_grads(x, v0, tau, weights, (ops.Decay, ops.Decay, lambda t: torch.exp(-1.0 / t)))
    assert torch.equal(first, second)
    (exact,) = _tau_grads(x.double(), v0.double(), tau.double(), weights, (lambda t: torch.exp(-1.0 / t),))
    assert rel_err(first, exact) <= max(rel_err(autograd, exact), torch.finfo(torch.float32).eps) * 4


def _taus_grads(x, weights, alpha_of, record_states, calls=1):
    """tau's and tau_syn's gradients of one loss through ops.membrane with a fused synaptic stage
    (alpha and alpha_syn made from the taus by alpha_of), from `calls` backwards of one graph."""
    B, _, F = x.shape
    state = torch.float64 if x.dtype == torch.float64 else torch.float32
    tau = torch.tensor(7.0, dtype=state, device=x.device, requires_grad=True)
    tau_syn = torch.tensor(3.0, dtype=state, device=x.device, requires_grad=True)
    zeros = torch.zeros(B, F, dtype=state, device=x.device)
    r = ops.membrane(x, zeros, alpha_of(tau), 1.0, norm_input=True, record_states=record_states, i_syn=zeros.clone(),
                     alpha_syn=alpha_of(tau_syn))
    loss = (r.output.to(state) * weights.to(state)).sum() + r.v_final.sum()
    return [torch.autograd.grad(loss, [tau, tau_syn], retain_graph=True) for _ in range(calls)]


def _check_taus_grads(x, weights, record_states):
    """tau's and tau_syn's gradients (_taus_grads with ops.Decay): non-zero, the same bits from a
    second backward of the graph and from a second call, each as close to float64's as autograd's
    through alpha tensors is (within 4x)."""
    first, again = _taus_grads(x, weights, ops.Decay, record_states, calls=2)
    (second,) = _taus_grads(x, weights, ops.Decay, record_states)
    (autograd,) = _taus_grads(x, weights, lambda t: torch.exp(-1.0 / t), record_states)
    (exact,) = _taus_grads(x.double(), weights, lambda t: torch.exp(-1.0 / t), record_states)
    for got, got_again, got_second, reference, truth in zip(first, again, second, autograd, exact):
        assert got.abs() > 0
        assert torch.equal(got, got_again) and torch.equal(got, got_second)
        assert rel_err(got, truth) <= max(rel_err(reference, truth), torch.finfo(torch.float32).eps) * 4


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("shape", [(3, 45, 5), (2, 20, 1000), (4, 9, 16384)], ids=["15", "2000", "65536"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("record_states", [False, True], ids=["fast_forward", "general_forward"])
def test_scalar_taus_gradients_are_summed_in_the_backward_kernel(shape, dtype, record_states, kernels_backend):
    """The fast backward sums scalar taus' gradients itself (TauSums): a partial sum per block
    (threads past the last neuron add zero), the last block to finish adds the partials in index
    order; its counter is zeroed by the forward kernel (also the general one, which records the
    states while the backward runs fast) and again by the last block. Checked: tau's and tau_syn's
    gradients as close to float64's as autograd's through alpha tensors are (within 4x), the same
    bits from a second backward of the graph and from a second call, and no launch of the
    separate sum (cuda_decay.cu) where the fast backward runs (bfloat16 data in rows of 5 or
    1000 neurons take the general kernels and the separate sum). With record_states the synaptic stage runs before the membrane
    (synaptic_current, alpha_syn from PyTorch's operations), so only tau's gradient is summed in
    the kernel."""
    torch.manual_seed(2)
    x = (torch.randn(shape, device="cuda") * 3).to(dtype)
    weights = torch.randn(shape, device="cuda")
    _check_taus_grads(x, weights, record_states)
    kernels = cuda_kernel_names(lambda: _taus_grads(x, weights, ops.Decay, record_states))
    # the fast kernels take float32 data (with record_states the membrane's input is the synaptic
    # stage's float32 current) and 2-byte data in whole warps' rows (pairs_copyable: F % 32 == 0);
    # where the general backward runs, the separate sum does
    fast = dtype == torch.float32 or record_states or shape[-1] % 32 == 0
    assert any("membrane_backward_fast" in name for name in kernels) == fast
    assert any("decay_grad" in name for name in kernels) != fast


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("shape", [(16, 500, 512), (3, 100, 70)])
def test_tau_gradient_sum_in_the_scan_backward(shape, kernels_backend):
    """The scan backward (small layers, cuda_scan_backward.cuh) sums a scalar tau's gradient in
    its kernel too: the same bits every call, as close to float64's as autograd's sum."""
    torch.manual_seed(3)
    x = torch.randn(shape, device="cuda") * 3
    v0 = torch.zeros(shape[0], shape[2], device="cuda")
    tau = torch.tensor(9.0, device="cuda")
    weights = torch.randn_like(x)
    kernels = cuda_kernel_names(lambda: _tau_grads(x, v0, tau, weights, (ops.Decay,)))
    assert any("membrane_backward_fast_scan" in name for name in kernels) == scan_expected(shape)
    assert not any("decay_grad" in name for name in kernels)
    first, second, autograd = _tau_grads(x, v0, tau, weights, (ops.Decay, ops.Decay, lambda t: torch.exp(-1.0 / t)))
    assert torch.equal(first, second)
    (exact,) = _tau_grads(x.double(), v0.double(), tau.double(), weights, (lambda t: torch.exp(-1.0 / t),))
    assert rel_err(first, exact) <= max(rel_err(autograd, exact), torch.finfo(torch.float32).eps) * 4


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("shape", [(16, 500, 512), (3, 100, 70)])
def test_taus_gradients_sum_in_the_scan_backward_with_the_synaptic_stage(shape, kernels_backend):
    """With the fused synaptic stage the scan backward also sums tau_syn's gradient in its kernel:
    tau's and tau_syn's gradients the same bits from a second backward and a second call, each as
    close to float64's as autograd's through alpha tensors (within 4x)."""
    torch.manual_seed(4)
    x = torch.randn(shape, device="cuda") * 3
    weights = torch.randn_like(x)
    kernels = cuda_kernel_names(lambda: _taus_grads(x, weights, ops.Decay, False))
    assert any("membrane_backward_fast_scan" in name for name in kernels) == scan_expected(shape)
    assert not any("decay_grad" in name for name in kernels)
    _check_taus_grads(x, weights, False)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_per_feature_tau_gradient_takes_the_separate_sum(kernels_backend):
    """A tau per feature is summed over the batch by cuda_decay.cu's launch (the in-kernel sums
    take scalar taus only), to the rounding of autograd's sum."""
    x = torch.randn(3, 30, 64, device="cuda") * 3
    v0 = torch.zeros(3, 64, device="cuda")
    tau = torch.rand(64, device="cuda") * 10 + 2
    weights = torch.randn_like(x)
    kernels = cuda_kernel_names(lambda: _tau_grads(x, v0, tau, weights, (ops.Decay,)))
    assert any("decay_grad_per_feature" in name for name in kernels)
    decay, autograd = _tau_grads(x, v0, tau, weights, (ops.Decay, lambda t: torch.exp(-1.0 / t)))
    (exact,) = _tau_grads(x.double(), v0.double(), tau.double(), weights, (lambda t: torch.exp(-1.0 / t),))
    assert rel_err(decay, exact) <= max(rel_err(autograd, exact), torch.finfo(torch.float32).eps) * 4


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_state_gradients_are_computed_only_where_asked(device, dtype, kernels_backend):
    """The C++ autograd path skips v0's and i0's gradients when the states need none (their
    allocations and stores): the other gradients are the same bits either way."""
    x = (torch.randn(3, 21, 40, device=device) * 3).to(dtype)
    v0_start, i0_start = torch.rand(3, 40, device=device, dtype=dtype), torch.rand(3, 40, device=device, dtype=dtype)
    grads = {}
    for states_grad in (True, False):
        u = x.clone().requires_grad_()
        tau, tau_syn = (torch.tensor(value, device=device, dtype=dtype, requires_grad=True) for value in (6.0, 3.0))
        v0, i0 = v0_start.clone().requires_grad_(states_grad), i0_start.clone().requires_grad_(states_grad)
        r = ops.membrane(u, v0, ops.Decay(tau), 1.0, norm_input=True, i_syn=i0, alpha_syn=ops.Decay(tau_syn))
        loss = (r.output * torch.linspace(-1, 1, x.numel(), device=device, dtype=dtype).reshape(x.shape)).sum()
        loss.backward()
        grads[states_grad] = (u.grad, tau.grad, tau_syn.grad)
        assert (v0.grad is not None and i0.grad is not None) == states_grad
        if states_grad:
            assert v0.grad.abs().sum() > 0 and i0.grad.abs().sum() > 0
    for with_states, without in zip(grads[True], grads[False]):
        assert torch.equal(with_states, without)


def test_fused_synapse_on_the_reference_backend_runs_the_two_ops():
    x, v0, i0 = (torch.randn(2, 17, 6, dtype=torch.float64) * 3, torch.rand(2, 6, dtype=torch.float64),
                 torch.rand(2, 6, dtype=torch.float64))
    tau_mem, tau_syn = torch.tensor(6.0, dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64)
    kernels, kernels_grads = _synapse_then_membrane(x, v0, i0, tau_mem, tau_syn, True)
    ops.set_backend("reference")
    try:
        reference, reference_grads = _synapse_then_membrane(x, v0, i0, tau_mem, tau_syn, True)
    finally:
        ops.set_backend(None)
    for a, b in zip(kernels, reference):
        assert torch.equal(a, b)
    for a, b in zip(kernels_grads, reference_grads):
        assert rel_err(a, b) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 0, 3), (2, 5, 0)])
def test_empty_tensors(device, shape):
    u = torch.randn(shape, device=device, requires_grad=True)
    v0 = torch.rand(shape[0], shape[2], device=device)
    r = ops.membrane(u, v0, 0.9, record_states=True)
    assert r.output.shape == shape and r.v_rec.shape == shape
    assert torch.equal(r.v_final, v0)  # no steps: the state stays
    r.output.sum().backward()
    assert u.grad.shape == shape
    # with the fused synaptic stage too: no steps leave the current as it was
    i0 = torch.rand(shape[0], shape[2], device=device, requires_grad=True)
    r = ops.membrane(u, v0, 0.9, i_syn=i0, alpha_syn=0.5)
    assert r.output.shape == shape and torch.equal(r.i_final, i0) and torch.equal(r.v_final, v0)
    g_u, g_i0 = torch.autograd.grad(r.output.sum() + r.i_final.sum(), (u, i0))
    assert g_u.shape == shape and torch.equal(g_i0, torch.ones_like(i0))  # T = 0: i_final is i0


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3), steps=st.integers(1, 12), features=st.integers(1, 9),
    alpha=st.floats(0.0, 1.0), threshold=st.floats(0.1, 3.0), scale=st.floats(0.1, 5.0),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    spike=st.sampled_from(["multi", "single", "max", "none"]),
    reset=st.sampled_from(["subtract", "to_value"]),
    min_v=st.one_of(st.none(), st.floats(-2.0, 0.0)),
    norm_input=st.booleans(),
    surrogate=st.sampled_from(SURROGATES),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_kernels_equal_reference(batch, steps, features, alpha, threshold, scale, dtype, spike,
                                          reset, min_v, norm_input, surrogate, seed):
    """Kernels and reference ops agree over random configurations: outputs and states bit-equal,
    gradients to rounding. The scalar alpha's gradient is one sum over all neurons and steps, whose
    parts can cancel to a result ~1e4 times smaller than they are (seen: 9e-4 from per-feature parts
    summing to 12.6 in magnitude, the two 6.6e-7 apart), so its bound is the same relative one plus
    a few units of rounding of the parts' magnitudes (the per-feature gradients of the same call
    with alpha given per feature): what summing them in another order can move the result by."""
    generator = torch.Generator().manual_seed(seed)  # the inputs follow the example: reproducible
    u = torch.randn(batch, steps, features, dtype=dtype, generator=generator) * scale
    v0 = torch.randn(batch, features, dtype=dtype, generator=generator) * 0.3
    options = dict(spike=spike, max_spikes=2, reset=reset, reset_value=0.1, min_v_mem=min_v, norm_input=norm_input,
                   surrogate=surrogate)
    got, ref, g_got, g_ref = run_both(u, v0, torch.tensor(alpha, dtype=dtype), threshold, **options)
    assert torch.equal(got.output, ref.output)
    assert torch.equal(got.v_rec, ref.v_rec) and torch.equal(got.v_final, ref.v_final)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for a, b in zip(g_got[:2], g_ref[:2]):
        assert rel_err(a, b) < tol
    per_feature = run_both(u, v0, torch.full((features,), alpha, dtype=dtype), threshold, **options)[3][2]
    rounding = 4 * torch.finfo(dtype).eps * per_feature.double().abs().sum().item()
    assert abs(g_got[2].item() - g_ref[2].item()) <= tol * abs(g_ref[2].item()) + rounding


def _membrane_args(device, requires_grad=True):
    u = (torch.randn(2, 6, 3, device=device) * 2).requires_grad_(requires_grad)
    v0 = torch.rand(2, 3, device=device).requires_grad_(requires_grad)
    alpha = torch.full((3,), 0.9, device=device).requires_grad_(requires_grad)
    one = torch.ones(1, device=device)
    return (u, v0, alpha, one, one, -one, 0.0, 1, 0, 0, True, 1, [0.5, 1.0], int(SaveKind.CHECKPOINTS), True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tau_shape", [(), (4,), (3, 1), (3, 4)])
def test_decay_equals_alpha_from_tau_and_follows_tau_changes(device, tau_shape, kernels_backend):
    """ops.Decay(tau) gives what passing exp(-1/tau) gives, values and tau's gradient (also for a
    tau broadcast over the features), and its cached alpha follows in-place and .data changes."""
    x = (torch.randn(2, 11, 3, 4, device=device) * 3)
    v0 = torch.zeros(2, 3, 4, device=device)
    w = torch.randn_like(x)
    tau = torch.nn.Parameter(torch.full(tau_shape, 6.0, device=device) + torch.rand(tau_shape, device=device))

    def run(alpha):
        r = ops.membrane(x, v0, alpha, 1.0, norm_input=True, sum_output=True)
        loss = (r.output * w).sum() + r.v_final.sum() + r.output_sum.sum()
        return r.output.detach(), torch.autograd.grad(loss, tau)[0]

    for change in range(3):
        out_decay, g_decay = run(ops.Decay(tau))
        out_plain, g_plain = run(torch.exp(-1.0 / tau))
        assert torch.equal(out_decay, out_plain)
        assert rel_err(g_decay, g_plain) < 1e-5 and g_decay.shape == tau.shape
        with torch.no_grad():
            if change == 0:
                tau.mul_(0.5)  # an optimizer step: the version counter moves
            else:
                tau.data = tau.data + 3.0  # a new tensor behind the parameter


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sum_out", [False, True])
def test_opcheck_membrane(device, sum_out):
    ops.membrane(torch.zeros(1, 1, 1, device=device), torch.zeros(1, 1, device=device), 0.9)  # build first
    torch.library.opcheck(torch.ops.exodus_jit.membrane.default, (*_membrane_args(device), sum_out))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_synaptic_current(device):
    args = (torch.randn(2, 6, 3, device=device, requires_grad=True), torch.rand(2, 3, device=device, requires_grad=True),
            torch.full((1,), 0.7, device=device, requires_grad=True))
    torch.library.opcheck(torch.ops.exodus_jit.synaptic_current.default, args)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_backward_ops(device):
    u, v0, alpha, one, _, minus_one, *_ = _membrane_args(device, requires_grad=False)
    ckpt = torch.randn(u.shape[0], checkpoints(u.shape[1]), u.shape[2], device=device)
    args = (torch.randn_like(u), torch.randn_like(v0), None, torch.randn_like(v0), ckpt, u, v0, alpha, one, one,
            minus_one, 0.0, 1, 0, 0, True, 1, [0.5, 1.0], None, True)
    torch.library.opcheck(torch.ops.exodus_jit.membrane_backward.default, args)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph_equals_eager(device):
    def step(x, v0, alpha):
        i_all, _ = ops.synaptic_current(x, v0, 0.8)
        r = ops.membrane(i_all, v0, alpha, 1.0, min_v_mem=-1.0, norm_input=True)
        return r.output, r.v_final

    x = (torch.randn(2, 12, 5, device=device) * 4).requires_grad_()
    v0 = torch.zeros(2, 5, device=device)
    alpha = torch.tensor(0.9, device=device, requires_grad=True)
    compiled = torch.compile(step, fullgraph=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out_c, v_c = compiled(x, v0, alpha)
    # dynamo warned at every trace that it skips the lru_cache of the ops' packed options
    assert not [str(w.message) for w in caught if "lru_cache" in str(w.message)]
    out_e, v_e = step(x, v0, alpha)
    assert torch.equal(out_c, out_e) and torch.equal(v_c, v_e)
    g_c = torch.autograd.grad((out_c * out_c).sum() + v_c.sum(), (x, alpha))
    g_e = torch.autograd.grad((out_e * out_e).sum() + v_e.sum(), (x, alpha))
    for a, b in zip(g_c, g_e):
        assert rel_err(a, b) < 1e-6


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: ops.membrane(torch.zeros(3), torch.zeros(3), 0.9), ValueError, "batch, time"),
        (lambda: ops.membrane(torch.zeros(2, 3, 4, dtype=torch.int32), torch.zeros(2, 4), 0.9), TypeError, "float32"),
        (lambda: ops.membrane(torch.zeros(2, 3, 4), torch.zeros(2, 5), 0.9), ValueError, "v0 must have shape"),
        (lambda: ops.membrane(torch.zeros(2, 3, 4), torch.zeros(3, 4), 0.9), ValueError, "v0 must have shape"),
        (lambda: ops.membrane(torch.zeros(2, 3, 4, 5), torch.zeros(3, 4, 5), 0.9), ValueError, "v0 must have shape"),
        (lambda: ops.membrane(torch.zeros(2, 3, 4, 5), torch.zeros(2, 20), 0.9), ValueError, "v0 must have shape"),
        (lambda: ops.membrane(torch.zeros(2, 3, 4), torch.zeros(2, 4), 1.5), ValueError, r"alpha must lie in \[0, 1\]"),
        (lambda: ops.membrane(torch.zeros(2, 3, 4), torch.zeros(2, 4), torch.full((3,), 0.5)), ValueError, "does not broadcast"),
        (lambda: ops.membrane(torch.zeros(2, 3, 4), torch.zeros(2, 4), 0.9, 1.0, min_v_mem=2.0), ValueError, "above min_v_mem"),
        (lambda: ops.membrane(torch.zeros(2, 3, 4), torch.zeros(2, 4), 0.9, -1.0), ValueError, "threshold must be positive"),
        (lambda: ops.membrane(torch.zeros(2, 3, 4), torch.zeros(2, 4), 0.9, spike="max", max_spikes=0), ValueError, "max_spikes"),
        (lambda: ops.membrane(torch.zeros(2, 3, 4), torch.zeros(2, 4), 0.9, surrogate="fast"), TypeError, "surrogate"),
        (lambda: ops.synaptic_current(torch.zeros(2, 3, 4), torch.zeros(3, 4), 0.5), ValueError, "i0 must have shape"),
        (lambda: ops.membrane(torch.zeros(2, 3, 4), torch.zeros(2, 4), 0.9, i_syn=torch.zeros(2, 4)), ValueError,
         "i_syn and alpha_syn go together"),
        (lambda: ops.membrane(torch.zeros(2, 3, 4), torch.zeros(2, 4), 0.9, i_syn=torch.zeros(2, 5), alpha_syn=0.5),
         ValueError, "i_syn must have shape"),
        (lambda: ops.membrane(torch.zeros(2, 3, 4), torch.zeros(2, 4), 0.9, i_syn=torch.zeros(2, 4), alpha_syn=1.5),
         ValueError, r"alpha_syn must lie in \[0, 1\]"),
        # alpha = exp(-1/tau) > 1 for a negative tau (computed inside the C++ op)
        (lambda: ops.membrane(torch.zeros(2, 3, 4), torch.zeros(2, 4), ops.Decay(torch.tensor(-2.0))), ValueError,
         r"alpha must lie in \[0, 1\]"),
        (lambda: ops.membrane(torch.zeros(2, 3, 4), torch.zeros(2, 4), 0.9, i_syn=torch.zeros(2, 4),
                              alpha_syn=ops.Decay(torch.full((4,), -2.0))), ValueError, r"alpha_syn must lie in \[0, 1\]"),
    ],
)
def test_bad_input_is_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("device", DEVICES)
def test_membrane_autograd_refuses_malformed_options(device):
    """The C++ op's packed options (MembraneOptions) are checked before anything runs: the
    layout of _registry.membrane_options, and nothing else."""
    from exodus_jit.ops import _registry

    u, v0, one = torch.zeros(2, 3, 4, device=device), torch.zeros(2, 4, device=device), torch.ones(1, device=device)
    op = _registry.membrane_autograd_op(torch.device(device))
    alpha, threshold, subtract, min_v, tau, options = _registry.membrane_autograd_args(
        one * 0.5, one, one, None, (0.0, 1, 0, 0, False), 1, [0.5, 1.0], False, True, None, (4,))
    assert torch.equal(op(u, v0, alpha, threshold, subtract, min_v, tau, options)[0], torch.zeros_like(u))
    for bad in (options.float(), options[:-1], torch.cat([options, options[-1:]]), options.to(device).view(1, -1)):
        with pytest.raises(ValueError, match="options"):
            op(u, v0, alpha, threshold, subtract, min_v, tau, bad)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("record, sum_out, syn", [(False, False, False), (True, True, False), (False, True, True)])
def test_membrane_autograd_returns_only_what_it_computes(device, record, sum_out, syn):
    """The C++ op returns None for the outputs not asked for (it allocates none), and the
    gradients of those it returns reach u as through ops.membrane's general path."""
    from exodus_jit.ops import _registry

    torch.manual_seed(0)
    u = (torch.randn(2, 7, 4, device=device) * 3).requires_grad_()
    v0, i0 = torch.zeros(2, 4, device=device), torch.zeros(2, 4, device=device)
    alpha, one = torch.full((1,), 0.8, device=device), torch.ones(1, device=device)
    op = _registry.membrane_autograd_op(torch.device(device))
    args = _registry.membrane_autograd_args(alpha, one, one, None, (0.0, 1, 0, 0, False), 1, [0.5, 1.0], record,
                                            sum_out, None, (4,))
    out, w_rec, v_final, out_sum, i_final, v_zero, i_zero = op(
        u, v0, *args, *((i0, torch.full((1,), 0.5, device=device), None) if syn else ()))
    for value, asked in ((w_rec, record), (out_sum, sum_out), (i_final, syn), (v_zero, False), (i_zero, False)):
        assert (value is None) != asked
    loss = (out * torch.linspace(-1, 1, out.numel(), device=device).reshape(out.shape)).sum() + v_final.sum()
    for value in (w_rec, out_sum, i_final):
        loss = loss if value is None else loss + 0.5 * value.sum()
    (grad,) = torch.autograd.grad(loss, u)

    ops.set_backend("reference")
    try:
        ref = ops.membrane(u, v0, alpha, 1.0, record_states=record, sum_output=sum_out,
                           **({"i_syn": i0, "alpha_syn": 0.5} if syn else {}))
    finally:
        ops.set_backend(None)
    ref_loss = (ref.output * torch.linspace(-1, 1, out.numel(), device=device).reshape(out.shape)).sum()
    ref_loss = ref_loss + ref.v_final.sum()
    for value in (ref.v_rec, ref.output_sum, ref.i_final):
        ref_loss = ref_loss if value is None else ref_loss + 0.5 * value.sum()
    (ref_grad,) = torch.autograd.grad(ref_loss, u)
    assert torch.equal(out, ref.output)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_parameters_on_another_device_are_refused():
    with pytest.raises(ValueError, match="is on"):
        ops.membrane(torch.zeros(2, 3, 4, device="cuda"), torch.zeros(2, 4), 0.9)


def test_cpu_vector_flags_follow_torchs_cpu_capability(monkeypatch):
    """The CPU kernels build with -mavx2 where torch itself runs AVX2 or AVX-512 code, and the flag
    is part of the cache key, so a CPU without it gets a build of its own."""
    from exodus_jit.jit import cache_key, key_fields
    from exodus_jit.ops import _extension

    specs = {}
    for capability in ("AVX512", "AVX2", "DEFAULT", "NEON"):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        specs[capability] = _extension.cpu_spec()
    assert [("-mavx2" in specs[c].cflags) for c in ("AVX512", "AVX2", "DEFAULT", "NEON")] == [True, True, False, False]
    assert cache_key(key_fields(specs["AVX2"])) != cache_key(key_fields(specs["DEFAULT"]))


# Runs each case on inputs made by the test (torch's own random and vectorised functions differ
# between CPU capabilities, so nothing here is computed by torch itself): alpha is a number, and
# only what the kernels compute is compared (outputs, states, sums, the input and state gradients).
_BASELINE_SCRIPT = r"""
import sys, torch
from exodus_jit import ops
from exodus_jit.ops import _extension
print("avx2" if "-mavx2" in _extension.cpu_spec().cflags else "baseline")  # the build this process loads
results = []
for (dtype, kwargs), (u, v0, g) in zip(CASES, torch.load(sys.argv[1])):
    u, v0 = u.to(dtype).requires_grad_(), v0.clone().requires_grad_()
    extra = {"i_syn": torch.zeros(v0.shape), "alpha_syn": 0.8} if kwargs.pop("syn", False) else {}
    r = ops.membrane(u, v0, 0.875, sum_output=True, norm_input=True, **kwargs, **extra)
    torch.autograd.backward([r.output, r.v_final, r.output_sum],
                            [g.to(dtype), torch.ones_like(r.v_final), torch.ones_like(r.output_sum)])
    results.append([t.detach() for t in (r.output, r.v_final, r.output_sum, u.grad, v0.grad)])
torch.save(results, sys.argv[2])
"""
_BASELINE_CASES = ("[(torch.float32, {}), (torch.float32, {'min_v_mem': -0.5}), (torch.float32, {'syn': True}), "
                   "(torch.float32, {'spike': 'max', 'max_spikes': 2, 'reset': 'to_value'}), "
                   "(torch.float32, {'spike': 'single'}), (torch.bfloat16, {}), (torch.float64, {})]")


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
                    reason="this CPU builds the baseline (SSE2) kernels already")
def test_cpu_baseline_build_gives_the_same_bits(tmp_path):
    """The kernels built for a CPU without AVX2 (ATEN_CPU_CAPABILITY=default, in a subprocess) and
    this CPU's AVX2 build give the same bits: outputs, states, output sums and the input and state
    gradients, for the plain, clipped, synaptic, max-spike/reset-to-value, single-spike, bfloat16
    and float64 loops."""
    import os
    import subprocess
    import sys

    cases = eval(_BASELINE_CASES)
    inputs = []
    for dtype, _ in cases:
        state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        inputs.append(((torch.randn(3, 37, 70, dtype=torch.float64) * 3).to(dtype),
                       torch.rand(3, 70, dtype=state_dtype), torch.randn(3, 37, 70, dtype=torch.float64)))
    torch.save(inputs, tmp_path / "inputs.pt")
    script = _BASELINE_SCRIPT.replace("CASES", _BASELINE_CASES)
    paths = {}
    for name, capability in (("avx2", None), ("baseline", "default")):
        env = dict(os.environ)
        env.pop("ATEN_CPU_CAPABILITY", None)
        if capability:
            env["ATEN_CPU_CAPABILITY"] = capability
        env["EXODUS_JIT_BACKEND"] = "kernels"
        paths[name] = tmp_path / f"{name}.pt"
        proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "inputs.pt"), str(paths[name])],
                              env=env, check=True, timeout=900, capture_output=True, text=True)
        assert proc.stdout.split()[0] == name  # each process loaded the build it is named after
    got, expected = torch.load(paths["baseline"]), torch.load(paths["avx2"])
    assert len(got) == len(expected) == len(cases)
    for case_got, case_expected in zip(got, expected):
        for a, b in zip(case_got, case_expected):
            assert a.dtype == b.dtype and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
