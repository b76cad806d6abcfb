"""Helpers that run the same neuron configuration through sinabs (BPTT) and through exodus_jit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch
from sinabs.layers.functional.lif import lif_forward

from exodus_jit import ops
from exodus_jit.layers._translate import neuron_kwargs


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| (0 when both vanish), in float64."""
    a, b = a.double(), b.double()
    denom = b.norm().item()
    diff = (a - b).norm().item()
    return diff / denom if denom > 0 else diff


@dataclass
class Config:
    spike_fn: Any = None  # None: ExpLeak
    reset_fn: Any = None
    surrogate: Any = None
    min_v: Optional[float] = None
    tau_syn: Optional[float] = None
    norm_input: bool = False
    alpha_grad: bool = True
    alpha_mem: float = 0.9
    # record_states: with it the loss also reads the recorded states, which exodus computes with
    # its general kernels, and tau_syn runs synaptic_current first; without it the fast kernels
    # run, with the synaptic stage fused into them
    record: bool = True


@dataclass
class Run:
    out: torch.Tensor
    v_rec: Optional[torch.Tensor]
    v_final: torch.Tensor
    out_sum: torch.Tensor
    i_final: Optional[torch.Tensor]
    grads: Dict[str, torch.Tensor] = field(default_factory=dict)


def make_inputs(shape, cfg: Config, device="cpu", dtype=torch.float32, scale=None):
    B, T, *F = shape
    if scale is None:
        scale = 6.0 if cfg.norm_input else 1.5
    x = (torch.randn(shape, dtype=dtype) * scale).to(device).requires_grad_()
    v0 = (torch.rand((B, *F), dtype=dtype) * 0.5).to(device).requires_grad_()
    i0 = (torch.rand((B, *F), dtype=dtype) * 0.2).to(device).requires_grad_()
    weights = [torch.randn(shape, dtype=dtype).to(device), torch.randn((B, *F), dtype=dtype).to(device),
               torch.randn(shape, dtype=dtype).to(device), torch.randn((B, *F), dtype=dtype).to(device)]
    return x, v0, i0, weights


def _params(cfg: Config, device, dtype):
    alpha_mem = torch.tensor(cfg.alpha_mem, dtype=dtype, device=device, requires_grad=cfg.alpha_grad)
    alpha_syn = None
    if cfg.tau_syn is not None:
        alpha_syn = torch.exp(-1.0 / torch.tensor(cfg.tau_syn, dtype=dtype, device=device))
        alpha_syn = alpha_syn.detach().requires_grad_(cfg.alpha_grad)
    threshold = torch.tensor(1.0, dtype=dtype, device=device)
    min_v = None if cfg.min_v is None else torch.tensor(cfg.min_v, dtype=dtype, device=device)
    return alpha_mem, alpha_syn, threshold, min_v


def _finish(out, v_rec, v_final, i_final, weights, tensors, out_sum=None) -> Run:
    if out_sum is None:  # sinabs: the output's sum over time, which exodus kernels compute themselves
        out_sum = out.sum(1)
    loss = (out * weights[0]).sum() + (v_final * weights[1]).sum() + 0.3 * (out_sum * weights[3]).sum()
    if v_rec is not None:
        loss = loss + 0.1 * (v_rec * weights[2]).sum()
    if i_final is not None:
        loss = loss + (i_final * weights[3]).sum()
    names = [n for n, t in tensors.items() if t is not None and t.requires_grad]
    grads = torch.autograd.grad(loss, [tensors[n] for n in names], allow_unused=True)
    return Run(out.detach(), None if v_rec is None else v_rec.detach(), v_final.detach(), out_sum.detach(), None if i_final is None else i_final.detach(),
               {n: g for n, g in zip(names, grads) if g is not None})


def run_sinabs(cfg: Config, x, v0, i0, weights) -> Run:
    alpha_mem, alpha_syn, threshold, min_v = _params(cfg, x.device, x.dtype)
    state = {"v_mem": v0}
    if alpha_syn is not None:
        state["i_syn"] = i0
    out, state, rec = lif_forward(
        input_data=x, alpha_mem=alpha_mem, alpha_syn=alpha_syn, state=state, spike_threshold=threshold,
        spike_fn=cfg.spike_fn, reset_fn=cfg.reset_fn, surrogate_grad_fn=cfg.surrogate, min_v_mem=min_v,
        norm_input=cfg.norm_input, record_states=True)
    i_final = state["i_syn"] if alpha_syn is not None else None
    return _finish(out, rec["v_mem"] if cfg.record else None, state["v_mem"], i_final, weights,
                   {"x": x, "v0": v0, "i0": i0 if alpha_syn is not None else None, "alpha_mem": alpha_mem,
                    "alpha_syn": alpha_syn})


def run_exodus(cfg: Config, x, v0, i0, weights) -> Run:
    alpha_mem, alpha_syn, threshold, min_v = _params(cfg, x.device, x.dtype)
    i_final = None
    u = x
    kwargs = {"spike": "none"} if cfg.spike_fn is None else neuron_kwargs(cfg.spike_fn, cfg.reset_fn, cfg.surrogate)
    if alpha_syn is not None:
        if cfg.record:  # the two ops one after the other
            u, i_final = ops.synaptic_current(x, i0, alpha_syn)
        else:  # the synaptic stage fused into the membrane kernels
            kwargs.update(i_syn=i0, alpha_syn=alpha_syn)
    r = ops.membrane(u, v0, alpha_mem, threshold, min_v_mem=min_v, norm_input=cfg.norm_input,
                     record_states=cfg.record, sum_output=True, **kwargs)
    if "i_syn" in kwargs:
        i_final = r.i_final
    return _finish(r.output, r.v_rec if cfg.record else None, r.v_final, i_final, weights,
                   {"x": x, "v0": v0, "i0": i0 if alpha_syn is not None else None, "alpha_mem": alpha_mem,
                    "alpha_syn": alpha_syn}, out_sum=r.output_sum.to(r.output.dtype))
