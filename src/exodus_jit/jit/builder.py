"""Build and load torch extensions on first use, cached per toolchain.

Generic: an `ExtensionSpec` names sources and flags; nothing here knows what they compute.
Libraries are loaded with `torch.ops.load_library`, so extensions register their operators
with TORCH_LIBRARY and need no pybind11 (which also keeps compile times down).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

from .._version import __version__
from . import toolchain
from .cache import (
    ENTRY_FILE,
    CacheEntry,
    build_lock,
    cache_root,
    ensure_writable,
    read_entry,
    remove_tree,
)
from .errors import COMPILER_ERROR, LOAD_FAILED, ExodusBuildError

# Floating-point contraction would change results (a*b+c fused rounds once), so it is off for
# both compilers; see DESIGN.md "Dynamics".
BASE_CFLAGS = ("-O3", "-ffp-contract=off", "-fno-fast-math")
BASE_CUDA_CFLAGS = ("-O3", "-fmad=false", "--std=c++17")


@dataclass(frozen=True)
class ExtensionSpec:
    """What to compile: the extension's name, its sources and everything that changes the binary.

    Args:
        name: stable name, also the cache entry's prefix (letters, digits, underscores).
        sources: .cpp and .cu files; any .cu makes it a CUDA extension.
        depends: headers the sources include; their content is part of the cache key.
        include_dirs: extra include folders.
        cflags / cuda_cflags / ldflags: extra flags, added to exodus-jit's defaults.
    """

    name: str
    sources: Tuple[Path, ...]
    depends: Tuple[Path, ...] = ()
    include_dirs: Tuple[Path, ...] = ()
    cflags: Tuple[str, ...] = ()
    cuda_cflags: Tuple[str, ...] = ()
    ldflags: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name):
            raise ValueError(f"extension name {self.name!r} must be a C identifier")
        for path in (*self.sources, *self.depends):
            if not Path(path).is_file():
                raise FileNotFoundError(f"extension {self.name}: source {path} does not exist")

    @property
    def with_cuda(self) -> bool:
        return any(str(s).endswith(".cu") for s in self.sources)

    def source_hash(self) -> str:
        digest = hashlib.sha256()
        for path in sorted(map(Path, (*self.sources, *self.depends))):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
        return digest.hexdigest()


def key_fields(spec: ExtensionSpec, archs: Sequence[str] = (), nvcc_version: Optional[str] = None) -> Dict:
    """Everything that makes a build different (DESIGN.md, "JIT build system")."""
    info = toolchain.torch_info()
    return {
        "name": spec.name,
        "package_version": __version__,
        "source_hash": spec.source_hash(),
        "cflags": list(BASE_CFLAGS + spec.cflags),
        "cuda_cflags": list(BASE_CUDA_CFLAGS + spec.cuda_cflags) if spec.with_cuda else [],
        "ldflags": list(spec.ldflags),
        "torch_version": info.version,
        "torch_cuda": info.cuda if spec.with_cuda else None,
        "nvcc_version": nvcc_version if spec.with_cuda else None,
        "python_abi": info.python_abi,
        "cxx11_abi": info.cxx11_abi,
        "archs": list(archs) if spec.with_cuda else [],
    }


def cache_key(fields: Dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def default_max_jobs() -> int:
    """Parallel compile jobs: the cores we may use, bounded by memory (~1.5 GB a job)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    try:
        with open("/proc/meminfo") as meminfo:
            avail_kb = next(int(l.split()[1]) for l in meminfo if l.startswith("MemAvailable"))
        by_memory = max(1, int(avail_kb / (1.5 * 1024 * 1024)))
    except (OSError, StopIteration, ValueError):
        by_memory = cores
    return max(1, min(cores, by_memory, 32))


def _report(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cpp_extension():
    """torch.utils.cpp_extension, imported with CUDA_HOME already resolved by us.

    At import it guesses CUDA_HOME itself, where an nvcc wrapper script fools the guess, and
    warns on every machine without a GPU; we set the home for each build ourselves.
    """
    if "torch.utils.cpp_extension" not in sys.modules:
        logger = logging.getLogger("torch.utils.cpp_extension")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            import torch.utils.cpp_extension  # noqa: F401
        finally:
            logger.setLevel(level)
    import torch.utils.cpp_extension as cpp_ext

    return cpp_ext


@contextmanager
def _build_environment(ninja: str, cuda: Optional[toolchain.CudaToolkit], archs: Sequence[str]) -> Iterator[None]:
    """Point torch.utils.cpp_extension at our ninja, toolkit and architectures for one build."""
    cpp_ext = _cpp_extension()

    saved_env = dict(os.environ)
    saved_home = cpp_ext.CUDA_HOME
    os.environ["PATH"] = os.path.dirname(ninja) + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("MAX_JOBS", str(default_max_jobs()))
    if cuda is not None:
        os.environ["CUDA_HOME"] = cuda.home
        os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(archs)
        # cpp_extension resolved CUDA_HOME at import, where an nvcc wrapper script misleads it.
        cpp_ext.CUDA_HOME = cuda.home
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        cpp_ext.CUDA_HOME = saved_home


def _first_errors(log: str, limit: int = 12) -> str:
    lines = [l for l in log.splitlines() if re.search(r"\berror\b", l) and "Error building" not in l]
    return "\n".join(lines[:limit]) or "\n".join(log.splitlines()[-limit:])


def _compile(spec: ExtensionSpec, fields: Dict, entry_dir: Path, root: Path,
             cuda: Optional[toolchain.CudaToolkit], report: Callable[[str], None]) -> None:
    """Compile into a temporary folder and publish it as `entry_dir` by an atomic rename."""
    cpp_ext = _cpp_extension()

    ninja = toolchain.require_ninja()
    toolchain.require_compiler()
    archs = fields["archs"]
    tmp_dir = root / "tmp" / f"{entry_dir.name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmp_dir.mkdir(parents=True)
    # A fresh name per attempt: torch's in-process versioner would otherwise skip a rebuild.
    torch_name = f"{spec.name}_{uuid.uuid4().hex[:8]}"
    target = f"CUDA {cuda.version}, archs {', '.join(archs)}" if cuda else "CPU"
    with _build_environment(ninja, cuda, archs):
        jobs = os.environ["MAX_JOBS"]
        report(
            f"exodus-jit: compiling {spec.name} ({len(spec.sources)} sources) for torch "
            f"{fields['torch_version']}, {target}, with {jobs} jobs; first use only, cached in "
            f"{entry_dir}"
        )
        start = time.monotonic()
        try:
            cpp_ext.load(
                name=torch_name,
                sources=[str(s) for s in spec.sources],
                extra_cflags=list(BASE_CFLAGS + spec.cflags),
                extra_cuda_cflags=list(BASE_CUDA_CFLAGS + spec.cuda_cflags),
                extra_ldflags=list(spec.ldflags),
                extra_include_paths=[str(p) for p in spec.include_dirs]
                + (list(cuda.include_dirs) if cuda else []),
                build_directory=str(tmp_dir),
                with_cuda=spec.with_cuda,
                is_python_module=False,
                verbose=os.environ.get("EXODUS_JIT_VERBOSE") == "1",
            )
        except OSError as exc:  # built, but dlopen refused it
            remove_tree(tmp_dir)
            raise ExodusBuildError(LOAD_FAILED, str(exc)) from None
        except (RuntimeError, ImportError) as exc:  # ninja / compiler failure
            log_path = root / "logs" / f"{entry_dir.name}.log"
            log_path.write_text(str(exc))
            remove_tree(tmp_dir)
            raise ExodusBuildError(COMPILER_ERROR, _first_errors(str(exc)), log_path) from None
        elapsed = time.monotonic() - start
    meta = dict(fields, key=entry_dir.name.rsplit("-", 1)[1], library=f"{torch_name}.so",
                created=time.strftime("%Y-%m-%dT%H:%M:%S"), build_seconds=round(elapsed, 2),
                cuda_home=cuda.home if cuda else None)
    (tmp_dir / ENTRY_FILE).write_text(json.dumps(meta, indent=2))
    remove_tree(entry_dir)  # a broken entry; we hold the lock, so nobody else is using it
    os.rename(tmp_dir, entry_dir)
    report(f"exodus-jit: built {spec.name} in {elapsed:.1f} s")


_loaded: Dict[str, Path] = {}
_load_mutex = threading.Lock()


def _load_library(path: Path) -> None:
    import torch

    torch.ops.load_library(str(path))


def prepare(spec: ExtensionSpec, archs: Sequence[str] = (), *, load: bool = True,
            report: Callable[[str], None] = _report) -> CacheEntry:
    """Return the cache entry for `spec`, building it first if needed; load it unless told not to.

    A complete entry is loaded without taking the lock (so read-only caches work); otherwise
    the build runs under a cross-process lock, and an entry that fails to load is rebuilt once.
    """
    cuda = None
    if spec.with_cuda:
        archs = toolchain.normalize_archs(list(archs)) or toolchain.default_cuda_archs()
        if not archs:
            raise ValueError(
                f"{spec.name}: no GPU is visible, so name the target architectures "
                "(e.g. archs=['9.0'] or TORCH_CUDA_ARCH_LIST=9.0)"
            )
        cuda = toolchain.require_cuda_toolkit(tuple(archs))
    fields = key_fields(spec, archs, cuda.version if cuda else None)
    root = cache_root()
    entry_dir = root / f"{spec.name}-{cache_key(fields)}"

    with _load_mutex:
        if str(entry_dir) in _loaded:
            return read_entry(entry_dir) or CacheEntry(entry_dir, fields)
        entry = read_entry(entry_dir)
        if entry is not None and load:
            try:
                _load_library(entry.library)
                _loaded[str(entry_dir)] = entry.library
                return entry
            except OSError as exc:
                warnings.warn(
                    f"exodus-jit: cached {entry_dir.name} failed to load ({exc}); rebuilding it once",
                    RuntimeWarning,
                    stacklevel=2,
                )
                entry = None
                rebuild = True
        else:
            rebuild = False
        if entry is not None:
            return entry
        ensure_writable(root)
        with build_lock(root / "locks" / f"{entry_dir.name}.lock", report=report):
            entry = None if rebuild else read_entry(entry_dir)  # someone may have built it
            if entry is None:
                _compile(spec, fields, entry_dir, root, cuda, report)
                entry = read_entry(entry_dir)
                if entry is None:
                    raise ExodusBuildError(LOAD_FAILED, f"{entry_dir} is incomplete after the build")
                # torch loaded it from the temporary folder during the build
                _loaded[str(entry_dir)] = entry.library
                return entry
        if load:
            try:
                _load_library(entry.library)
            except OSError as exc:
                raise ExodusBuildError(LOAD_FAILED, f"{entry.library}: {exc}") from None
            _loaded[str(entry_dir)] = entry.library
        return entry
