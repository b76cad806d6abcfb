"""Pure-PyTorch reference of the ops: a time loop with autograd (BPTT), the tests' oracle.

It follows DESIGN.md's dynamics operation by operation and shares no code with the kernels.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ._config import ResetKind, SpikeKind, SurrogateLike


class _SpikeWithSurrogate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, threshold, spike_kind, max_spikes, surrogate):
        ctx.save_for_backward(v, threshold)
        ctx.surrogate = surrogate
        if spike_kind == SpikeKind.SINGLE:
            return (v - threshold >= 0).to(v.dtype)
        spikes = (v > 0) * torch.div(v, threshold, rounding_mode="trunc")
        if spike_kind == SpikeKind.MAX:
            spikes = torch.clamp(spikes, max=max_spikes)
        return spikes

    @staticmethod
    def backward(ctx, grad):
        v, threshold = ctx.saved_tensors
        return grad * ctx.surrogate(v, threshold), None, None, None, None


def membrane(u: torch.Tensor, v0: torch.Tensor, alpha: torch.Tensor, threshold: torch.Tensor,
             subtract: torch.Tensor, min_v: Optional[torch.Tensor], reset_value: float,
             spike_kind: SpikeKind, max_spikes: int, reset_kind: ResetKind, norm_input: bool,
             surrogate: SurrogateLike, record: bool
             ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """u (B, T, F), v0 (B, F), parameters (1,) or (F,) in the state dtype.

    Returns (output (B, T, F) in u's dtype, recorded states (B, T, F) or None, final state (B, F)).
    """
    w = v0
    outputs, states = [], []
    for t in range(u.shape[1]):
        x = u[:, t].to(v0.dtype)
        v = alpha * w + ((1 - alpha) * x if norm_input else x)
        if spike_kind == SpikeKind.NONE:
            outputs.append(v.clone())
            r = v
        else:
            s = _SpikeWithSurrogate.apply(v, threshold, spike_kind, max_spikes, surrogate)
            outputs.append(s)
            if reset_kind == ResetKind.SUBTRACT:
                r = v - s * subtract
            else:
                r = v * (s == 0).to(v.dtype) + reset_value
        w = torch.relu(r - min_v) + min_v if min_v is not None else r
        if record:
            states.append(w)
    shape = (u.shape[0], u.shape[1], u.shape[2])
    out = torch.stack(outputs, 1).to(u.dtype) if outputs else u.new_zeros(shape)
    recorded = (torch.stack(states, 1) if states else v0.new_zeros(shape)) if record else None
    return out, recorded, w


def synaptic_current(x: torch.Tensor, i0: torch.Tensor, alpha: torch.Tensor
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """i_t = alpha * (i_{t-1} + x_t); returns all currents (B, T, F) and the last (B, F)."""
    i = i0
    currents = []
    for t in range(x.shape[1]):
        i = alpha * (i + x[:, t].to(i0.dtype))
        currents.append(i)
    all_currents = torch.stack(currents, 1) if currents else i0.new_zeros(x.shape)
    return all_currents, i
