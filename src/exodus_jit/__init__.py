"""exodus-jit: sinabs-compatible spiking layers with exact (EXODUS) gradients, in C++/CUDA
kernels compiled on first use."""

from ._version import __version__

__all__ = ["__version__", "conversion", "layers", "ops"]


def __getattr__(name):
    # Submodules load lazily: `exodus-jit doctor` and the build system need neither sinabs nor
    # the ops, and importing exodus_jit must stay cheap.
    if name in ("conversion", "layers", "ops"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'exodus_jit' has no attribute {name!r}")
