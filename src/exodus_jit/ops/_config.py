"""Plain descriptions of neuron options, shared by the kernels, the reference and the layers.

The integer values are the kernels' enums (kernels/kernel_args.h); keep both in step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Callable, Tuple, Union

import torch


class SpikeKind(IntEnum):
    NONE = 0  # no spikes: the leaky integrator (ExpLeak); its output is the membrane
    MULTI = 1  # (v > 0) * trunc(v / threshold)
    SINGLE = 2  # v >= threshold
    MAX = 3  # min(MULTI, max_spikes)


class SaveKind(IntEnum):
    """What the forward op keeps for backward (kernels/kernel_args.h SaveKind)."""

    NOTHING = 0
    CHECKPOINTS = 1  # the state every CHECKPOINT_STEPS steps; backward recomputes in between
    TRAJECTORY = 2  # the whole membrane trajectory, for surrogates evaluated in PyTorch


CHECKPOINT_STEPS = 8  # kernels/kernel_args.h kCheckpointSteps


def checkpoints(steps: int) -> int:
    return (steps + CHECKPOINT_STEPS - 1) // CHECKPOINT_STEPS


class ResetKind(IntEnum):
    SUBTRACT = 0  # v - spikes * subtract_value (threshold by default)
    TO_VALUE = 1  # v * (spikes == 0) + reset_value, exactly as sinabs' MembraneReset


class SurrogateKind(IntEnum):
    GIVEN = 0  # a callable evaluated with PyTorch
    SINGLE_EXPONENTIAL = 1
    PERIODIC_EXPONENTIAL = 2
    HEAVISIDE = 3
    GAUSSIAN = 4
    MULTI_GAUSSIAN = 5


@dataclass(frozen=True)
class Surrogate:
    """A surrogate gradient evaluated inside the kernels: its kind and parameters in kernel order.

    Build one with the class methods; `params` follow kernels/neuron_math.h.
    """

    kind: SurrogateKind
    params: Tuple[float, ...]

    @classmethod
    def single_exponential(cls, grad_width: float = 0.5, grad_scale: float = 1.0) -> "Surrogate":
        return cls(SurrogateKind.SINGLE_EXPONENTIAL, (float(grad_width), float(grad_scale)))

    @classmethod
    def periodic_exponential(cls, grad_width: float = 0.5, grad_scale: float = 1.0) -> "Surrogate":
        return cls(SurrogateKind.PERIODIC_EXPONENTIAL, (float(grad_width), float(grad_scale)))

    @classmethod
    def heaviside(cls, window: float = 1.0) -> "Surrogate":
        return cls(SurrogateKind.HEAVISIDE, (float(window),))

    @classmethod
    def gaussian(cls, mu: float = 0.0, sigma: float = 0.5, grad_scale: float = 1.0) -> "Surrogate":
        return cls(SurrogateKind.GAUSSIAN, (float(mu), float(sigma), float(grad_scale)))

    @classmethod
    def multi_gaussian(cls, mu: float = 0.0, sigma: float = 0.5, h: float = 0.15, s: float = 6.0,
                       grad_scale: float = 1.0) -> "Surrogate":
        return cls(SurrogateKind.MULTI_GAUSSIAN, (float(mu), float(sigma), float(h), float(s), float(grad_scale)))

    def __call__(self, v: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        """The surrogate's value, in PyTorch (the reference, and the check of the kernels)."""
        p = self.params
        if self.kind == SurrogateKind.SINGLE_EXPONENTIAL:
            width = threshold * p[0]
            return p[1] / width * torch.exp(-torch.abs(v - threshold) / width)
        if self.kind == SurrogateKind.PERIODIC_EXPONENTIAL:
            normalized = v / threshold - 0.5
            periodic = threshold * (2 * (normalized - torch.floor(normalized)) - 1)
            below = (v - threshold) * (v < threshold)
            above = periodic * (v >= threshold)
            return p[1] * torch.exp(-torch.abs(above + below) / p[0])
        if self.kind == SurrogateKind.HEAVISIDE:
            return (v >= threshold - p[0]).to(v.dtype) / threshold
        if self.kind == SurrogateKind.GAUSSIAN:
            return _gaussian(v - threshold, p[0], p[1]) * p[2]
        if self.kind == SurrogateKind.MULTI_GAUSSIAN:
            x, mu, sigma, h, wide = v - threshold, p[0], p[1], p[2], p[3] * p[1]
            return ((1 + h) * _gaussian(x, mu, sigma) - h * _gaussian(x, sigma, wide)
                    - h * _gaussian(x, -sigma, wide)) * p[4]
        raise ValueError(f"surrogate kind {self.kind!r} has no built-in formula")


def _gaussian(x: torch.Tensor, mu: float, sigma: float) -> torch.Tensor:
    return torch.exp(-((x - mu) ** 2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))


SurrogateLike = Union[Surrogate, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]

SPIKE_NAMES = {"multi": SpikeKind.MULTI, "single": SpikeKind.SINGLE, "max": SpikeKind.MAX, "none": SpikeKind.NONE}
RESET_NAMES = {"subtract": ResetKind.SUBTRACT, "to_value": ResetKind.TO_VALUE}
