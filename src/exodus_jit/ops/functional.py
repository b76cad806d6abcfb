"""Functional face of the ops: argument checks, shapes, parameters, backend choice.

Tensors come in the sinabs layout: data (B, T, *F), states (B, *F); parameters are numbers or
tensors broadcastable to the neuron shape F. The kernels never see more than (B, T, F').
"""

from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from . import _registry, reference
from ._config import (RESET_NAMES, SPIKE_NAMES, ResetKind, SaveKind, SpikeKind, Surrogate, SurrogateKind,
                      SurrogateLike)

Number = Union[int, float]


@dataclass(frozen=True)
class Decay:
    """The decay alpha = exp(-1/tau) of a time constant tau, as the ops' alpha argument.

    Same values as computing ``torch.exp(-1.0 / tau)`` and passing that (sinabs' expression, so
    bit-identical), but cheaper per call: alpha is kept until tau changes (its version counter),
    and tau's gradient, alpha / tau**2 times alpha's, is taken inside the op's backward instead of
    through three more autograd nodes.
    """

    tau: Tensor


ParamLike = Union[Number, Tensor]
AlphaLike = Union[Number, Tensor, Decay]
BACKENDS = ("kernels", "reference")
_backend_override: Optional[str] = None


def set_backend(name: Optional[str]) -> None:
    """Choose 'kernels' (compiled CPU/CUDA, the default) or 'reference' (pure PyTorch) for all
    ops; None returns to the EXODUS_JIT_BACKEND environment variable's choice."""
    if name is not None and name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    global _backend_override
    _backend_override = name


def get_backend() -> str:
    name = _backend_override or os.environ.get("EXODUS_JIT_BACKEND", "kernels")
    if name not in BACKENDS:
        raise ValueError(f"EXODUS_JIT_BACKEND must be one of {BACKENDS}, got {name!r}")
    return name


@dataclass
class MembraneOutput:
    """output: spikes (or the membrane, for spike='none'), (B, T, *F), in the input's dtype.
    v_final: the state after the last step, (B, *F). v_rec: the state after every step
    (B, T, *F), only with record_states=True. output_sum: the output summed over time per neuron
    (B, *F) in the state dtype (spike counts), only with sum_output=True; differentiable, and
    computed by the kernels, so firing rates need no pass over the output. i_final: the synaptic
    current after the last step (B, *F), only with alpha_syn."""

    output: Tensor
    v_final: Tensor
    v_rec: Optional[Tensor]
    output_sum: Optional[Tensor] = None
    i_final: Optional[Tensor] = None


FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _check_data(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"{name} must be (batch, time, *features), got shape {tuple(x.shape)}")


def _check_state(name: str, state: Tensor, x: Tensor) -> Tensor:
    expected = (x.shape[0], *x.shape[2:])
    if not isinstance(state, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(state).__name__}")
    if tuple(state.shape) != expected:
        raise ValueError(f"{name} must have shape (batch, *features) = {expected}, got {tuple(state.shape)}")
    if state.device != x.device:
        raise ValueError(f"{name} is on {state.device} but the input is on {x.device}")
    if not state.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {state.dtype}")
    state = _shaped(state, (x.shape[0], _num_features(x)))
    dtype = _registry.state_dtype(x.dtype)
    return state if state.dtype == dtype else state.to(dtype)  # .to() costs host time even as a no-op


def _num_features(x: Tensor) -> int:
    return math.prod(x.shape[2:])


def _feature_param(name: str, value: ParamLike, x: Tensor) -> Tensor:
    """A number or tensor broadcastable to the neuron shape -> (1,) or (F',) in the state dtype.

    Differentiable (expand + reshape), so gradients reach tensors that require them.
    """
    dtype = _registry.state_dtype(x.dtype)
    features = tuple(x.shape[2:])
    if not isinstance(value, Tensor):
        if not _is_number(value):
            raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}")
        return _constant(float(value), x)
    if value.device != x.device:
        if value.numel() != 1:
            raise ValueError(f"{name} is on {value.device} but the input is on {x.device}")
        if value.device.type == "cpu" and not value.requires_grad:
            # a CPU constant such as sinabs' IAF alpha = tensor(1.): a fill, not a host-to-device
            # copy (which CUDA graph capture forbids)
            return _constant(float(value), x)
    if value.device != x.device or value.dtype != dtype:
        value = value.to(device=x.device, dtype=dtype)
    if value.numel() == 1:
        return value.reshape(1)
    try:
        expanded = value.expand(features) if value.dim() <= len(features) else None
    except RuntimeError:
        expanded = None
    if expanded is None:
        raise ValueError(f"{name} of shape {tuple(value.shape)} does not broadcast to the neuron shape {features}")
    return expanded.reshape(-1)


# Parameter tensors made from plain numbers, per (value, device, dtype): a fill per call would be a
# kernel launch per call on a GPU. The kernels only read them.
_constants: Dict[tuple, Tensor] = {}


def _constant(value: float, x: Tensor) -> Tensor:
    dtype = _registry.state_dtype(x.dtype)
    if torch.compiler.is_compiling():
        return torch.full((1,), value, dtype=dtype, device=x.device)
    key = (value, x.device, dtype)
    t = _constants.get(key)
    if t is None:
        if len(_constants) > 1024:
            _constants.clear()
        t = _constants[key] = torch.full((1,), value, dtype=dtype, device=x.device)
    return t


@dataclass
class _DecayEntry:
    key: tuple
    alpha: Tensor  # as _feature_param makes it
    slope: Tensor  # d alpha / d tau, in tau's shape


# Per tau tensor, by id (a WeakKeyDictionary would compare tensors with ==); an entry goes with its
# tensor.
_decays: Dict[int, Tuple["weakref.ref[Tensor]", _DecayEntry]] = {}


def _forget_decay(key: int):
    return lambda _: _decays.pop(key, None)


def _alpha_param(name: str, alpha: AlphaLike, x: Tensor) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """(alpha as a kernel parameter, tau if the op takes tau's gradient itself else None,
    d alpha / d tau)."""
    if isinstance(alpha, Decay):
        return _decay_param(name, alpha, x)  # checked there, once per alpha it computes
    alpha_t = _feature_param(name, alpha, x)
    _check_alpha(name, alpha if _is_number(alpha) else alpha_t)
    return alpha_t, None, None


def _decay_param(name: str, decay: Decay, x: Tensor) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    tau = decay.tau
    if not isinstance(tau, Tensor):
        alpha = torch.exp(-1.0 / torch.tensor(float(tau), dtype=_registry.state_dtype(x.dtype)))
        return _checked_alpha(name, _feature_param(name, alpha, x)), None, None
    if (torch.compiler.is_compiling() or get_backend() == "reference"
            or type(tau) not in (Tensor, torch.nn.Parameter)):
        # traced graphs and the reference backend differentiate alpha with plain autograd
        return _checked_alpha(name, _feature_param(name, torch.exp(-1.0 / tau), x)), None, None
    key = (tau._version, tau.data_ptr(), tau.dtype, x.device, x.dtype)
    held = _decays.get(id(tau))
    entry = held[1] if held is not None and held[0]() is tau else None
    if entry is None or entry.key != key:
        with torch.no_grad():
            alpha = torch.exp(-1.0 / tau)  # sinabs' expression: bit-identical alpha
            entry = _DecayEntry(key, _checked_alpha(name, _feature_param(name, alpha, x)), alpha / (tau * tau))
        _decays[id(tau)] = (weakref.ref(tau, _forget_decay(id(tau))), entry)
    return entry.alpha, (tau if tau.requires_grad and torch.is_grad_enabled() else None), entry.slope


def _decay_grad(per_neuron: Tensor, tau: Tensor, slope: Tensor, features: Tuple[int, ...]) -> Tensor:
    """tau's gradient from alpha's gradient per neuron (B, F'): summed into tau's shape, times
    d alpha / d tau (two ops for a scalar tau)."""
    if tau.numel() == 1:
        return _shaped(per_neuron.sum() * slope, tau.shape)
    return per_neuron.sum(0).reshape(features).sum_to_size(tau.shape) * slope


def _param_grads(ctx, per_neuron: Optional[Tensor], alpha: Tensor, alpha_index: int, tau_index: int):
    """(alpha's gradient, tau's gradient) that the Function's backward returns, from alpha's
    gradient per neuron; None where not needed."""
    needs_grad = ctx.needs_input_grad
    g_alpha = _registry.reduce_param_grad(per_neuron, alpha) if needs_grad[alpha_index] else None
    g_tau = None
    if needs_grad[tau_index]:
        tau, slope = ctx.decays[tau_index]
        g_tau = _decay_grad(per_neuron, tau, slope, ctx.features)
    return g_alpha, g_tau


def _is_eager_cpu(t: Tensor) -> bool:
    # Value checks read tensor contents: free on the CPU, a device sync on a GPU, and a graph
    # break under torch.compile; so they run only for eager CPU tensors.
    return t.device.type == "cpu" and not torch.compiler.is_compiling() and not isinstance(t, torch._subclasses.FakeTensor)


def _checked_alpha(name: str, alpha: Tensor) -> Tensor:
    _check_alpha(name, alpha)
    return alpha


def _is_number(value) -> bool:
    return isinstance(value, (int, float))


def _check_alpha(name: str, alpha: ParamLike) -> None:
    """alpha in [0, 1]: a number everywhere, a tensor's values on eager CPU only."""
    if _is_number(alpha):
        bad = not 0.0 <= alpha <= 1.0  # also refuses NaN
    else:
        bad = _is_eager_cpu(alpha) and bool(((alpha < 0) | (alpha > 1) | torch.isnan(alpha)).any())
    if bad:
        raise ValueError(f"{name} must lie in [0, 1] (alpha = exp(-1/tau)), got "
                         f"{alpha if _is_number(alpha) else 'values outside'}")


def _check_threshold(threshold: ParamLike, threshold_t: Tensor, min_v: Optional[ParamLike],
                     min_v_t: Optional[Tensor]) -> None:
    """threshold > 0 and above min_v_mem: numbers everywhere, tensors' values on eager CPU only."""
    if _is_number(threshold):
        bad = not threshold > 0
    else:
        bad = _is_eager_cpu(threshold_t) and bool((threshold_t <= 0).any())
    if bad:
        raise ValueError("threshold must be positive")
    if min_v is None:
        return
    if _is_number(threshold) and _is_number(min_v):
        bad = not threshold > min_v
    else:
        bad = _is_eager_cpu(threshold_t) and bool((threshold_t <= min_v_t).any())
    if bad:
        raise ValueError("threshold must be above min_v_mem")


def _surrogate_args(surrogate: SurrogateLike) -> Tuple[int, list]:
    if isinstance(surrogate, Surrogate):
        return int(surrogate.kind), list(surrogate.params)
    if callable(surrogate):
        return int(SurrogateKind.GIVEN), []
    raise TypeError(f"surrogate must be an exodus_jit Surrogate or a callable f(v_mem, threshold), got {surrogate!r}")


def membrane(u: Tensor, v0: Tensor, alpha: AlphaLike, threshold: ParamLike = 1.0, *,
             spike: Union[str, SpikeKind] = "multi", max_spikes: Optional[int] = None,
             reset: Union[str, ResetKind] = "subtract", subtract_value: Optional[ParamLike] = None,
             reset_value: float = 0.0, min_v_mem: Optional[ParamLike] = None, norm_input: bool = False,
             surrogate: SurrogateLike = Surrogate.single_exponential(),
             record_states: bool = False, sum_output: bool = False,
             i_syn: Optional[Tensor] = None, alpha_syn: Optional[AlphaLike] = None) -> MembraneOutput:
    """Membrane dynamics of IAF/LIF (spiking) and ExpLeak (spike='none') over all time steps.

    v_t = alpha * w_{t-1} + u_t (times 1 - alpha with norm_input); spikes from v_t by `spike`;
    reset by `reset`; w_t clipped below at min_v_mem. See DESIGN.md, "Dynamics".

    With i_syn and alpha_syn, a synaptic current (sinabs' tau_syn) drives the membrane instead
    of u: i_t = alpha_syn * (i_{t-1} + u_t). Same values as synaptic_current() followed by
    membrane(), but fused into the membrane kernels, so the current never goes through memory
    (with record_states, a surrogate callable, the reference backend or torch.compile, the two
    ops run one after the other; the output is in the input's dtype either way).

    Args:
        u: input current (B, T, *F).
        v0: membrane state before the first step (B, *F).
        alpha: decay per step, exp(-1/tau_mem); 1 for IAF. Decay(tau_mem) computes it from tau.
        threshold: spike threshold.
        spike: 'multi', 'single', 'max' (with max_spikes) or 'none' (ExpLeak: output is v).
        reset: 'subtract' (subtract_value, default the threshold) or 'to_value' (reset_value).
        min_v_mem: lower bound of the membrane after reset, or None.
        norm_input: scale the input by 1 - alpha.
        surrogate: a built-in Surrogate (evaluated in the kernels) or a callable f(v, threshold).
        record_states: also return the state after every step.
        sum_output: also return the output summed over time per neuron.
        i_syn: synaptic current before the first step (B, *F), with alpha_syn.
        alpha_syn: its decay per step, exp(-1/tau_syn), or Decay(tau_syn).
    """
    _check_data("input", u)
    if (i_syn is None) != (alpha_syn is None):
        raise ValueError("i_syn and alpha_syn go together")
    if alpha_syn is not None and not _fuses_synapse(u, surrogate, record_states):
        current, i_final = synaptic_current(u, i_syn, alpha_syn)
        result = membrane(current, v0, alpha, threshold, spike=spike, max_spikes=max_spikes, reset=reset,
                          subtract_value=subtract_value, reset_value=reset_value, min_v_mem=min_v_mem,
                          norm_input=norm_input, surrogate=surrogate, record_states=record_states,
                          sum_output=sum_output)
        result.output = result.output.to(u.dtype)  # as the fused kernels write it
        result.i_final = i_final
        return result
    spike_kind = SPIKE_NAMES[spike] if isinstance(spike, str) else SpikeKind(spike)
    reset_kind = RESET_NAMES[reset] if isinstance(reset, str) else ResetKind(reset)
    if spike_kind == SpikeKind.MAX:
        if max_spikes is None:
            spike_kind = SpikeKind.MULTI  # sinabs' MaxSpike(None) is MultiSpike
        elif int(max_spikes) < 1:
            raise ValueError(f"max_spikes must be at least 1, got {max_spikes}")
    B, T = u.shape[0], u.shape[1]
    features = tuple(u.shape[2:])
    state = _check_state("v0", v0, u)
    alpha_t, tau, slope = _alpha_param("alpha", alpha, u)
    threshold_t = _feature_param("threshold", threshold, u)
    subtract_t = threshold_t if subtract_value is None else _feature_param("subtract_value", subtract_value, u)
    min_v_t = None if min_v_mem is None else _feature_param("min_v_mem", min_v_mem, u)
    if spike_kind != SpikeKind.NONE:
        _check_threshold(threshold, threshold_t, min_v_mem, min_v_t)
    surrogate_kind, surrogate_params = _surrogate_args(surrogate)
    u3 = _shaped(u, (B, T, _num_features(u)))
    syn = None
    if alpha_syn is not None:
        syn = (_check_state("i_syn", i_syn, u), *_alpha_param("alpha_syn", alpha_syn, u))

    out_sum = i_final = None
    if get_backend() == "reference":
        out, w_rec, v_final = reference.membrane(
            u3, state, alpha_t, threshold_t, subtract_t, min_v_t, float(reset_value), spike_kind,
            int(max_spikes or 0), reset_kind, norm_input, surrogate, record_states)
        if sum_output:
            out_sum = out.to(state.dtype).sum(1)
    else:
        config = (float(reset_value), int(spike_kind), int(max_spikes or 0), int(reset_kind), bool(norm_input))
        if torch.compiler.is_compiling() and surrogate_kind != SurrogateKind.GIVEN:
            # traced graphs use the custom op and its registered autograd
            needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (u3, state, alpha_t))
            save = SaveKind.CHECKPOINTS if needs_grad else SaveKind.NOTHING
            out, _, w_rec, v_final, out_sum = _registry.membrane(
                u3, state, alpha_t, threshold_t, subtract_t, min_v_t, *config, surrogate_kind, surrogate_params,
                int(save), record_states, sum_output)
        elif surrogate_kind != SurrogateKind.GIVEN and _registry.direct(u3):
            # forward and backward in C++: one operator call, a backward without Python
            out, w_rec, v_final, out_sum, i_final = _registry.run_membrane_autograd(
                u3, state, alpha_t, threshold_t, subtract_t, min_v_t, config, surrogate_kind, surrogate_params,
                record_states, sum_output, tau, slope, features, syn)
        else:
            out, w_rec, v_final, out_sum = _Membrane.apply(
                u3, state, alpha_t, threshold_t, subtract_t, min_v_t, config, surrogate, record_states, tau, slope,
                features, sum_output)
        if not record_states:
            w_rec = None
        if not sum_output:
            out_sum = None
        if syn is None:
            i_final = None
    return MembraneOutput(
        output=_shaped(out, u.shape),
        v_final=_shaped(v_final, (B, *features)),
        v_rec=None if w_rec is None else _shaped(w_rec, u.shape),
        output_sum=None if out_sum is None else _shaped(out_sum, (B, *features)),
        i_final=None if i_final is None else _shaped(i_final, (B, *features)),
    )


def _fuses_synapse(u: Tensor, surrogate: SurrogateLike, record_states: bool) -> bool:
    """Whether membrane() runs a synaptic stage inside its kernels (eager plain tensors, compiled
    backend, no recorded states, built-in surrogate) rather than as synaptic_current() first."""
    return (get_backend() == "kernels" and _registry.direct(u) and not record_states
            and isinstance(surrogate, Surrogate) and surrogate.kind != SurrogateKind.GIVEN)


def _shaped(t: Tensor, shape) -> Tensor:
    """t in `shape`; the tensor itself (not a view of it) when it already has that shape."""
    return t if tuple(t.shape) == tuple(shape) else t.reshape(shape)


class _Membrane(torch.autograd.Function):
    """Autograd of the membrane kernels for surrogates evaluated in PyTorch (and for tensors that
    are not plain, such as fake tensors); built-in surrogates take the C++ Function
    (kernels/ops_autograd.h). With a surrogate callable, backward evaluates it in PyTorch on the
    membrane trajectory of one more forward pass."""

    @staticmethod
    def forward(ctx, u, v0, alpha, threshold, subtract, min_v, config, surrogate, record, tau, slope, features,
                sum_out):
        kind, params = _surrogate_args(surrogate)
        needs_grad = ctx.needs_input_grad
        save = SaveKind.CHECKPOINTS if any(needs_grad[:3]) or needs_grad[9] else SaveKind.NOTHING
        out, ckpt, w_rec, v_final, out_sum = _registry.run_membrane_forward(
            u, v0, alpha, threshold, subtract, min_v, config, kind, params, save, record, sum_out)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(ckpt, u, v0, alpha, threshold, subtract, min_v)
        ctx.config, ctx.surrogate, ctx.kind, ctx.params = config, surrogate, kind, params
        # an alpha that came from tau (Decay): tau's gradient is taken here
        ctx.decays = {9: (tau, slope)}
        ctx.features = features
        return out, w_rec, v_final, out_sum

    @staticmethod
    def backward(ctx, g_out, g_wrec, g_vfinal, g_out_sum):
        saved = ctx.saved_tensors
        sigma = None
        if ctx.kind == SurrogateKind.GIVEN and ctx.config[1] != SpikeKind.NONE:
            # the callable needs the whole membrane trajectory: one more forward pass keeps it
            _, u, v0, alpha, threshold, subtract, min_v = saved
            with torch.no_grad():
                _, v, _, _, _ = _registry.run_membrane_forward(u, v0, alpha, threshold, subtract, min_v, ctx.config,
                                                               ctx.kind, ctx.params, SaveKind.TRAJECTORY, False)
                sigma = ctx.surrogate(v, threshold).to(v.dtype).expand_as(v).contiguous()
        needs_grad = ctx.needs_input_grad
        g_u, g_v0, g_alpha = _registry.membrane_grads(
            saved, ctx.config, ctx.kind, ctx.params, g_out, g_wrec, g_vfinal, needs_grad[2] or needs_grad[9], sigma,
            g_out_sum)
        g_alpha, g_tau = _param_grads(ctx, g_alpha, saved[3], alpha_index=2, tau_index=9)
        return (g_u if needs_grad[0] else None, g_v0 if needs_grad[1] else None, g_alpha,
                None, None, None, None, None, None, g_tau, None, None, None)


class _Synaptic(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, i0, alpha, tau, slope, features):
        i_all, i_final = _registry.run_synaptic_forward(x, i0, alpha)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(i_all, x, i0, alpha)
        ctx.decays, ctx.features = {3: (tau, slope)}, features  # alpha from tau (Decay): tau's gradient
        return i_all, i_final

    @staticmethod
    def backward(ctx, g_i, g_final):
        needs_grad = ctx.needs_input_grad
        saved = ctx.saved_tensors
        g_x, g_i0, g_alpha = _registry.synaptic_grads(saved, g_i, g_final, needs_grad[2] or needs_grad[3])
        g_alpha, g_tau = _param_grads(ctx, g_alpha, saved[3], alpha_index=2, tau_index=3)
        return g_x, g_i0, g_alpha, g_tau, None, None


def synaptic_current(x: Tensor, i0: Tensor, alpha: AlphaLike) -> Tuple[Tensor, Tensor]:
    """Synaptic current i_t = alpha * (i_{t-1} + x_t) over all steps, as sinabs' tau_syn.

    Args:
        x: input (B, T, *F).
        i0: current before the first step (B, *F).
        alpha: decay per step, exp(-1/tau_syn), or Decay(tau_syn).

    Returns:
        (i for every step (B, T, *F), i after the last step (B, *F)), in the state dtype
        (float32, or float64 for float64 input).
    """
    _check_data("input", x)
    B, T = x.shape[0], x.shape[1]
    features = tuple(x.shape[2:])
    state = _check_state("i0", i0, x)
    alpha_t, tau, slope = _alpha_param("alpha_syn", alpha, x)
    x3 = _shaped(x, (B, T, _num_features(x)))
    if get_backend() == "reference":
        i_all, i_final = reference.synaptic_current(x3, state, alpha_t)
    elif torch.compiler.is_compiling():
        i_all, i_final = _registry.synaptic_current(x3, state, alpha_t)
    else:
        i_all, i_final = _Synaptic.apply(x3, state, alpha_t, tau, slope, features)
    return _shaped(i_all, x.shape), _shaped(i_final, (B, *features))


__all__ = ["Decay", "MembraneOutput", "membrane", "synaptic_current", "set_backend", "get_backend"]
