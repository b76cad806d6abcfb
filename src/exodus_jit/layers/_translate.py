"""sinabs options -> exodus_jit.ops arguments, with NotImplementedError for what cannot run."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from sinabs.activation import (
    Gaussian,
    Heaviside,
    MaxSpike,
    MembraneReset,
    MembraneSubtract,
    MultiGaussian,
    MultiSpike,
    PeriodicExponential,
    SingleExponential,
    SingleSpike,
)

from ..ops import Surrogate

SUPPORTED = (
    "spike_fn: MultiSpike, SingleSpike, MaxSpike(m); reset_fn: MembraneSubtract(subtract_value), "
    "MembraneReset(reset_value); surrogate_grad_fn: any sinabs surrogate or callable f(v_mem, threshold)"
)


# spike_fn is passed as a class (sinabs convention); looked up by dict so torch.compile traces it
_SPIKE_CLASSES = {MultiSpike: "multi", SingleSpike: "single"}


def spike_kwargs(spike_fn: Any) -> Dict[str, Any]:
    if isinstance(spike_fn, type):
        name = _SPIKE_CLASSES.get(spike_fn)
        if name is not None:
            return {"spike": name}
    if isinstance(spike_fn, MaxSpike):
        if spike_fn.max_num_spikes_per_bin is None:
            return {"spike": "multi"}
        return {"spike": "max", "max_spikes": int(spike_fn.max_num_spikes_per_bin)}
    raise NotImplementedError(f"exodus-jit cannot run spike_fn={spike_fn!r}. Supported: {SUPPORTED}")


def reset_kwargs(reset_fn: Any) -> Dict[str, Any]:
    if isinstance(reset_fn, MembraneSubtract):
        return {"reset": "subtract", "subtract_value": reset_fn.subtract_value}
    if isinstance(reset_fn, MembraneReset):
        return {"reset": "to_value", "reset_value": float(reset_fn.reset_value)}
    raise NotImplementedError(f"exodus-jit cannot run reset_fn={reset_fn!r}. Supported: {SUPPORTED}")


_KERNEL_SURROGATES = {
    SingleExponential: lambda fn: Surrogate.single_exponential(fn.grad_width, fn.grad_scale),
    PeriodicExponential: lambda fn: Surrogate.periodic_exponential(fn.grad_width, fn.grad_scale),
    Heaviside: lambda fn: Surrogate.heaviside(fn.window),
    Gaussian: lambda fn: Surrogate.gaussian(fn.mu, fn.sigma, fn.grad_scale),
    MultiGaussian: lambda fn: Surrogate.multi_gaussian(fn.mu, fn.sigma, fn.h, fn.s, fn.grad_scale),
}


def surrogate_for(fn: Optional[Callable]) -> Any:
    """A sinabs surrogate as a kernel Surrogate; any other callable runs through PyTorch."""
    # looked up by exact type: a subclass may override __call__, so it keeps the PyTorch path
    to_kernel = _KERNEL_SURROGATES.get(type(fn))
    if to_kernel is not None:
        return to_kernel(fn)
    if fn is None or not callable(fn):
        raise NotImplementedError(f"surrogate_grad_fn={fn!r} is not callable. Supported: {SUPPORTED}")
    return fn


def neuron_kwargs(spike_fn: Any, reset_fn: Any, surrogate_grad_fn: Any) -> Dict[str, Any]:
    """All keyword arguments of exodus_jit.ops.membrane for a spiking sinabs configuration."""
    return {**spike_kwargs(spike_fn), **reset_kwargs(reset_fn), "surrogate": surrogate_for(surrogate_grad_fn)}
