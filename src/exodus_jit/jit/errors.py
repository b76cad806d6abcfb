"""Build failures as diagnoses: each names its cause and the fix a user can apply."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class Diagnosis:
    """One known way a build can fail, with the text a user needs to fix it."""

    code: str
    cause: str
    fix: str


NO_COMPILER = Diagnosis(
    "no-compiler",
    "No C++ compiler was found (looked for $CXX, else `c++`).",
    "Install one (Debian/Ubuntu: `apt-get install g++`; conda: `conda install gxx_linux-64`) "
    "or point CXX at it, e.g. `export CXX=/usr/bin/g++`.",
)
NO_NINJA = Diagnosis(
    "no-ninja",
    "The ninja build tool was not found (neither the `ninja` wheel nor `ninja` on PATH).",
    "`pip install ninja` in the environment that runs exodus-jit.",
)
NO_NVCC = Diagnosis(
    "no-nvcc",
    "No CUDA toolkit was found: nvcc is not in $CUDA_HOME/bin, on PATH, or in /usr/local/cuda.",
    "Install the CUDA toolkit whose major version matches torch.version.cuda and set "
    "CUDA_HOME to it (e.g. `export CUDA_HOME=/usr/local/cuda-13.0`), or prepare the cache on a "
    "machine that has one with `exodus-jit build --cuda --arch ...`.",
)
CUDA_VERSION_MISMATCH = Diagnosis(
    "cuda-version-mismatch",
    "nvcc's CUDA major version differs from the one torch was built with.",
    "Point CUDA_HOME at a toolkit with torch's CUDA major version, or install the torch build "
    "that matches your toolkit (https://pytorch.org/get-started/locally/).",
)
CPU_ONLY_TORCH = Diagnosis(
    "cpu-only-torch",
    "This torch is a CPU-only build (torch.version.cuda is None), so CUDA kernels cannot be "
    "built or run with it.",
    "Install a CUDA build of torch, or use CPU tensors.",
)
UNSUPPORTED_ARCH = Diagnosis(
    "unsupported-arch",
    "The CUDA toolkit cannot generate code for a requested GPU architecture.",
    "Use a newer CUDA toolkit (and matching torch), or name architectures it supports with "
    "`exodus-jit build --arch` / TORCH_CUDA_ARCH_LIST (see `nvcc --list-gpu-arch`).",
)
MISSING_CUDA_HEADERS = Diagnosis(
    "missing-cuda-headers",
    "The CUDA toolkit lacks headers the kernels need (cuda_runtime.h, cuda_fp16.h, cuda_bf16.h), "
    "and no pip-installed NVIDIA package provides them.",
    "Install the full toolkit (or `pip install nvidia-cuda-runtime` matching your CUDA major "
    "version) and set CUDA_HOME to it.",
)
CACHE_UNWRITABLE = Diagnosis(
    "cache-unwritable",
    "The extension cache directory cannot be written.",
    "Set EXODUS_JIT_CACHE to a writable directory, or prepare the cache ahead of time with "
    "`exodus-jit build` where it is writable.",
)
COMPILER_ERROR = Diagnosis(
    "compiler-error",
    "The compiler failed on the extension sources.",
    "Read the first errors below and the full log; if the sources are exodus-jit's own, please "
    "report it with the output of `exodus-jit doctor`.",
)
LOCK_TIMEOUT = Diagnosis(
    "lock-timeout",
    "Another process has held the build lock for longer than the wait allows.",
    "Wait for that build to finish, or stop it; raise the wait with EXODUS_JIT_LOCK_TIMEOUT "
    "(seconds).",
)
LOAD_FAILED = Diagnosis(
    "load-failed",
    "The compiled extension was built but could not be loaded.",
    "Run `exodus-jit cache clear` and retry; if it persists, report it with the output of "
    "`exodus-jit doctor`.",
)

ALL_DIAGNOSES = (
    NO_COMPILER,
    NO_NINJA,
    NO_NVCC,
    CUDA_VERSION_MISMATCH,
    CPU_ONLY_TORCH,
    UNSUPPORTED_ARCH,
    MISSING_CUDA_HEADERS,
    CACHE_UNWRITABLE,
    COMPILER_ERROR,
    LOCK_TIMEOUT,
    LOAD_FAILED,
)


class ExodusBuildError(RuntimeError):
    """A kernel extension could not be built or loaded.

    Attributes:
        diagnosis: which known failure this is (``diagnosis.code`` is stable, for scripts).
        detail: what was found on this machine (versions, paths, first compiler errors).
        log_path: the full build log, when a compiler ran.
    """

    def __init__(self, diagnosis: Diagnosis, detail: str = "", log_path: Optional[Path] = None):
        self.diagnosis = diagnosis
        self.detail = detail
        self.log_path = log_path
        lines = [f"[{diagnosis.code}] {diagnosis.cause}"]
        if detail:
            lines.append(detail)
        if log_path is not None:
            lines.append(f"Full build log: {log_path}")
        lines.append(f"Fix: {diagnosis.fix}")
        super().__init__("\n".join(lines))
