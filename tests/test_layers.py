"""exodus_jit.layers and conversion against sinabs layers (the oracle)."""

import copy
import io
import itertools
import pickle

import pytest
import sinabs.layers as sl
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings, strategies as st
from sinabs.activation import (
    Gaussian, Heaviside, MaxSpike, MembraneReset, MembraneSubtract, MultiGaussian, MultiSpike,
    PeriodicExponential, SingleExponential, SingleSpike,
)

import exodus_jit
from conftest import DEVICES, cuda_kernel_names
from exodus_jit import layers as el
from exodus_jit import ops
from exodus_jit.conversion import exodus_to_sinabs, sinabs_to_exodus
from oracle import rel_err

OPTIONS = list(itertools.product(
    [MultiSpike, SingleSpike, MaxSpike(3)],
    [MembraneSubtract(), MembraneSubtract(subtract_value=0.5), MembraneReset(), MembraneReset(reset_value=-0.2)],
    [None, -0.5],  # min_v_mem
    [None, 4.0],  # tau_syn
))
SURROGATES = [SingleExponential(), PeriodicExponential(), Heaviside(), Gaussian(), MultiGaussian()]


def pair(kind, device, dtype=torch.float32, **kwargs):
    """The same layer from sinabs and from exodus_jit."""
    sinabs_layer = getattr(sl, kind)(**kwargs).to(device, dtype)
    exodus_layer = getattr(el, kind)(**kwargs).to(device, dtype)
    return sinabs_layer, exodus_layer


def assert_call_equal(sinabs_layer, exodus_layer, out_s, out_e, where=""):
    """One call's outputs, states and recordings bit-equal to sinabs'."""
    assert torch.equal(out_e, out_s.to(out_e.dtype)), f"outputs differ{where}"
    for name, buffer in sinabs_layer.named_buffers():
        assert torch.equal(getattr(exodus_layer, name), buffer), f"state {name} differs{where}"
    for name, rec in getattr(sinabs_layer, "recordings", {}).items():
        assert torch.equal(exodus_layer.recordings[name], rec), f"recording {name} differs{where}"


def compare(sinabs_layer, exodus_layer, x, calls=1, grads=True):
    """Run both on x (several calls: state carried across), compare outputs, states, recordings
    and gradients of inputs and parameters."""
    xs = x.detach().clone().requires_grad_()
    xe = x.detach().clone().requires_grad_()
    loss_s = loss_e = 0
    w = torch.randn_like(x)
    for _ in range(calls):
        out_s, out_e = sinabs_layer(xs), exodus_layer(xe)
        assert_call_equal(sinabs_layer, exodus_layer, out_s, out_e)
        # exodus sums per neuron in the kernel, then over neurons: the same value up to rounding
        # (ExpLeak's outputs are signed membranes, whose mean cancels: rounding relative to |out|)
        torch.testing.assert_close(exodus_layer.firing_rate, sinabs_layer.firing_rate, rtol=1e-6,
                                   atol=1e-6 * float(out_s.detach().abs().mean()))
        # the firing rate in the loss too (as rate regularisers use it): its gradient reaches x
        loss_s = loss_s + (out_s * w).sum() + sinabs_layer.v_mem.sum() + 3.0 * sinabs_layer.firing_rate
        loss_e = loss_e + (out_e * w).sum() + exodus_layer.v_mem.sum() + 3.0 * exodus_layer.firing_rate
    if not grads:
        return
    params_s = [p for p in sinabs_layer.parameters() if p.requires_grad]
    params_e = [p for p in exodus_layer.parameters() if p.requires_grad]
    g_s = torch.autograd.grad(loss_s, [xs, *params_s], allow_unused=True)
    g_e = torch.autograd.grad(loss_e, [xe, *params_e], allow_unused=True)
    assert rel_err(g_e[0], g_s[0]) < 1e-5, rel_err(g_e[0], g_s[0])
    for a, b in zip(g_e[1:], g_s[1:]):
        if b is not None:
            assert rel_err(a, b) < 1e-4, rel_err(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spike_fn,reset_fn,min_v_mem,tau_syn", OPTIONS)
@pytest.mark.parametrize("kind", ["LIF", "IAF"])
@pytest.mark.parametrize("record_states", [True, False])  # without: tau_syn fused into the membrane kernels
def test_spiking_layers_equal_sinabs(kind, spike_fn, reset_fn, min_v_mem, tau_syn, device, record_states):
    kwargs = dict(spike_fn=spike_fn, reset_fn=reset_fn, min_v_mem=min_v_mem, tau_syn=tau_syn,
                  record_states=record_states)
    if kind == "LIF":
        kwargs["tau_mem"] = 8.0
    s, e = pair(kind, device, **kwargs)
    x = torch.randn(3, 25, 2, 4, device=device) * (4 if kind == "LIF" else 1)
    compare(s, e, x, calls=2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("surrogate", SURROGATES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("train_alphas,norm_input", [(False, True), (True, True), (True, False)])
def test_lif_surrogates_and_trainable_time_constants(device, surrogate, train_alphas, norm_input):
    s, e = pair("LIF", device, tau_mem=torch.tensor([6.0, 9.0, 12.0]), tau_syn=3.0, surrogate_grad_fn=surrogate,
                train_alphas=train_alphas, norm_input=norm_input)
    compare(s, e, torch.randn(2, 30, 3, device=device) * 4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("min_v_mem", [None, -0.3])
@pytest.mark.parametrize("norm_input", [False, True])
def test_expleak_equals_sinabs(device, min_v_mem, norm_input):
    s, e = pair("ExpLeak", device, tau_mem=torch.full((2, 1, 1), 7.0), min_v_mem=min_v_mem, norm_input=norm_input,
                record_states=True)
    compare(s, e, torch.randn(2, 20, 2, 3, 3, device=device), calls=2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind,kwargs", [("IAFSqueeze", {}), ("LIFSqueeze", {"tau_mem": 5.0, "tau_syn": 2.0}),
                                         ("ExpLeakSqueeze", {"tau_mem": 5.0, "min_v_mem": -0.1})])
def test_squeeze_variants(device, kind, kwargs):
    s, e = pair(kind, device, batch_size=3, **kwargs)
    compare(s, e, torch.randn(3 * 12, 2, 4, 4, device=device) * 3)
    s2, e2 = pair(kind, device, num_timesteps=12, **kwargs)
    compare(s2, e2, torch.randn(2 * 12, 5, device=device) * 3)


@pytest.mark.parametrize("device", DEVICES)
def test_per_neuron_threshold_and_min_v(device):
    threshold = torch.rand(4) + 0.5
    s, e = pair("LIF", device, tau_mem=10.0, spike_threshold=threshold, min_v_mem=-threshold)
    compare(s, e, torch.randn(2, 20, 4, device=device) * 5)


@pytest.mark.parametrize("device", DEVICES)
def test_float64(device):
    s, e = pair("LIF", device, torch.float64, tau_mem=10.0, tau_syn=5.0, min_v_mem=-1.0)
    x = torch.randn(2, 20, 6, device=device, dtype=torch.float64) * 4
    out_e = e(x)
    out_s = s(x)
    assert out_e.dtype == torch.float64 and torch.equal(out_e, out_s.double())
    assert torch.equal(e.v_mem, s.v_mem)


def test_batch_size_change_and_reset_states():
    s, e = pair("LIF", "cpu", tau_mem=10.0)
    x = torch.randn(4, 10, 3) * 4
    compare(s, e, x, grads=False)
    torch.manual_seed(1)
    out_s = s(x[:2])  # sinabs samples states of the old batch randomly
    torch.manual_seed(1)
    out_e = e(x[:2])
    assert torch.equal(out_e, out_s) and e.v_mem.shape == (2, 3)
    e(x[:2].clone().requires_grad_())  # states with an autograd graph
    e.reset_states()
    assert torch.count_nonzero(e.v_mem) == 0 and e.v_mem.grad_fn is None and not e.v_mem.requires_grad
    e.reset_states(randomize=True, value_ranges={"v_mem": (2.0, 3.0)})  # sinabs' own
    assert bool(((e.v_mem >= 2.0) & (e.v_mem <= 3.0)).all()) and e.v_mem.grad_fn is None
    compare(s, e, torch.randn(3, 10, 5) * 4, grads=False)  # new trailing shape: states re-initialised


def test_state_gradient_across_calls_and_zero_grad():
    e = el.LIF(tau_mem=10.0)
    x = (torch.randn(2, 10, 3) * 4).requires_grad_()
    e(x[:, :5])
    out = e(x[:, 5:])
    out.sum().backward()
    assert x.grad[:, :5].abs().sum() > 0  # the gradient crossed the call boundary through v_mem
    e.zero_grad()
    assert e.v_mem.grad_fn is None


def _set_data(tensor, value):
    tensor.data = torch.full_like(tensor.data, value)  # new storage: not an in-place change


# Changes a user may make between calls, each applied to both layers; the layers keep their
# resolved membrane call (ops.MembraneCall) between calls, so each must show in the next call.
CHANGES = {
    "nothing": lambda l: None,
    "tau_mem via .data (untracked)": lambda l: l.tau_mem.data.mul_(0.5),
    "tau_syn in place": lambda l: torch.nn.init.constant_(l.tau_syn, 2.0),
    "threshold via .data": lambda l: l.spike_threshold.data.fill_(0.7),
    "threshold new storage": lambda l: _set_data(l.spike_threshold, 1.3),
    "norm_input": lambda l: setattr(l, "norm_input", False),
    "min_v_mem": lambda l: setattr(l, "min_v_mem", torch.nn.Parameter(torch.tensor(-0.5), requires_grad=False)),
    "min_v_mem via .data": lambda l: l.min_v_mem.data.fill_(-0.2),
    "tau_mem without gradient": lambda l: l.tau_mem.requires_grad_(False),
    "record_states": lambda l: setattr(l, "record_states", True),
    "spike_fn": lambda l: setattr(l, "spike_fn", SingleSpike),
    "optimizer step": lambda l: torch.optim.SGD(l.parameters(), lr=0.02).step() if l.tau_mem.grad is not None else None,
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tau_syn", [5.0, None], ids=["tau_syn", "direct_call"])
def test_changes_between_calls_show_in_the_next_call(device, tau_syn):
    """Whatever changes between calls (also through .data, which version counters miss) is in
    the next call's outputs, states and gradients, as in sinabs; also in float64. Without
    tau_syn the layer takes MembraneCall's direct path to the C++ op."""
    s, e = pair("LIF", device, tau_mem=10.0, tau_syn=tau_syn)
    for name, change in CHANGES.items():
        if tau_syn is None and "tau_syn" in name:
            continue
        if name == "optimizer step":  # the same step for both: our gradients are BPTT's to
            # float32 rounding, not to the bit, and an ulp in a parameter shows in float64 below
            ours = dict(e.named_parameters())
            for key, p in s.named_parameters():
                ours[key].grad = None if p.grad is None else p.grad.clone()
        for layer in (s, e):
            change(layer)
            layer.reset_states()
        x = torch.randn(2, 12, 4, device=device) * 4
        compare(s, e, x)
        for layer in (s, e):  # the gradients the optimizer step uses
            layer.zero_grad()
            layer.reset_states()
            layer(x.clone().requires_grad_()).sum().backward()
    ops.set_backend("reference")  # the kept call picks the backend per call
    try:
        for layer in (s, e):
            layer.reset_states()
        compare(s, e, torch.randn(2, 12, 4, device=device) * 4)
    finally:
        ops.set_backend(None)
    s, e = s.double(), e.double()  # (sinabs' output is float32 here; ours keeps the input's dtype)
    for layer in (s, e):
        layer.tau_mem.data.fill_(3.0)
        layer.reset_states()
    x = torch.randn(2, 12, 4, device=device, dtype=torch.float64) * 4
    assert torch.equal(e(x), s(x).double()) and torch.equal(e.v_mem, s.v_mem)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind, kwargs", [("LIF", {"tau_mem": 10.0}), ("IAF", {}), ("ExpLeak", {"tau_mem": 10.0}),
                                          ("LIF", {"tau_mem": 10.0, "tau_syn": 5.0})])
def test_layers_keep_their_membrane_call(device, kind, kwargs):
    """A layer resolves its membrane call once and keeps it while nothing changes (on a GPU too:
    IAF's alpha, a new CPU tensor(1.) per call in sinabs, must not make it rebuild per call)."""
    layer = getattr(el, kind)(**kwargs).to(device)
    x = torch.randn(2, 6, 4, device=device)
    layer(x)
    held = layer.__dict__["_exodus_call"]
    layer.reset_states()
    layer(x)
    assert layer.__dict__["_exodus_call"] is held


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind, kwargs, plain", [
    ("LIF", {"tau_mem": 8.0}, True), ("LIF", {"tau_mem": 8.0, "tau_syn": 3.0}, True),
    ("LIF", {"tau_mem": 8.0, "min_v_mem": -0.5, "spike_fn": SingleSpike}, True), ("IAF", {}, True),
    ("ExpLeak", {"tau_mem": 8.0}, True),
    # not plain: steps run around the membrane's operator (recordings, the input's own decay)
    ("LIF", {"tau_mem": 8.0, "tau_syn": 3.0, "record_states": True}, False),
    ("ExpLeak", {"tau_mem": 8.0, "decay_early": True}, False),
])
@pytest.mark.parametrize("shape", [(3, 9, 5), (3, 9, 2, 3)])
def test_kept_call_path_equals_sinabs(device, kind, kwargs, plain, shape):
    """The layers' per-call path for a kept call (_forward_kept) runs where nothing runs around
    the membrane's operator and the states have the input's shape, and gives sinabs' outputs and
    states over calls that carry the states, reset them and change the batch size (sinabs'
    state handling, which that path leaves to the general one), and sinabs' gradients."""
    kwargs = dict(kwargs)  # (parametrize shares the dict)
    decay_early = kwargs.pop("decay_early", None)
    s, e = pair(kind, device, **kwargs)
    if decay_early is not None:  # sinabs' ExpLeak has no decay_early: the input decays itself
        e.decay_early = decay_early
    taken = []
    kept = e._forward_kept

    def spy(*args):
        output = kept(*args)
        taken.append(output is not None)
        return output

    e.__dict__["_forward_kept"] = spy
    x = torch.randn(shape, device=device) * 4
    xs, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss_s = loss_e = 0
    for step, (reset, batch) in enumerate([(False, 3), (False, 3), (True, 3), (True, 2), (False, 2), (True, 2)]):
        if reset:  # backward first: sinabs' reset detaches the states in place, which its graph saved
            loss_s.backward()
            loss_e.backward()
            loss_s = loss_e = 0
            s.reset_states()
            e.reset_states()
        u_s, u_e = xs[:batch] * (step + 1) / 3, xe[:batch] * (step + 1) / 3
        if kind == "ExpLeak" and decay_early:
            u_s = u_s * s.alpha_mem_calculated
        out_s, out_e = s(u_s), e(u_e)
        assert_call_equal(s, e, out_s, out_e, f" at call {step}")
        loss_s = loss_s + (out_s * out_s.detach().cos()).sum() + s.v_mem.sum()
        loss_e = loss_e + (out_e * out_e.detach().cos()).sum() + e.v_mem.sum()
    loss_s.backward()
    loss_e.backward()
    # calls with a kept call: all but the first; the fourth resizes the states first
    assert taken == ([True, True, False, True, True] if plain else [])
    for a, b in zip([xe, *e.parameters()], [xs, *s.parameters()]):
        if b.requires_grad:
            assert rel_err(a.grad, b.grad) < 1e-5, rel_err(a.grad, b.grad)


@st.composite
def layer_configs(draw):
    """A sinabs layer's name and keyword arguments, over the options exodus-jit supports."""
    kind = draw(st.sampled_from(["LIF", "IAF", "ExpLeak"]))
    kwargs = {"min_v_mem": draw(st.sampled_from([None, -0.5])),
              "record_states": draw(st.booleans())}
    if kind != "IAF":
        kwargs["tau_mem"] = draw(st.floats(1.5, 20.0))
        kwargs["norm_input"] = draw(st.booleans())
        kwargs["train_alphas"] = draw(st.booleans())
    if kind != "ExpLeak":
        # thresholds exact in float32: sinabs computes a float64 layer's reset product in float32
        # (its output is float32 too), which only such thresholds keep exact
        kwargs["spike_threshold"] = torch.tensor(draw(st.sampled_from([0.5, 1.0, 1.75])))
        kwargs["spike_fn"] = draw(st.sampled_from([MultiSpike, SingleSpike, MaxSpike(2)]))
        kwargs["reset_fn"] = draw(st.sampled_from([MembraneSubtract(), MembraneSubtract(subtract_value=0.5),
                                                   MembraneReset(), MembraneReset(reset_value=-0.2)]))
        kwargs["tau_syn"] = draw(st.sampled_from([None, 3.0]))
    return kind, kwargs


# one call of a sequence: (reset the states first, batch size, steps, input scale)
CALLS = st.lists(st.tuples(st.booleans(), st.integers(1, 3), st.integers(1, 7), st.floats(0.5, 6.0)),
                 min_size=1, max_size=5)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=layer_configs(), neurons=st.sampled_from([(4,), (2, 2, 3)]), calls=CALLS,
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_property_layer_call_sequences_equal_sinabs(device, config, neurons, calls, dtype):
    """Any supported layer configuration, over any sequence of calls that carry the states, reset
    them, change the batch size (sinabs then draws the new states at random: both draw from the
    same seed) or the number of steps: outputs, states and recordings bit-equal to sinabs at each
    call, gradients equal to sinabs BPTT's at the end: every input's, and in float64 every
    trainable parameter's too (a parameter's gradient is one sum over all neurons and steps,
    whose float32 rounding under cancellation can exceed any fixed relative bound). The float64
    bounds are 1e-6 for inputs and 1e-4 for parameters, not float64's rounding: sinabs' float64
    gradients are not exact (one IAF step: 3.6e-8 and 5.8e-8 off the analytic value, which ours
    equal to the last bit), and a parameter's sum magnifies that (1.8e-6 seen)."""
    torch.manual_seed(0)  # each example its own inputs (the fixture seeds once per test)
    kind, kwargs = config
    s, e = pair(kind, device, dtype, **kwargs)
    inputs_s, inputs_e = [], []
    loss_s = loss_e = 0
    for step, (reset, batch, steps, scale) in enumerate(calls):
        if reset:  # backward first: sinabs' reset detaches the states in place, which its graph saved
            if inputs_s:
                loss_s.backward()
                loss_e.backward()
            loss_s = loss_e = 0
            s.reset_states()
            e.reset_states()
        x = torch.randn(batch, steps, *neurons, device=device, dtype=dtype) * scale
        x_s, x_e = x.clone().requires_grad_(), x.clone().requires_grad_()
        inputs_s.append(x_s)
        inputs_e.append(x_e)
        torch.manual_seed(step)
        out_s = s(x_s)
        torch.manual_seed(step)
        out_e = e(x_e)
        assert_call_equal(s, e, out_s, out_e, f" at call {step}")
        w = torch.randn_like(x)
        loss_s = loss_s + (out_s * w).sum() + s.v_mem.sum()
        loss_e = loss_e + (out_e * w).sum() + e.v_mem.sum()
    loss_s.backward()
    loss_e.backward()
    for a, b in zip(inputs_e, inputs_s):
        assert rel_err(a.grad, b.grad) < (1e-5 if dtype == torch.float32 else 1e-6), rel_err(a.grad, b.grad)
    if dtype == torch.float64:
        for a, b in zip(e.parameters(), s.parameters()):
            if b.requires_grad and b.grad is not None:
                assert rel_err(a.grad, b.grad) < 1e-4, (a.grad, b.grad)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(3, 9, 5), (3, 9, 2, 3)])
@pytest.mark.parametrize("tau_syn", [None, 3.0])
def test_direct_call_equals_the_general_path(device, shape, tau_syn):
    """MembraneCall's direct path to the C++ op gives the general path's (_run's) outputs, states
    and gradients to the bit, with the fused synaptic stage too (its states carried over a second
    call without reset)."""
    x = torch.randn(shape, device=device) * 4
    runs = []
    for direct in (True, False):
        layer = el.LIF(tau_mem=torch.full(shape[2:], 8.0), tau_syn=tau_syn).to(device)
        layer(x)  # resolves and keeps the call
        call = layer.__dict__["_exodus_call"][1]
        assert call._direct
        call._direct = direct
        layer.reset_states()
        xg = x.clone().requires_grad_()
        out = torch.cat([layer(xg), layer(xg * 0.5)], 1)
        (out * torch.linspace(-1, 1, out.numel(), device=device).reshape(out.shape)).sum().backward()
        runs.append((out, layer.v_mem, layer.firing_rate, xg.grad, layer.tau_mem.grad,
                     *((layer.i_syn, layer.tau_syn.grad) if tau_syn else ())))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind, kwargs, shape, fresh", [
    ("LIF", {"tau_mem": 10.0}, (3, 9, 5), True),
    ("LIF", {"tau_mem": 10.0, "tau_syn": 4.0}, (3, 9, 2, 3), True),
    ("IAF", {"min_v_mem": -0.5}, (3, 9, 5), True),
    ("ExpLeak", {"tau_mem": 10.0}, (3, 9, 5), True),
    # the synaptic stage runs first (not fused): no zeros for i_syn, so none taken
    ("LIF", {"tau_mem": 10.0, "tau_syn": 4.0, "record_states": True}, (3, 9, 5), False),
])
def test_reset_after_forward_takes_the_kernels_zeros(device, kind, kwargs, shape, fresh, kernels_backend):
    """After a forward on the compiled kernels, reset_states makes the states the zeros the
    forward kernel wrote beside the final states: fresh tensors (the states before keep their
    values), zero although their memory held NaN just before, without autograd history; then the
    layer goes on as sinabs' after its reset. Where a state's zeros did not come (the synaptic
    stage not fused), reset_states zeroes the states in place, as sinabs does."""
    s, e = pair(kind, device, **kwargs)
    x = torch.randn(shape, device=device) * 4
    compare(s, e, x, grads=False)
    # garbage in the memory the next forward's small allocations are likely to take
    del [torch.full(shape[:1] + shape[2:], float("nan"), device=device) for _ in range(16)][:]
    xg = x.clone().requires_grad_()
    e(xg)
    s(x)
    before = dict(e.named_buffers())
    values = {name: b.detach().clone() for name, b in before.items()}
    e.reset_states()
    s.reset_states()
    for name, state in e.named_buffers():
        assert torch.equal(state, torch.zeros_like(values[name])), name
        assert not state.requires_grad and state.grad_fn is None
        assert (state is not before[name]) == fresh
        if fresh:
            assert torch.equal(before[name], values[name])
    compare(s, e, torch.randn(shape, device=device) * 4)


@pytest.mark.parametrize("device", DEVICES)
def test_reset_takes_no_zeros_of_another_shape_or_dtype(device, kernels_backend):
    """The forward's zeros are taken only while they match the states: states given a new shape,
    or converted to float64, after the forward are zeroed as they are now."""
    e = el.LIF(tau_mem=10.0).to(device)
    e(torch.randn(2, 6, 4, device=device))
    e.v_mem = torch.ones(5, 3, device=device)
    e.reset_states()
    assert torch.equal(e.v_mem, torch.zeros(5, 3, device=device))
    e(torch.randn(5, 6, 3, device=device))
    e.double()
    e.reset_states()
    assert e.v_mem.dtype == torch.float64 and torch.equal(e.v_mem, torch.zeros(5, 3, device=device).double())
    e(torch.randn(5, 6, 3, device=device, dtype=torch.float64))
    e.reset_states(randomize=True, value_ranges={"v_mem": (2.0, 3.0)})  # sinabs' own, zeros unused
    assert bool(((e.v_mem >= 2.0) & (e.v_mem <= 3.0)).all())
    e.reset_states()
    assert torch.count_nonzero(e.v_mem) == 0


def test_reset_after_an_inference_mode_forward_is_sinabs():
    """Zeros from a forward in inference mode become the states at a reset in inference mode;
    outside it they are not taken (autograd could not save them for a backward), and the reset
    refuses the inference-mode states as sinabs' reset does."""
    s, e = pair("LIF", "cpu", tau_mem=10.0)
    x = torch.randn(2, 5, 3) * 4
    with torch.inference_mode():
        e(x)
        e.reset_states()
        assert torch.count_nonzero(e.v_mem) == 0
        compare(s, e, x, grads=False)
    errors = []
    for layer in (s, e):
        with pytest.raises(RuntimeError, match="inference tensor") as error:
            layer.reset_states()
        errors.append(str(error.value))
    assert errors[0] == errors[1]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("tau_syn", [None, 5.0])
def test_reset_after_forward_launches_nothing(tau_syn, kernels_backend):
    """reset_states after a forward takes the kernel's zeros: no launch; a second reset (no fresh
    zeros left) launches its fill."""
    layer = el.LIF(tau_mem=10.0, tau_syn=tau_syn).cuda()
    x = torch.randn(4, 20, 300, device="cuda") * 3
    layer(x)
    assert cuda_kernel_names(layer.reset_states) == []
    assert torch.count_nonzero(layer.v_mem) == 0
    assert cuda_kernel_names(layer.reset_states) != []


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tau_syn", [None, 4.0])
def test_states_in_the_neuron_shape_are_not_copied(device, tau_syn, kernels_backend, monkeypatch):
    """On (B, T, C, H, W) data the C++ operator returns the final states and the per-neuron
    output sums in the neuron shape: the layer keeps the states as they are (no copy, which would
    be a launch per state and call) and they are no views (sinabs' reset_states detaches them in
    place, randomize included). Outputs, states and the gradients through v_mem, i_syn and
    firing_rate stay sinabs'."""
    s, e = pair("LIF", device, tau_mem=10.0, tau_syn=tau_syn)
    x = torch.randn(3, 9, 2, 3, 4, device=device) * 4
    e(x)  # resolves and keeps the call
    copies = []
    clone = torch.Tensor.clone
    monkeypatch.setattr(torch.Tensor, "clone", lambda t, *a, **k: copies.append(t.shape) or clone(t, *a, **k))
    e.reset_states()
    e(x)
    monkeypatch.undo()
    assert copies == []
    for state in e.buffers():
        assert state._base is None and state.shape == (3, 2, 3, 4)
    e.reset_states(randomize=True)  # sinabs' own: detach_ in place
    for layer in (s, e):
        layer.reset_states()
    compare(s, e, x)  # the loss reads v_mem and firing_rate
    if tau_syn:
        grads = []
        for layer in (s, e):
            layer.reset_states()
            xg = x.clone().requires_grad_()
            layer(xg)
            grads.append(torch.autograd.grad(layer.i_syn.pow(2).sum(), xg)[0])
        assert rel_err(grads[1], grads[0]) < 1e-6


def test_synaptic_layer_call_takes_the_direct_path(monkeypatch):
    """A LIF with tau_syn (fused synaptic stage) reaches the C++ op without MembraneCall's general
    path (its per-call checks cost host time on every call)."""
    layer = el.LIF(tau_mem=10.0, tau_syn=5.0)
    layer(torch.randn(2, 5, 3))

    def general_path(*args, **kwargs):
        raise AssertionError("took the general path")

    monkeypatch.setattr(ops.MembraneCall, "_run", general_path)
    layer.reset_states()
    layer(torch.randn(2, 5, 3))
    layer(torch.randn(2, 5, 3))  # states carried over


@pytest.mark.parametrize("device", DEVICES)
def test_tau_changed_through_data_in_the_ops(device):
    """ops.Decay(tau): alpha comes from tau's values at every call, however they changed."""
    tau = torch.tensor([4.0, 8.0, 2.0], device=device, requires_grad=True)
    x, v0 = torch.randn(2, 10, 3, device=device) * 3, torch.zeros(2, 3, device=device)
    for value in (4.0, 1.5):
        tau.data.fill_(value)
        got = ops.membrane(x, v0, ops.Decay(tau), 1.0, norm_input=True).output
        expected = ops.membrane(x, v0, torch.exp(-1.0 / tau.detach()), 1.0, norm_input=True).output
        assert torch.equal(got, expected)


def test_deepcopy_state_dict_and_arg_dict():
    e = el.LIF(tau_mem=torch.tensor([5.0, 6.0]), tau_syn=2.0, decay_early=False, record_states=True)
    e(torch.randn(2, 5, 2))
    clone = copy.deepcopy(e)
    assert isinstance(clone, el.LIF) and clone.decay_early is False
    assert torch.equal(clone.v_mem, e.v_mem) and torch.equal(clone.tau_mem, e.tau_mem)
    fresh = el.LIF(**e.arg_dict)
    fresh.load_state_dict(e.state_dict())
    x = torch.randn(2, 5, 2)
    assert torch.equal(fresh(x), e(x))
    assert repr(e).startswith("EXODUS LIF")
    assert isinstance(e, sl.LIF) and isinstance(el.IAFSqueeze(batch_size=1), sl.IAFSqueeze)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind, kwargs", [("LIF", {"tau_mem": 10.0}), ("LIF", {"tau_mem": 10.0, "tau_syn": 4.0}),
                                          ("IAF", {"min_v_mem": -0.5}), ("ExpLeak", {"tau_mem": 10.0})])
def test_layers_pickle_after_a_forward(device, kind, kwargs, kernels_backend):
    """torch.save(model) and pickle work after forward and backward passes, when the layer holds
    its kept call (the compiled operator's handles, which do not pickle) and the kernel's zeros:
    the copy carries the parameters and states, leaves those caches out, and goes on as sinabs
    does, from the carried states and after a reset."""
    s, e = pair(kind, device, **kwargs)
    compare(s, e, torch.randn(2, 7, 3, device=device) * 4, calls=2)
    assert "_exodus_call" in e.__dict__  # what the copy must leave out
    buffer = io.BytesIO()
    torch.save(e, buffer)
    buffer.seek(0)
    for copied in (torch.load(buffer, weights_only=False), pickle.loads(pickle.dumps(e))):
        assert type(copied) is type(e) and "_exodus_call" not in copied.__dict__
        for name, state in e.named_buffers():
            assert torch.equal(getattr(copied, name), state)
        s_copy = copy.deepcopy(s)
        compare(s_copy, copied, torch.randn(2, 7, 3, device=device) * 4)
        s_copy.reset_states()
        copied.reset_states()
        compare(s_copy, copied, torch.randn(2, 7, 3, device=device) * 4)


@pytest.mark.parametrize("device", DEVICES)
def test_to_device_and_double(device):
    e = el.IAF(tau_syn=3.0).to(device).double()
    out = e(torch.randn(2, 5, 3, device=device, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.device.type == device


def test_decay_early_false_integrates_late():
    e = el.LIF(tau_mem=10.0, tau_syn=5.0, decay_early=False, record_states=True)
    x = torch.zeros(1, 3, 1)
    x[0, 0, 0] = 1.0
    e(x)
    alpha = torch.exp(torch.tensor(-1 / 5.0))
    assert torch.allclose(e.recordings["i_syn"][0, :, 0], torch.stack([torch.tensor(1.0), alpha, alpha**2]))
    leak = el.ExpLeak(tau_mem=10.0, decay_early=True, record_states=True)
    leak(x)
    assert torch.isclose(leak.recordings["v_mem"][0, 0, 0], torch.exp(torch.tensor(-0.1)))


class Membrane2x:
    """A reset_fn exodus-jit does not know."""

    def __call__(self, spikes, state, threshold):
        return {**state, "v_mem": state["v_mem"] * 0.5}


def test_unsupported_options_raise_not_implemented():
    class CustomSpike(torch.autograd.Function):
        required_states = ["v_mem"]

    with pytest.raises(NotImplementedError, match="MultiSpike, SingleSpike, MaxSpike"):
        el.LIF(tau_mem=5.0, spike_fn=CustomSpike)
    with pytest.raises(NotImplementedError, match="MembraneSubtract"):
        el.IAF(reset_fn=Membrane2x())
    with pytest.raises(NotImplementedError):
        el.LIFSqueeze(tau_mem=5.0, batch_size=1, reset_fn=Membrane2x())


def conv_snn(device):
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), sl.IAFSqueeze(batch_size=2, min_v_mem=-1.0), nn.AvgPool2d(2),
        nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), sl.LIFSqueeze(tau_mem=8.0, tau_syn=4.0, batch_size=2)),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 10), sl.ExpLeakSqueeze(tau_mem=5.0, batch_size=2),
    ).to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_conversion_round_trip_keeps_parameters_states_and_outputs(device):
    model = conv_snn(device)
    x = torch.rand(2 * 10, 2, 8, 8, device=device) * 3
    model(x)  # non-zero states, for the conversion to carry over
    states = {n: b.clone() for n, b in model.named_buffers()}
    params = dict(model.named_parameters())

    exodus_model = sinabs_to_exodus(copy.deepcopy(model))
    assert isinstance(exodus_model[1], el.IAFSqueeze) and isinstance(exodus_model[3][1], el.LIFSqueeze)
    assert isinstance(exodus_model[6], el.ExpLeakSqueeze)
    for name, buffer in exodus_model.named_buffers():
        assert torch.equal(buffer, states[name]) and buffer.device.type == device
    for name, p in exodus_model.named_parameters():
        assert torch.equal(p, params[name])
    for m in (model, exodus_model):
        for layer in m.modules():
            if isinstance(layer, sl.StatefulLayer):
                layer.reset_states()
    assert torch.equal(exodus_model(x), model(x))

    back = exodus_to_sinabs(exodus_model)
    assert type(back[1]) is sl.IAFSqueeze and type(back[3][1]) is sl.LIFSqueeze
    for m in (model, back):
        for layer in m.modules():
            if isinstance(layer, sl.StatefulLayer):
                layer.reset_states()
    assert torch.equal(back(x), model(x))


def test_conversion_keeps_trained_alphas_and_warns_on_unconvertible():
    lif = sl.LIF(tau_mem=10.0, train_alphas=True)
    with torch.no_grad():
        lif.alpha_mem.fill_(0.8123)
    custom = sl.IAF(reset_fn=Membrane2x())
    model = nn.Sequential(lif, custom)
    with pytest.warns(UserWarning, match="kept as sinabs layer"):
        converted = sinabs_to_exodus(model)
    assert isinstance(converted[0], el.LIF) and converted[0].alpha_mem.item() == pytest.approx(0.8123)
    assert converted[1] is custom
    late = nn.Sequential(el.LIF(tau_mem=5.0, decay_early=False))
    with pytest.warns(UserWarning, match="no sinabs equivalent"):
        assert isinstance(exodus_to_sinabs(late)[0], el.LIF)


@pytest.mark.parametrize("device", DEVICES)
def test_training_matches_sinabs_step_by_step(device):
    """A few optimizer steps of a small conv SNN: the same losses as sinabs within rounding."""
    sinabs_model = conv_snn(device)
    exodus_model = sinabs_to_exodus(copy.deepcopy(sinabs_model))
    x = torch.rand(2 * 10, 2, 8, 8, device=device) * 3
    target = torch.randint(0, 10, (2,), device=device)
    losses = []
    for model in (sinabs_model, exodus_model):
        opt = torch.optim.SGD(model.parameters(), lr=0.002)
        history = []
        for _ in range(4):
            for layer in model.modules():
                if isinstance(layer, sl.StatefulLayer):
                    layer.reset_states()
            opt.zero_grad()
            out = model(x).reshape(2, 10, 10).sum(1)
            loss = nn.functional.cross_entropy(out, target)
            loss.backward()
            opt.step()
            history.append(loss.item())
        losses.append(history)
    for a, b in zip(*losses):
        assert a == pytest.approx(b, rel=1e-5)
    assert losses[1][-1] < losses[1][0]


def test_top_level_exposes_layers_conversion_version():
    assert exodus_jit.layers is el and callable(exodus_jit.conversion.sinabs_to_exodus)
    assert isinstance(exodus_jit.__version__, str)
