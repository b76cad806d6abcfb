"""The public torch custom ops torch.ops.exodus_jit.*: schemas, fake (meta) impls, autograd.

Defining them costs nothing; the CPU or CUDA extension is compiled and loaded on the first call
that runs on that device (see _extension.backend_ops). Each op takes tensors in the kernels'
layout: data (B, T, F), states (B, F), parameters (1,) or (F,) in the state dtype.
"""

from __future__ import annotations

import functools
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ._config import SaveKind, checkpoints
from ._extension import backend_ops

LIB = "exodus_jit"


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """States and accumulation: float64 for float64 data, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _empty(like: Tensor, dtype: torch.dtype, *shape: int) -> Tensor:
    return like.new_empty(shape, dtype=dtype)


# --------------------------------------------------------------------------------------------
# membrane: spiking (or, with spike_kind 0, leaky) membrane dynamics


@torch.library.custom_op(f"{LIB}::membrane", mutates_args=())
def membrane(u: Tensor, v0: Tensor, alpha: Tensor, threshold: Tensor, subtract: Tensor,
             min_v: Optional[Tensor], reset_value: float, spike_kind: int, max_spikes: int,
             reset_kind: int, norm_input: bool, surrogate_kind: int, surrogate_params: List[float],
             save: int, record: bool, sum_out: bool = False) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Returns (output, what backward needs (SaveKind: checkpoints (B, C, F), the membrane
    trajectory (B, T, F), or empty), recorded states or empty, final state, the output summed
    over time (B, F) or empty)."""
    return backend_ops(u.device).membrane_forward(
        u, v0, alpha, threshold, subtract, min_v, reset_value, spike_kind, max_spikes, reset_kind,
        norm_input, save, record, sum_out)[:5]


@membrane.register_fake
def _(u, v0, alpha, threshold, subtract, min_v, reset_value, spike_kind, max_spikes, reset_kind,
      norm_input, surrogate_kind, surrogate_params, save, record, sum_out=False):
    B, T, F = u.shape
    st = state_dtype(u.dtype)
    saved = {SaveKind.CHECKPOINTS: (B, checkpoints(T), F), SaveKind.TRAJECTORY: (B, T, F)}.get(save, (0,))
    return (
        torch.empty_like(u, memory_format=torch.contiguous_format),
        _empty(u, st, *saved),
        _empty(u, st, B, T, F) if record else _empty(u, st, 0),
        _empty(u, st, B, F),
        _empty(u, st, B, F) if sum_out else _empty(u, st, 0),
    )


@torch.library.custom_op(f"{LIB}::membrane_backward", mutates_args=())
def membrane_backward(g_out: Tensor, g_out_sum: Optional[Tensor], g_wrec: Optional[Tensor],
                      g_vfinal: Optional[Tensor], ckpt: Tensor, u: Tensor, v0: Tensor, alpha: Tensor,
                      threshold: Tensor, subtract: Tensor, min_v: Optional[Tensor], reset_value: float,
                      spike_kind: int, max_spikes: int, reset_kind: int, norm_input: bool, surrogate_kind: int,
                      surrogate_params: List[float], sigma: Optional[Tensor], alpha_grad: bool
                      ) -> Tuple[Tensor, Tensor, Tensor]:
    """Returns (grad of u, grad of v0, per-neuron (B, F) grad of alpha or empty). g_out_sum, the
    gradient of the output summed over time, adds to every step's output gradient."""
    return backend_ops(u.device).membrane_backward(
        g_out, g_out_sum, g_wrec, g_vfinal, ckpt, u, v0, alpha, threshold, subtract, min_v, reset_value,
        spike_kind, max_spikes, reset_kind, norm_input, surrogate_kind, surrogate_params, sigma, alpha_grad)[:3]


@membrane_backward.register_fake
def _(g_out, g_out_sum, g_wrec, g_vfinal, ckpt, u, v0, alpha, threshold, subtract, min_v, reset_value,
      spike_kind, max_spikes, reset_kind, norm_input, surrogate_kind, surrogate_params, sigma, alpha_grad):
    B, T, F = u.shape
    st = state_dtype(u.dtype)
    return (
        torch.empty_like(u, memory_format=torch.contiguous_format),
        _empty(u, st, B, F),
        _empty(u, st, B, F) if alpha_grad else _empty(u, st, 0),
    )


def reduce_param_grad(per_neuron: Tensor, param: Tensor) -> Tensor:
    """Sum a (B, F) per-neuron gradient into the parameter's (1,) or (F,) shape."""
    if param.numel() == 1:
        return per_neuron.sum().reshape(param.shape)
    return per_neuron.sum(0).reshape(param.shape)


def _membrane_setup(ctx, inputs, output):
    (u, v0, alpha, threshold, subtract, min_v, reset_value, spike_kind, max_spikes, reset_kind,
     norm_input, surrogate_kind, surrogate_params, save, record, sum_out) = inputs
    ctx.set_materialize_grads(False)  # unused outputs get None, not zero tensors to read
    ctx.saved_kind = save
    ctx.save_for_backward(output[1], u, v0, alpha, threshold, subtract, min_v)
    ctx.config = (reset_value, spike_kind, max_spikes, reset_kind, norm_input, surrogate_kind,
                  list(surrogate_params))


def direct(t: Tensor) -> bool:
    """Call the backend op directly: a plain tensor in eager mode. Anything traced (dynamo, fake or
    functional tensors of AOTAutograd, make_fx) goes through the public op and its fake impl."""
    return type(t) is torch.Tensor and not torch.compiler.is_compiling()


def run_membrane_forward(u, v0, alpha, threshold, subtract, min_v, config, surrogate_kind, surrogate_params,
                         save, record, sum_out=False):
    """The forward op: straight to the backend in eager mode (no Python dispatch layers per call),
    through the public custom op (fake impl included) while torch.compile traces. Returns
    (output, saved, recorded states, final state, output sum)."""
    if direct(u):
        return backend_ops(u.device).membrane_forward(u, v0, alpha, threshold, subtract, min_v, *config,
                                                      int(save), record, sum_out)[:5]
    return membrane(u, v0, alpha, threshold, subtract, min_v, *config, surrogate_kind, surrogate_params,
                    int(save), record, sum_out)


def membrane_autograd_op(device: torch.device):
    """The backend's membrane_autograd (kernels/ops_autograd.h): forward and backward of a built-in
    surrogate's membrane in C++, eager plain tensors only. Call it as
    op(u, v0, *membrane_autograd_args(...)) or, with the fused synaptic stage,
    op(u, v0, *membrane_autograd_args(...), i0, alpha_syn, tau_syn) (one of the last two given);
    it returns (output, recorded states, final state, output sum, final current, zero state, zero
    current), None for those not computed (no allocation for them), differentiable in u, v0, alpha,
    tau, i0, alpha_syn and tau_syn. The zero states (asked for by zero_states) are fresh zeros in
    the states' shape, written by the forward kernel: a layer's next reset_states takes them
    instead of launching a fill."""
    return backend_ops(device).membrane_autograd.default


def membrane_options(config, surrogate_kind, surrogate_params, record, sum_out, features,
                     zero_states: bool = False) -> Tensor:
    """membrane_autograd's constant options packed in one CPU float64 tensor, in the layout of
    MembraneOptions (kernels/ops_autograd.h): one argument instead of fourteen scalars and lists,
    whose conversion by the dispatcher cost ~5 us per call. Shared between calls with the same
    options (the op only reads it)."""
    reset_value, spike_kind, max_spikes, reset_kind, norm_input = config
    # while torch.compile traces, the tensor becomes a constant of the graph: no cache to share,
    # and dynamo would warn at each trace that it skips the lru_cache wrapper
    pack = _packed_options.__wrapped__ if torch.compiler.is_compiling() else _packed_options
    return pack(float(reset_value), int(spike_kind), int(max_spikes), int(reset_kind), bool(norm_input),
                int(surrogate_kind), tuple(float(p) for p in surrogate_params), bool(record), bool(sum_out),
                bool(zero_states), tuple(int(d) for d in features))


@functools.lru_cache(maxsize=256)
def _packed_options(reset_value, spike_kind, max_spikes, reset_kind, norm_input, surrogate_kind, params, record,
                    sum_out, zero_states, features) -> Tensor:
    return torch.tensor([reset_value, spike_kind, max_spikes, reset_kind, norm_input, surrogate_kind, record,
                         sum_out, zero_states, len(params), *params, len(features), *features], dtype=torch.float64)


def membrane_autograd_args(alpha, threshold, subtract, min_v, config, surrogate_kind, surrogate_params, record,
                           sum_out, tau, features, zero_states: bool = False) -> tuple:
    """membrane_autograd's arguments after (u, v0), in its schema's order. Give alpha (a kernel
    parameter) or tau (an ops.Decay's, any shape that broadcasts to the neuron shape `features`:
    the op computes alpha = exp(-1/tau) from tau at every call and takes tau's gradient).
    zero_states: the op also returns zeros in the states' shape (B, *features)."""
    return (alpha, threshold, subtract, min_v, tau,
            membrane_options(config, surrogate_kind, surrogate_params, record, sum_out, features, zero_states))


def membrane_grads(saved, config, surrogate_kind, surrogate_params, g_out, g_wrec, g_vfinal, alpha_grad,
                   sigma=None, g_out_sum=None):
    """(grad of u, grad of v0, alpha's gradient per neuron (B, F) or None) from membrane's saved
    tensors (checkpoints, u, v0, alpha, threshold, subtract, min_v) and the incoming gradients
    (None where unused). reduce_param_grad sums the per-neuron gradients into their parameter's
    shape."""
    ckpt, u, v0, alpha, threshold, subtract, min_v = saved
    if g_out is None:
        # only the time sum's gradient (or none) came: a stride-0 zero costs no memory traffic
        g_out = torch.zeros((), dtype=u.dtype, device=u.device).expand(u.shape)
    if g_wrec is not None and g_wrec.numel() == 0:
        g_wrec = None
    if g_out_sum is not None and g_out_sum.numel() == 0:
        g_out_sum = None
    args = (g_out, g_out_sum, g_wrec, g_vfinal, ckpt, u, v0, alpha, threshold, subtract, min_v, *config,
            surrogate_kind, surrogate_params, sigma, alpha_grad)
    if direct(u):
        g_u, g_v0, g_alpha = backend_ops(u.device).membrane_backward(*args)[:3]
    else:
        g_u, g_v0, g_alpha = membrane_backward(*args)
    return g_u, g_v0, g_alpha if alpha_grad else None


def _membrane_backward(ctx, g_out, g_saved, g_wrec, g_vfinal, g_out_sum):
    if ctx.saved_kind != SaveKind.CHECKPOINTS:
        raise RuntimeError("exodus_jit::membrane is differentiable when called with save=1 (checkpoints)")
    reset_value, spike_kind, max_spikes, reset_kind, norm_input, surrogate_kind, params = ctx.config
    saved = ctx.saved_tensors
    alpha_grad = ctx.needs_input_grad[2]
    g_u, g_v0, g_alpha = membrane_grads(
        saved, (reset_value, spike_kind, max_spikes, reset_kind, norm_input), surrogate_kind, params,
        g_out, g_wrec, g_vfinal, alpha_grad, g_out_sum=g_out_sum)
    return (g_u, g_v0, reduce_param_grad(g_alpha, saved[3]) if alpha_grad else None) + (None,) * 13


membrane.register_autograd(_membrane_backward, setup_context=_membrane_setup)


# --------------------------------------------------------------------------------------------
# synaptic_current: i_t = alpha * (i_{t-1} + x_t)


@torch.library.custom_op(f"{LIB}::synaptic_current", mutates_args=())
def synaptic_current(x: Tensor, i0: Tensor, alpha: Tensor) -> Tuple[Tensor, Tensor]:
    """Returns (all currents (B, T, F), last current (B, F)), in the state dtype."""
    return backend_ops(x.device).synaptic_forward(x, i0, alpha)


@synaptic_current.register_fake
def _(x, i0, alpha):
    B, T, F = x.shape
    st = state_dtype(x.dtype)
    return _empty(x, st, B, T, F), _empty(x, st, B, F)


@torch.library.custom_op(f"{LIB}::synaptic_current_backward", mutates_args=())
def synaptic_current_backward(g_i: Tensor, g_final: Optional[Tensor], i_all: Tensor, x: Tensor,
                              i0: Tensor, alpha: Tensor, alpha_grad: bool) -> Tuple[Tensor, Tensor, Tensor]:
    return backend_ops(x.device).synaptic_backward(g_i, g_final, i_all, x, i0, alpha, alpha_grad)


@synaptic_current_backward.register_fake
def _(g_i, g_final, i_all, x, i0, alpha, alpha_grad):
    B, T, F = x.shape
    st = state_dtype(x.dtype)
    return (torch.empty_like(x, memory_format=torch.contiguous_format), _empty(x, st, B, F),
            _empty(x, st, B, F) if alpha_grad else _empty(x, st, 0))


def run_synaptic_forward(x, i0, alpha):
    if direct(x):
        return backend_ops(x.device).synaptic_forward(x, i0, alpha)
    return synaptic_current(x, i0, alpha)


def synaptic_grads(saved, g_i, g_final, alpha_grad):
    """(grad of x, grad of i0, alpha's gradient per neuron (B, F) or None)."""
    i_all, x, i0, alpha = saved
    if g_i is None:
        g_i = torch.zeros_like(i_all)
    args = (g_i, g_final, i_all, x, i0, alpha, alpha_grad)
    if direct(x):
        g_x, g_i0, g_alpha = backend_ops(x.device).synaptic_backward(*args)
    else:
        g_x, g_i0, g_alpha = synaptic_current_backward(*args)
    return g_x, g_i0, g_alpha if alpha_grad else None


def _synaptic_setup(ctx, inputs, output):
    x, i0, alpha = inputs
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(output[0], x, i0, alpha)


def _synaptic_backward(ctx, g_i, g_final):
    saved = ctx.saved_tensors
    alpha_grad = ctx.needs_input_grad[2]
    g_x, g_i0, g_alpha = synaptic_grads(saved, g_i, g_final, alpha_grad)
    return g_x, g_i0, reduce_param_grad(g_alpha, saved[3]) if alpha_grad else None


synaptic_current.register_autograd(_synaptic_backward, setup_context=_synaptic_setup)
