"""The kernels' Python face: torch custom ops (torch.ops.exodus_jit.*), their functional
wrappers, and a pure-PyTorch reference of the same computations.

Knows nothing of sinabs layers; `exodus_jit.layers` builds on it.
"""

from . import reference
from ._config import ResetKind, SpikeKind, Surrogate, SurrogateKind
from ._extension import build as build_extension
from ._extension import cpu_spec, cuda_spec, kernels_dir
from .functional import Decay, MembraneCall, MembraneOutput, get_backend, membrane, set_backend, synaptic_current

__all__ = [
    "Decay",
    "MembraneCall",
    "MembraneOutput",
    "ResetKind",
    "SpikeKind",
    "Surrogate",
    "SurrogateKind",
    "build_extension",
    "cpu_spec",
    "cuda_spec",
    "get_backend",
    "kernels_dir",
    "membrane",
    "reference",
    "set_backend",
    "synaptic_current",
]
