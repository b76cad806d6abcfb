"""Probe the toolchain that builds extensions: compiler, ninja, CUDA toolkit, torch, GPUs.

Every probe is cheap (no compilation) and returns facts or None; turning missing facts into
errors is the builder's job, and printing them all is `exodus-jit doctor`'s.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from .errors import (
    CPU_ONLY_TORCH,
    CUDA_VERSION_MISMATCH,
    MISSING_CUDA_HEADERS,
    NO_COMPILER,
    NO_NINJA,
    NO_NVCC,
    UNSUPPORTED_ARCH,
    ExodusBuildError,
)

# Headers our CUDA sources include directly; c10's stream/guard headers pull in only the
# runtime API, never cuBLAS/cuSPARSE, so a minimal toolkit suffices.
REQUIRED_CUDA_HEADERS = ("cuda_runtime.h", "cuda_fp16.h", "cuda_bf16.h")


def _run(cmd: List[str], timeout: float = 30) -> Optional[str]:
    try:
        out = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def find_cxx() -> Optional[str]:
    """The C++ compiler torch.utils.cpp_extension will call ($CXX, else `c++`), resolved."""
    return shutil.which(os.environ.get("CXX", "c++"))


def cxx_version(cxx: str) -> Optional[str]:
    out = _run([cxx, "--version"])
    return out.splitlines()[0].strip() if out else None


def find_ninja() -> Optional[str]:
    """ninja from the `ninja` wheel (works without an activated venv), else from PATH."""
    try:
        import ninja  # the wheel puts its binary in ninja.BIN_DIR

        candidate = Path(ninja.BIN_DIR) / "ninja"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    except (ImportError, AttributeError):
        pass
    # An inactive venv: the interpreter's own bin folder may hold ninja.
    candidate = Path(sys.executable).parent / "ninja"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("ninja")


def _nvcc_in(home: Optional[str]) -> Optional[str]:
    if not home:
        return None
    nvcc = Path(home) / "bin" / "nvcc"
    return str(nvcc) if nvcc.is_file() and os.access(nvcc, os.X_OK) else None


def _home_behind_nvcc(nvcc: str) -> Optional[str]:
    """The toolkit an `nvcc` really runs, also when it is a wrapper script or a symlink.

    `nvcc --dryrun` of a compile prints the folder of the real driver
    (`_HERE_=/usr/local/cuda-13.0/bin`), which a wrapper such as
    `exec /usr/local/cuda-13.0/bin/nvcc "$@"` hides from a look at the path alone.
    """
    out = _run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull]) or ""
    match = re.search(r"_HERE_=(\S+)", out)
    if match:
        home = Path(match.group(1)).resolve().parent
        if _nvcc_in(str(home)):
            return str(home)
    try:  # a wrapper script naming the real nvcc
        text = Path(nvcc).read_text(errors="ignore")[:4096]
        match = re.search(r"(/\S+)/bin/nvcc\b", text)
        if match and _nvcc_in(match.group(1)):
            return str(Path(match.group(1)).resolve())
    except OSError:
        pass
    home = Path(nvcc).resolve().parent.parent
    return str(home) if _nvcc_in(str(home)) else None


@functools.lru_cache(maxsize=None)
def find_cuda_home() -> Optional[str]:
    """Resolve the CUDA toolkit: $CUDA_HOME / $CUDA_PATH, nvcc on PATH, /usr/local/cuda."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home:
            # An explicit choice is honoured or reported, never silently replaced by a guess.
            return str(Path(home).resolve()) if _nvcc_in(home) else None
    nvcc = shutil.which("nvcc")
    if nvcc:
        home = _home_behind_nvcc(nvcc)
        if home:
            return home
    if _nvcc_in("/usr/local/cuda"):
        return str(Path("/usr/local/cuda").resolve())
    return None


@functools.lru_cache(maxsize=None)
def nvcc_version(cuda_home: str) -> Optional[str]:
    """`13.0` from `nvcc --version` ("Cuda compilation tools, release 13.0, V13.0.88")."""
    out = _run([str(Path(cuda_home) / "bin" / "nvcc"), "--version"])
    match = re.search(r"release (\d+\.\d+)", out or "")
    return match.group(1) if match else None


@functools.lru_cache(maxsize=None)
def nvcc_supported_archs(cuda_home: str) -> Tuple[str, ...]:
    """Architectures nvcc can target, as "9.0" strings (empty when nvcc cannot say)."""
    out = _run([str(Path(cuda_home) / "bin" / "nvcc"), "--list-gpu-arch"]) or ""
    archs = []
    for match in re.finditer(r"compute_(\d+)(\d)[a-z]?\b", out):
        archs.append(f"{match.group(1)}.{match.group(2)}")
    return tuple(sorted(set(archs), key=lambda a: tuple(map(int, a.split(".")))))


def _pip_nvidia_include_dirs() -> List[str]:
    """Include folders of pip-installed NVIDIA packages (nvidia/*/include, nvidia/cu*/include)."""
    dirs = []
    for site in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        dirs.extend(sorted(glob.glob(os.path.join(site, "nvidia", "*", "include"))))
    return [d for d in dirs if os.path.isdir(d)]


def cuda_include_dirs(cuda_home: str) -> List[str]:
    """Extra include folders for headers the toolkit lacks; raises when nobody has them."""
    toolkit_dirs = [Path(cuda_home) / "include", Path(cuda_home) / "targets" / "x86_64-linux" / "include"]
    extra: List[str] = []
    missing = []
    for header in REQUIRED_CUDA_HEADERS:
        if any((d / header).is_file() for d in toolkit_dirs):
            continue
        found = next((d for d in _pip_nvidia_include_dirs() if (Path(d) / header).is_file()), None)
        if found is None:
            missing.append(header)
        elif found not in extra:
            extra.append(found)
    if missing:
        raise ExodusBuildError(
            MISSING_CUDA_HEADERS, f"Missing: {', '.join(missing)} (CUDA_HOME={cuda_home})."
        )
    return extra


@dataclass(frozen=True)
class TorchInfo:
    version: str
    cuda: Optional[str]
    cxx11_abi: bool
    python_abi: str


@functools.lru_cache(maxsize=None)
def torch_info() -> TorchInfo:
    import torch

    return TorchInfo(
        version=torch.__version__,
        cuda=torch.version.cuda,
        cxx11_abi=bool(torch._C._GLIBCXX_USE_CXX11_ABI),
        python_abi=sys.implementation.cache_tag,  # e.g. cpython-311
    )


def visible_gpus() -> List[Tuple[str, str]]:
    """(name, "9.0") for each visible CUDA GPU; empty without CUDA or GPUs."""
    import torch

    if torch.version.cuda is None or not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(index)
        gpus.append((torch.cuda.get_device_name(index), f"{major}.{minor}"))
    return gpus


def normalize_archs(archs: List[str]) -> Tuple[str, ...]:
    """Accept "9.0", "90", "sm_90", "9.0+PTX"; return sorted unique "9.0"-style strings."""
    result = set()
    for arch in archs:
        text = arch.strip().lower().replace("sm_", "").replace("compute_", "")
        ptx = text.endswith("+ptx")
        text = text.replace("+ptx", "")
        if not text:
            continue
        if "." not in text:
            if not text.isdigit() or len(text) < 2:
                raise ValueError(f"unrecognised GPU architecture {arch!r}; use e.g. 9.0 or sm_90")
            text = f"{text[:-1]}.{text[-1]}"
        if not re.fullmatch(r"\d+\.\d+a?", text):
            raise ValueError(f"unrecognised GPU architecture {arch!r}; use e.g. 9.0 or sm_90")
        result.add(text + ("+PTX" if ptx else ""))
    return tuple(sorted(result, key=lambda a: (tuple(int(p) for p in re.findall(r"\d+", a)), a.endswith("+PTX"))))


def default_cuda_archs() -> Tuple[str, ...]:
    """TORCH_CUDA_ARCH_LIST when set, else the visible GPUs' architectures."""
    env = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if env:
        return normalize_archs(re.split(r"[;\s,]+", env))
    return normalize_archs([cc for _, cc in visible_gpus()])


def require_compiler() -> str:
    cxx = find_cxx()
    if cxx is None:
        raise ExodusBuildError(NO_COMPILER, f"CXX={os.environ.get('CXX', '(unset, so c++)')}")
    return cxx


def require_ninja() -> str:
    ninja = find_ninja()
    if ninja is None:
        raise ExodusBuildError(NO_NINJA, f"PATH={os.environ.get('PATH', '')}")
    return ninja


@dataclass(frozen=True)
class CudaToolkit:
    home: str
    version: str
    include_dirs: Tuple[str, ...]


def require_cuda_toolkit(archs: Tuple[str, ...]) -> CudaToolkit:
    """Check everything a CUDA build needs, raising the diagnosis that applies."""
    info = torch_info()
    if info.cuda is None:
        raise ExodusBuildError(CPU_ONLY_TORCH, f"torch {info.version}")
    home = find_cuda_home()
    if home is None:
        raise ExodusBuildError(
            NO_NVCC,
            f"CUDA_HOME={os.environ.get('CUDA_HOME', '(unset)')}, "
            f"nvcc on PATH: {shutil.which('nvcc') or 'none'}; torch wants CUDA {info.cuda}.",
        )
    version = nvcc_version(home)
    if version is None:
        raise ExodusBuildError(NO_NVCC, f"{home}/bin/nvcc does not report a version.")
    if version.split(".")[0] != info.cuda.split(".")[0]:
        raise ExodusBuildError(
            CUDA_VERSION_MISMATCH,
            f"nvcc at {home}/bin/nvcc is CUDA {version}; torch {info.version} was built with "
            f"CUDA {info.cuda}.",
        )
    supported = nvcc_supported_archs(home)
    if supported:
        bad = [a for a in archs if a.replace("+PTX", "").rstrip("a") not in supported]
        if bad:
            raise ExodusBuildError(
                UNSUPPORTED_ARCH,
                f"Requested {', '.join(bad)}; CUDA {version} supports {', '.join(supported)}.",
            )
    return CudaToolkit(home, version, tuple(cuda_include_dirs(home)))
