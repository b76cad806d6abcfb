"""The kernels' extensions: which sources make them, and loading them on first use."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import torch

from ..jit import CacheEntry, ExtensionSpec, prepare

# Half conversions are written as static_casts, which torch's default nvcc flags switch off.
HALF_CONVERSIONS = tuple(
    f"-U{macro}"
    for macro in ("__CUDA_NO_HALF_OPERATORS__", "__CUDA_NO_HALF_CONVERSIONS__",
                  "__CUDA_NO_BFLOAT16_CONVERSIONS__", "__CUDA_NO_HALF2_OPERATORS__")
)


def kernels_dir() -> Path:
    """The C++/CUDA sources: inside the installed package, else at the source checkout's root."""
    packaged = Path(__file__).resolve().parent.parent / "kernels"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[3] / "kernels"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"exodus-jit kernel sources not found at {packaged} or {checkout}")


def headers(root: Path) -> tuple:
    """Every header of the kernel sources: their content is part of the build's cache key."""
    return tuple(sorted(p for p in root.iterdir() if p.suffix in (".h", ".cuh")))


def _spec(name: str, sources: Sequence[str], **flags) -> ExtensionSpec:
    root = kernels_dir()
    return ExtensionSpec(
        name=name,
        sources=tuple(root / s for s in sources),
        depends=headers(root),
        include_dirs=(root,),
        **flags,
    )


def cpu_vector_flags() -> tuple:
    """("-mavx2",) where torch runs its own CPU kernels with AVX2 or AVX-512
    (`torch.backends.cpu.get_cpu_capability()`, which `ATEN_CPU_CAPABILITY=default` turns down),
    else (): the neuron loops then take 8 floats per instruction instead of SSE2's 4, with the same
    values (IEEE arithmetic without contraction, trunc and floor as roundps). The flags are part of
    the cache key, so a CPU without AVX2 builds and keeps an entry of its own."""
    return ("-mavx2",) if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") else ()


def cpu_spec() -> ExtensionSpec:
    # -fno-trapping-math lets the compiler turn the branch-free selects of the neuron loops into
    # vector code (FP exceptions are never observed here); values and rounding are unchanged.
    return _spec("exodus_kernels_cpu", ("cpu_kernels.cpp", "ops_cpu.cpp"),
                 cflags=("-fopenmp", "-fno-trapping-math", *cpu_vector_flags()), ldflags=("-fopenmp",))


def cuda_spec() -> ExtensionSpec:
    # the fast kernels' instances per data type, synaptic stage and copy width, and the scan
    # backward's, each in a file of their own: they compile in parallel. ninja starts them in
    # this order, so the longest come first (on one core: ops_cuda.cpp ~22 s, each fast-kernel
    # file 20-25, each scan file ~17-20, cuda_kernels.cu 7, cuda_decay.cu 2): with fewer jobs
    # than files, the files left for the second wave are then the short ones.
    fast = [f"cuda_membrane{t}{s}{w}.cu" for t in ("", "_half", "_bf16") for s in ("", "_syn") for w in ("", "_wide")]
    scan = [f"cuda_scan_backward{s}{k}.cu" for s in ("", "_syn") for k in ("", "_multi", "_max")]
    sources = ("ops_cuda.cpp", *fast, *scan, "cuda_kernels.cu", "cuda_decay.cu")
    return _spec("exodus_kernels_cuda", sources, cuda_cflags=HALF_CONVERSIONS)


_lock = threading.Lock()
_ready = set()


def build(device_type: str, archs: Sequence[str] = (), load: bool = True) -> CacheEntry:
    """Build (if needed) the extension for 'cpu' or 'cuda'; also loads it unless told not to."""
    spec = cpu_spec() if device_type == "cpu" else cuda_spec()
    return prepare(spec, archs, load=load)


def backend_ops(device: torch.device):
    """torch.ops.exodus_jit_cpu or torch.ops.exodus_jit_cuda, compiled and loaded on first use."""
    device_type = device.type
    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"exodus-jit kernels run on cpu and cuda tensors, not {device_type}")
    if device_type not in _ready:
        with _lock:
            if device_type not in _ready:
                build(device_type)
                _ready.add(device_type)
    return torch.ops.exodus_jit_cpu if device_type == "cpu" else torch.ops.exodus_jit_cuda

