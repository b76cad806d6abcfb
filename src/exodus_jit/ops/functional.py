"""Functional face of the ops: argument checks, shapes, parameters, backend choice.

Tensors come in the sinabs layout: data (B, T, *F), states (B, *F); parameters are numbers or
tensors broadcastable to the neuron shape F. The kernels never see more than (B, T, F').
"""

from __future__ import annotations

import math
import os
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
    bit-identical), but cheaper per call: on the compiled kernels (eager mode, built-in
    surrogates) the op computes alpha from tau's current values itself (on the GPU inside the
    membrane kernels) and takes tau's gradient, alpha / tau**2 times alpha's, in its backward
    instead of through three more autograd nodes. That gradient equals autograd's to the bit on
    the CPU; on the GPU it is summed over the neurons in an order of its own (deterministic), so
    it equals autograd's to float rounding.
    """

    tau: Union[Number, Tensor]


ParamLike = Union[Number, Tensor]
AlphaLike = Union[Number, Tensor, Decay]
BACKENDS = ("kernels", "reference")
# EXODUS_JIT_BACKEND as read when this module was imported or at the last set_backend(None): the
# layers' direct path asks on every call, and reading os.environ there cost ~7 us of a ~60 us
# layer call on the 2-core box (four Python frames of os._Environ, in the call's hot path)
_backend_from_env: str = os.environ.get("EXODUS_JIT_BACKEND", "kernels")
_backend_override: Optional[str] = None


def set_backend(name: Optional[str]) -> None:
    """Choose 'kernels' (compiled CPU/CUDA, the default) or 'reference' (pure PyTorch) for all
    ops; None returns to the EXODUS_JIT_BACKEND environment variable's choice, read again now
    (it is otherwise read once, when exodus_jit is imported)."""
    if name is not None and name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    global _backend_override, _backend_from_env
    _backend_override = name
    if name is None:
        _backend_from_env = os.environ.get("EXODUS_JIT_BACKEND", "kernels")


def _chosen_backend() -> str:
    """The backend asked for, unchecked (the layers' direct path reads it on every call)."""
    return _backend_override or _backend_from_env


def get_backend() -> str:
    name = _chosen_backend()
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
    current after the last step (B, *F), only with alpha_syn. v_zero, i_zero: fresh zeros in the
    states' shape (B, *F) (i_zero with alpha_syn), only from a MembraneCall made with
    zero_states=True where the C++ operator ran (else None): a layer's next reset_states takes
    them as its states."""

    output: Tensor
    v_final: Tensor
    v_rec: Optional[Tensor]
    output_sum: Optional[Tensor] = None
    i_final: Optional[Tensor] = None
    v_zero: Optional[Tensor] = None
    i_zero: Optional[Tensor] = None


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


def _alpha_param(name: str, alpha: AlphaLike, x: Tensor) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """(alpha as a kernel parameter, None), or (None, tau) for a Decay whose alpha the op computes
    from tau at every call (see _decay_alpha for the paths that need alpha itself)."""
    if isinstance(alpha, Decay):
        tau = alpha.tau
        if not isinstance(tau, Tensor):
            value = torch.exp(-1.0 / torch.tensor(float(tau), dtype=_registry.state_dtype(x.dtype)))
            return _checked_alpha(name, _feature_param(name, value, x)), None
        if type(tau) not in (Tensor, torch.nn.Parameter) or tau.device != x.device:
            return _decay_alpha(name, tau, x), None  # subclasses, other devices: plain autograd
        _feature_param(name, tau, x)  # refuses a tau that does not broadcast to the neurons, now
        return None, tau
    alpha_t = _feature_param(name, alpha, x)
    _check_alpha(name, alpha if _is_number(alpha) else alpha_t)
    return alpha_t, None


def _decay_alpha(name: str, tau: Tensor, x: Tensor) -> Tensor:
    """alpha = exp(-1/tau) as a kernel parameter, differentiable in tau through plain autograd:
    for the paths that take alpha rather than tau (reference, traced, Python Function)."""
    return _checked_alpha(name, _feature_param(name, torch.exp(-1.0 / tau), x))


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

    Gradients reach u, v0, i_syn, alpha and alpha_syn (or the taus of Decays); threshold,
    subtract_value and min_v_mem take none, even when they require it.
    """
    call = MembraneCall(u, alpha, threshold, spike=spike, max_spikes=max_spikes, reset=reset,
                        subtract_value=subtract_value, reset_value=reset_value, min_v_mem=min_v_mem,
                        norm_input=norm_input, surrogate=surrogate, record_states=record_states,
                        sum_output=sum_output, alpha_syn=alpha_syn)
    return call(u, v0, i_syn)


class MembraneCall:
    """membrane() with its parameters checked and converted once, for inputs of one dtype, device
    and neuron shape (those of `u`, whose values are not read): calling it with (u, v0, i_syn)
    is membrane(u, v0, ...) with the arguments given here, and costs per call only the checks
    of the input and states. A layer keeps one between calls.

    Alphas given as Decay(tau) are computed from tau at every call on the compiled kernels; other
    parameter tensors are read live where `reusable` says so (the given tensor or a view of it),
    else their values of now are kept (a copy to another dtype or device). Value checks run here,
    once. The common call (plain eager tensors, the compiled kernels, a built-in surrogate, no
    synaptic stage, the state already in the state dtype) goes straight to the C++ operator with
    its arguments prepared here; the others take the general path, with the same results.
    zero_states: where the C++ operator runs, it also returns fresh zeros in the states' shape,
    written by the forward kernel (MembraneOutput.v_zero, i_zero), for a layer's reset_states.
    """

    def __init__(self, u: Tensor, alpha: AlphaLike, threshold: ParamLike = 1.0, *,
                 spike: Union[str, SpikeKind] = "multi", max_spikes: Optional[int] = None,
                 reset: Union[str, ResetKind] = "subtract", subtract_value: Optional[ParamLike] = None,
                 reset_value: float = 0.0, min_v_mem: Optional[ParamLike] = None, norm_input: bool = False,
                 surrogate: SurrogateLike = Surrogate.single_exponential(),
                 record_states: bool = False, sum_output: bool = False,
                 alpha_syn: Optional[AlphaLike] = None, zero_states: bool = False):
        _check_data("input", u)
        spike_kind = SPIKE_NAMES[spike] if isinstance(spike, str) else SpikeKind(spike)
        reset_kind = RESET_NAMES[reset] if isinstance(reset, str) else ResetKind(reset)
        if spike_kind == SpikeKind.MAX:
            if max_spikes is None:
                spike_kind = SpikeKind.MULTI  # sinabs' MaxSpike(None) is MultiSpike
            elif int(max_spikes) < 1:
                raise ValueError(f"max_spikes must be at least 1, got {max_spikes}")
        self.dtype, self.device, self.features = u.dtype, u.device, tuple(u.shape[2:])
        self.alpha, self.tau = _alpha_param("alpha", alpha, u)
        self.threshold = _feature_param("threshold", threshold, u)
        self.subtract = (self.threshold if subtract_value is None
                         else _feature_param("subtract_value", subtract_value, u))
        self.min_v = None if min_v_mem is None else _feature_param("min_v_mem", min_v_mem, u)
        if spike_kind != SpikeKind.NONE:
            _check_threshold(threshold, self.threshold, min_v_mem, self.min_v)
        self.surrogate = surrogate
        self.surrogate_kind, self.surrogate_params = _surrogate_args(surrogate)
        self.spike_kind, self.reset_kind, self.max_spikes = spike_kind, reset_kind, int(max_spikes or 0)
        self.reset_value, self.norm_input = float(reset_value), bool(norm_input)
        self.config = (self.reset_value, int(spike_kind), self.max_spikes, int(reset_kind), self.norm_input)
        self.record_states, self.sum_output = bool(record_states), bool(sum_output)
        self.alpha_syn_arg = alpha_syn  # for the two-op path, which resolves it itself
        self.synapse = None if alpha_syn is None else _alpha_param("alpha_syn", alpha_syn, u)
        self._given = ((self.alpha, alpha), (self.threshold, threshold), (self.subtract, subtract_value),
                       (self.min_v, min_v_mem), (self.synapse and self.synapse[0], alpha_syn))
        self._state_dtype = _registry.state_dtype(u.dtype)
        # the C++ operator (built-in surrogates) and its arguments after (u, v0), prepared once
        self._op = None  # looked up at the first call that runs it
        self._op_args = None if self.surrogate_kind == SurrogateKind.GIVEN else _registry.membrane_autograd_args(
            self.alpha, self.threshold, self.subtract, self.min_v, self.config, self.surrogate_kind,
            self.surrogate_params, self.record_states, self.sum_output, self.tau, self.features, zero_states)
        # __call__'s common case: the C++ operator, with the synaptic stage fused where there is one
        # (the fused kernels take no recorded states; built-in surrogates are given by _op_args)
        self._direct = self._op_args is not None and (self.synapse is None or not self.record_states)

    @property
    def reusable(self) -> bool:
        """Whether the call may be kept for later calls: every parameter tensor is read live (the
        given tensor, a view of it, or tau for alpha), so it stays right however their values
        change, and none carries an autograd graph of its own (such as a trained alpha's view of
        its Parameter, which a later backward would run through again)."""
        return all(_reads_live(prepared, given) and not (isinstance(prepared, Tensor) and prepared.requires_grad)
                   for prepared, given in self._given)

    def __call__(self, u: Tensor, v0: Tensor, i_syn: Optional[Tensor] = None) -> MembraneOutput:
        if (type(u) is Tensor and type(v0) is Tensor and u.dtype is self.dtype and u.device == self.device
                and u.shape[2:] == self.features
                and (u.dim() == 3 or (v0.shape[0] == u.shape[0] and v0.shape[1:] == self.features))
                and (i_syn is None or (type(i_syn) is Tensor and i_syn.shape == v0.shape))
                and not torch.compiler.is_compiling()):  # else _run's errors name the argument
            # the common case (a layer's call): _run's C++ path without its per-call checks, which
            # the op makes itself for the states' shapes and devices
            outputs = self.direct(u, v0, i_syn)
            if outputs is not None:
                out, w_rec, v_final, out_sum, i_final, v_zero, i_zero = outputs
                return MembraneOutput(out, v_final, w_rec if self.record_states else None,
                                      out_sum if self.sum_output else None, i_final if i_syn is not None else None,
                                      v_zero, i_zero)
        if u.dtype != self.dtype or u.device != self.device or u.dim() < 2 or u.shape[2:] != self.features:
            _check_data("input", u)
            raise ValueError(f"this MembraneCall takes {self.dtype} input on {self.device} with neuron shape "
                             f"{self.features}, got {u.dtype} on {u.device} of shape {tuple(u.shape)}")
        if (i_syn is None) != (self.synapse is None):
            raise ValueError("i_syn and alpha_syn go together")
        backend = get_backend()
        if self.synapse is not None and not _fuses_synapse(u, self.surrogate, self.record_states, backend):
            current, i_final = synaptic_current(u, i_syn, self.alpha_syn_arg)
            result = self._run(current, v0, None, backend)
            result.output = result.output.to(u.dtype)  # as the fused kernels write it
            result.i_final = i_final
            return result
        return self._run(u, v0, i_syn, backend)

    def _run(self, u: Tensor, v0: Tensor, i_syn: Optional[Tensor], backend: str) -> MembraneOutput:
        B, T = u.shape[0], u.shape[1]
        features = self.features
        state = _check_state("v0", v0, u)
        u3 = _shaped(u, (B, T, _num_features(u)))
        syn = None if i_syn is None else (_check_state("i_syn", i_syn, u), *self.synapse)
        record_states, sum_output = self.record_states, self.sum_output
        out_sum = i_final = None
        if self._op_args is not None and _registry.direct(u3) and backend == "kernels":
            # forward and backward in C++: one operator call, a backward without Python
            out, w_rec, v_final, out_sum, i_final, v_zero, i_zero = self._autograd_op(u3, state, syn)
            return self._output(u, out, w_rec, v_final, out_sum, i_final if syn else None, v_zero, i_zero)
        # the other paths take alpha itself, computed from tau per call if it comes from one
        alpha = self.alpha if self.tau is None else _decay_alpha("alpha", self.tau, u)
        if backend == "reference":
            out, w_rec, v_final = reference.membrane(
                u3, state, alpha, self.threshold, self.subtract, self.min_v, self.reset_value, self.spike_kind,
                self.max_spikes, self.reset_kind, self.norm_input, self.surrogate, record_states)
            if sum_output:
                out_sum = out.to(state.dtype).sum(1)
        elif torch.compiler.is_compiling() and self.surrogate_kind != SurrogateKind.GIVEN:
            # traced graphs use the custom op and its registered autograd
            needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (u3, state, alpha))
            save = SaveKind.CHECKPOINTS if needs_grad else SaveKind.NOTHING
            out, _, w_rec, v_final, out_sum = _registry.membrane(
                u3, state, alpha, self.threshold, self.subtract, self.min_v, *self.config, self.surrogate_kind,
                self.surrogate_params, int(save), record_states, sum_output)
        else:
            out, w_rec, v_final, out_sum = _Membrane.apply(
                u3, state, alpha, self.threshold, self.subtract, self.min_v, self.config, self.surrogate,
                record_states, sum_output)
        return self._output(u, out, w_rec, v_final, out_sum, None)

    def direct(self, u: Tensor, v0: Tensor, i0: Optional[Tensor] = None) -> Optional[tuple]:
        """The C++ operator's outputs (output, recorded states, v_final, output summed over time,
        i_final, v_zero, i_zero; None for those not computed; the output and recorded states in
        u's shape, the others in (B, *features)) for inputs the caller has checked: u (B, T,
        *features) and v0 (B, *features; or (B, F') for 3-D u) plain tensors of this call's
        dtype, device and neurons, i0 like v0, not while torch.compile traces. The per-call path
        of __call__ and of a layer: it checks only what they leave to it (the states' dtypes, i0
        given exactly with alpha_syn, the backend chosen now) and returns None where the C++
        operator does not run this call (then call the MembraneCall itself, which makes every
        check)."""
        if (not self._direct or v0.dtype is not self._state_dtype or _chosen_backend() != "kernels"
                or (i0 is None) != (self.synapse is None) or (i0 is not None and i0.dtype is not self._state_dtype)):
            return None
        if u.dim() == 3:
            return self._autograd_op(u, v0, () if i0 is None else (i0, *self.synapse))
        # (B, T, C, H, W): the op takes (B, T, F') and returns the per-neuron outputs in the
        # states' shape already
        B, T = u.shape[0], u.shape[1]
        out, w_rec, *per_neuron = self._autograd_op(u.reshape(B, T, -1), v0.reshape(B, -1),
                                                    () if i0 is None else (i0.reshape(B, -1), *self.synapse))
        return (out.reshape(u.shape), None if w_rec is None else w_rec.reshape(u.shape), *per_neuron)

    def _autograd_op(self, u3: Tensor, state: Tensor, synapse: Optional[tuple] = ()):
        """The C++ operator on (B, T, F') input and (B, F') state, with the prepared arguments;
        synapse = (i0, alpha_syn, tau_syn) of the fused synaptic stage, or empty."""
        op = self._op
        if op is None:
            op = self._op = _registry.membrane_autograd_op(self.device)
        return op(u3, state, *self._op_args, *(synapse or ()))

    def _output(self, u: Tensor, out, w_rec, v_final, out_sum, i_final, v_zero=None, i_zero=None) -> MembraneOutput:
        B, features = u.shape[0], self.features
        return MembraneOutput(
            output=_shaped(out, u.shape),
            v_final=_shaped(v_final, (B, *features)),
            v_rec=_shaped(w_rec, u.shape) if self.record_states else None,
            output_sum=_shaped(out_sum, (B, *features)) if self.sum_output else None,
            i_final=None if i_final is None else _shaped(i_final, (B, *features)),
            v_zero=v_zero, i_zero=i_zero,  # the op allocates them in (B, *features)
        )


def _reads_live(prepared: Optional[Tensor], given) -> bool:
    if isinstance(given, Decay):
        return prepared is None or not isinstance(given.tau, Tensor)
    if isinstance(given, Tensor):
        return prepared is not None and prepared.device == given.device and prepared.data_ptr() == given.data_ptr()
    return True  # a number or None


def _fuses_synapse(u: Tensor, surrogate: SurrogateLike, record_states: bool, backend: str) -> bool:
    """Whether membrane() runs a synaptic stage inside its kernels (eager plain tensors, compiled
    backend, no recorded states, built-in surrogate) rather than as synaptic_current() first."""
    return (backend == "kernels" and _registry.direct(u) and not record_states
            and isinstance(surrogate, Surrogate) and surrogate.kind != SurrogateKind.GIVEN)


def _shaped(t: Tensor, shape) -> Tensor:
    """t in `shape`; the tensor itself (not a view of it) when it already has that shape."""
    return t if t.shape == shape else t.reshape(shape)


class _Membrane(torch.autograd.Function):
    """Autograd of the membrane kernels for surrogates evaluated in PyTorch (and for tensors that
    are not plain, such as fake tensors); built-in surrogates take the C++ Function
    (kernels/ops_autograd.h). With a surrogate callable, backward evaluates it in PyTorch on the
    membrane trajectory of one more forward pass."""

    @staticmethod
    def forward(ctx, u, v0, alpha, threshold, subtract, min_v, config, surrogate, record, sum_out):
        kind, params = _surrogate_args(surrogate)
        save = SaveKind.CHECKPOINTS if any(ctx.needs_input_grad[:3]) else SaveKind.NOTHING
        out, ckpt, w_rec, v_final, out_sum = _registry.run_membrane_forward(
            u, v0, alpha, threshold, subtract, min_v, config, kind, params, save, record, sum_out)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(ckpt, u, v0, alpha, threshold, subtract, min_v)
        ctx.config, ctx.surrogate, ctx.kind, ctx.params = config, surrogate, kind, params
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
            saved, ctx.config, ctx.kind, ctx.params, g_out, g_wrec, g_vfinal, needs_grad[2], sigma, g_out_sum)
        return (g_u if needs_grad[0] else None, g_v0 if needs_grad[1] else None,
                _registry.reduce_param_grad(g_alpha, saved[3]) if needs_grad[2] else None,
                None, None, None, None, None, None, None)


class _Synaptic(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, i0, alpha):
        i_all, i_final = _registry.run_synaptic_forward(x, i0, alpha)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(i_all, x, i0, alpha)
        return i_all, i_final

    @staticmethod
    def backward(ctx, g_i, g_final):
        needs_grad = ctx.needs_input_grad
        saved = ctx.saved_tensors
        g_x, g_i0, g_alpha = _registry.synaptic_grads(saved, g_i, g_final, needs_grad[2])
        return g_x, g_i0, _registry.reduce_param_grad(g_alpha, saved[3]) if needs_grad[2] else None


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
    alpha_t, tau = _alpha_param("alpha_syn", alpha, x)
    if alpha_t is None:
        alpha_t = _decay_alpha("alpha_syn", tau, x)
    x3 = _shaped(x, (B, T, _num_features(x)))
    if get_backend() == "reference":
        i_all, i_final = reference.synaptic_current(x3, state, alpha_t)
    elif torch.compiler.is_compiling():
        i_all, i_final = _registry.synaptic_current(x3, state, alpha_t)
    else:
        i_all, i_final = _Synaptic.apply(x3, state, alpha_t)
    return _shaped(i_all, x.shape), _shaped(i_final, (B, *features))


__all__ = ["Decay", "MembraneCall", "MembraneOutput", "membrane", "synaptic_current", "set_backend", "get_backend"]
