"""The extension cache: where entries live, how they are keyed, and the cross-process lock.

Layout under the cache root::

    <name>-<key>/            one complete entry: the library, entry.json, build.log
    locks/<name>-<key>.lock  flock'ed while that entry is built (outside the entry)
    tmp/                     builds in progress, renamed into place when complete
    logs/                    logs of failed builds
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from .errors import CACHE_UNWRITABLE, LOCK_TIMEOUT, ExodusBuildError

ENTRY_FILE = "entry.json"
DEFAULT_LOCK_TIMEOUT_S = 900.0


def cache_root() -> Path:
    """$EXODUS_JIT_CACHE, else $XDG_CACHE_HOME/exodus_jit, else ~/.cache/exodus_jit."""
    explicit = os.environ.get("EXODUS_JIT_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "exodus_jit"


def ensure_writable(root: Path) -> None:
    """Create the cache folders, or raise the cache-unwritable diagnosis."""
    try:
        for sub in ("locks", "tmp", "logs"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        probe = root / "tmp" / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ExodusBuildError(CACHE_UNWRITABLE, f"{root}: {exc.strerror or exc}") from None


@dataclass
class CacheEntry:
    """One complete build in the cache, as described by its entry.json."""

    path: Path
    meta: Dict

    @property
    def name(self) -> str:
        return self.meta.get("name", "?")

    @property
    def key(self) -> str:
        return self.meta.get("key", "?")

    @property
    def library(self) -> Path:
        return self.path / self.meta.get("library", "")

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())


def read_entry(path: Path) -> Optional[CacheEntry]:
    """The entry at `path` if it is complete (metadata and library present), else None."""
    try:
        meta = json.loads((path / ENTRY_FILE).read_text())
    except (OSError, ValueError):
        return None
    entry = CacheEntry(path, meta)
    return entry if entry.library.is_file() else None


def list_entries(root: Optional[Path] = None) -> List[CacheEntry]:
    root = cache_root() if root is None else root
    if not root.is_dir():
        return []
    entries = []
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name not in ("locks", "tmp", "logs"):
            entry = read_entry(child)
            if entry is not None:
                entries.append(entry)
    return entries


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _lock_holder(lock_path: Path) -> str:
    try:
        text = lock_path.read_text().strip()
    except OSError:
        return "unknown process"
    return text or "unknown process"


@contextmanager
def build_lock(lock_path: Path, timeout_s: Optional[float] = None, report=print) -> Iterator[None]:
    """Hold an exclusive flock on `lock_path`, waiting at most `timeout_s` seconds.

    flock is released by the kernel when the holder dies, so a killed build never leaves a lock
    behind. While waiting, says once who holds it.
    """
    if timeout_s is None:
        timeout_s = float(os.environ.get("EXODUS_JIT_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT_S))
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        start = time.monotonic()
        reported = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            waited = time.monotonic() - start
            if not reported and waited > 1.0:
                report(f"exodus-jit: waiting for the build lock {lock_path}, held by {_lock_holder(lock_path)}")
                reported = True
            if waited > timeout_s:
                raise ExodusBuildError(
                    LOCK_TIMEOUT,
                    f"Lock {lock_path} held by {_lock_holder(lock_path)}; waited {waited:.0f} s.",
                )
            time.sleep(0.2)
        holder = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
