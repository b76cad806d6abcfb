"""exodus-jit: sinabs-compatible spiking layers with exact (EXODUS) gradients, in C++/CUDA
kernels compiled on first use."""

from ._version import __version__

__all__ = ["__version__"]
