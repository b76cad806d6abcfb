"""The `exodus-jit` command: doctor, build, cache path|list|clear."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from typing import Dict, List, Optional, Sequence

from . import __version__
from .jit import ExodusBuildError, cache_key, cache_root, key_fields, list_entries, toolchain
from .jit.cache import CacheEntry, read_entry, remove_tree
from .jit.errors import CACHE_UNWRITABLE


def _specs():
    from .ops import cpu_spec, cuda_spec

    return {"cpu": cpu_spec(), "cuda": cuda_spec()}


def _current_nvcc() -> Optional[str]:
    home = toolchain.find_cuda_home()
    return toolchain.nvcc_version(home) if home else None


def entry_is_current(entry: CacheEntry) -> bool:
    """Built by this exodus-jit for this torch, Python and (where it can be checked) toolkit."""
    info = toolchain.torch_info()
    meta = entry.meta
    same_env = (meta.get("package_version") == __version__ and meta.get("torch_version") == info.version
                and meta.get("python_abi") == info.python_abi and meta.get("cxx11_abi") == info.cxx11_abi)
    if not same_env:
        return False
    spec = {s.name: s for s in _specs().values()}.get(meta.get("name"))
    if spec is None:
        return True  # not one of ours (e.g. a user's extension): judged by the environment alone
    nvcc = meta.get("nvcc_version")
    if spec.with_cuda:
        local = _current_nvcc()
        nvcc = local if local is not None else nvcc  # a compiler-less node trusts the builder's nvcc
    fields = key_fields(spec, meta.get("archs", []), nvcc)
    return cache_key(fields) == meta.get("key")


# ------------------------------------------------------------------------------------ doctor


def _backend_status(device: str, gpus: List) -> Dict:
    """Can this backend build and load here? {'status': ready|buildable|compilable|unavailable, ...}."""
    spec = _specs()[device]
    result: Dict = {"extension": spec.name}
    try:
        archs: Sequence[str] = ()
        nvcc = None
        if device == "cuda":
            archs = toolchain.default_cuda_archs()
            kit = toolchain.require_cuda_toolkit(tuple(archs))
            nvcc = kit.version
            result["cuda_home"] = kit.home
        cached = read_entry(cache_root() / f"{spec.name}-{cache_key(key_fields(spec, archs, nvcc))}")
        if cached is not None and (device == "cpu" or gpus):
            result.update(status="ready", detail=f"cached at {cached.path}")
            return result
        toolchain.require_compiler()
        toolchain.require_ninja()
        writable = _cache_writable()
        if not writable:
            raise ExodusBuildError(CACHE_UNWRITABLE, str(cache_root()))
        if device == "cuda" and not gpus:
            result.update(status="compilable", detail="toolchain complete; no GPU present to run on")
        else:
            result.update(status="buildable", detail="compiles on first use")
    except ExodusBuildError as exc:
        result.update(status="unavailable", diagnosis=exc.diagnosis.code, detail=str(exc))
    return result


def _cache_writable() -> bool:
    root = cache_root()
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return os.access(probe, os.W_OK)


def doctor_report() -> Dict:
    import torch

    info = toolchain.torch_info()
    cxx = toolchain.find_cxx()
    home = toolchain.find_cuda_home()
    try:
        gpus = [{"name": n, "capability": cc} for n, cc in toolchain.visible_gpus()]
    except Exception as exc:  # a broken driver must not stop the report
        gpus = []
        gpu_error = str(exc)
    else:
        gpu_error = None
    report = {
        "exodus_jit": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "torch": info.version,
        "torch_cuda": info.cuda,
        "cxx11_abi": info.cxx11_abi,
        "cxx": cxx,
        "cxx_version": toolchain.cxx_version(cxx) if cxx else None,
        "ninja": toolchain.find_ninja(),
        "cuda_home": home,
        "nvcc": f"{home}/bin/nvcc" if home else None,
        "nvcc_version": toolchain.nvcc_version(home) if home else None,
        "gpus": gpus,
        "gpu_error": gpu_error,
        "torch_cuda_available": bool(torch.cuda.is_available()),
        "cache_root": str(cache_root()),
        "cache_writable": _cache_writable(),
        "cache_entries": [_entry_row(e) for e in list_entries()],
        "backends": {"cpu": _backend_status("cpu", gpus), "cuda": _backend_status("cuda", gpus)},
    }
    return report


def _doctor_ok(report: Dict) -> bool:
    """CPU must work everywhere; CUDA must work where a GPU is present."""
    if report["backends"]["cpu"]["status"] == "unavailable":
        return False
    return not (report["gpus"] and report["backends"]["cuda"]["status"] == "unavailable")


def cmd_doctor(args) -> int:
    report = doctor_report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if _doctor_ok(report) else 1
    line = "{:<16}{}".format
    print(f"exodus-jit {report['exodus_jit']} doctor")
    print(line("python", report["python"]))
    print(line("platform", report["platform"]))
    print(line("torch", f"{report['torch']} (CUDA {report['torch_cuda'] or 'none: CPU-only build'}, "
                        f"cxx11 ABI {report['cxx11_abi']})"))
    print(line("c++ compiler", f"{report['cxx'] or 'NOT FOUND'}  {report['cxx_version'] or ''}".rstrip()))
    print(line("ninja", report["ninja"] or "NOT FOUND"))
    print(line("CUDA_HOME", report["cuda_home"] or "not found"))
    print(line("nvcc", f"{report['nvcc']} (CUDA {report['nvcc_version']})" if report["nvcc"] else "not found"))
    gpus = ", ".join(f"{g['name']} (sm {g['capability']})" for g in report["gpus"])
    print(line("GPUs", gpus or (f"error: {report['gpu_error']}" if report["gpu_error"] else "no GPU present")))
    print(line("cache", f"{report['cache_root']} ({'writable' if report['cache_writable'] else 'NOT writable'}, "
                        f"{len(report['cache_entries'])} entries)"))
    for device, status in report["backends"].items():
        print(line(f"backend {device}", f"{status['status'].upper()}: {status['detail'].splitlines()[0]}"))
        if status["status"] == "unavailable":
            print("\n".join("    " + l for l in status["detail"].splitlines()[1:]))
    ok = _doctor_ok(report)
    print("\nverdict: " + ("OK" if ok else "a backend this machine should support cannot work (see above)"))
    return 0 if ok else 1


# ------------------------------------------------------------------------------------ build


def cmd_build(args) -> int:
    from .ops import build_extension

    archs = [a for a in (args.arch or "").split(",") if a.strip()]
    targets = []
    if args.cpu or not (args.cpu or args.cuda):
        targets.append("cpu")
    if args.cuda or (not args.cpu and (archs or toolchain.visible_gpus())):
        targets.append("cuda")
    status = 0
    for device in targets:
        start = time.monotonic()
        try:
            entry = build_extension(device, archs=archs)
        except (ExodusBuildError, ValueError) as exc:
            print(f"{device}: FAILED\n{exc}", file=sys.stderr)
            status = 1
            continue
        print(f"{device}: {entry.path} ({time.monotonic() - start:.1f} s)")
    return status


# ------------------------------------------------------------------------------------ cache


def _entry_row(entry: CacheEntry) -> Dict:
    meta = entry.meta
    return {
        "name": meta.get("name"),
        "key": meta.get("key"),
        "path": str(entry.path),
        "size_bytes": entry.size_bytes(),
        "created": meta.get("created"),
        "build_seconds": meta.get("build_seconds"),
        "exodus_jit": meta.get("package_version"),
        "torch": meta.get("torch_version"),
        "torch_cuda": meta.get("torch_cuda"),
        "nvcc": meta.get("nvcc_version"),
        "archs": meta.get("archs"),
        "python_abi": meta.get("python_abi"),
        "current": entry_is_current(entry),
    }


def cmd_cache(args) -> int:
    root = cache_root()
    if args.cache_command == "path":
        print(root)
        return 0
    entries = list_entries(root)
    if args.cache_command == "list":
        rows = [_entry_row(e) for e in entries]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        if not rows:
            print(f"no entries in {root}")
        for r in rows:
            target = f"CUDA {r['nvcc']} archs {','.join(r['archs'])}" if r["torch_cuda"] else "CPU"
            print(f"{r['name']}-{r['key']}  {r['size_bytes'] / 1e6:.1f} MB  {r['created']}  torch {r['torch']}  "
                  f"{target}  {r['python_abi']}  {'current' if r['current'] else 'STALE'}")
        return 0
    # clear
    doomed = [e for e in entries if not (args.stale and entry_is_current(e))]
    if not doomed:
        print("nothing to remove")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            print(f"would remove {len(doomed)} entries from {root}; pass --yes to confirm", file=sys.stderr)
            return 1
        answer = input(f"remove {len(doomed)} entries from {root}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return 1
    for entry in doomed:
        remove_tree(entry.path)
        print(f"removed {entry.path}")
    if not args.stale:
        for sub in ("tmp", "logs"):
            shutil.rmtree(root / sub, ignore_errors=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exodus-jit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"exodus-jit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    doctor = sub.add_parser("doctor", help="report the toolchain, GPUs, cache and whether each backend works")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(func=cmd_doctor)

    build = sub.add_parser("build", help="compile the kernels ahead of time into the cache")
    build.add_argument("--cpu", action="store_true", help="build the CPU kernels")
    build.add_argument("--cuda", action="store_true", help="build the CUDA kernels")
    build.add_argument("--arch", help="GPU architectures, e.g. 8.0,9.0 (default: the visible GPUs)")
    build.set_defaults(func=cmd_build)

    cache = sub.add_parser("cache", help="inspect or clear the extension cache")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    cache_sub.add_parser("path", help="print the cache folder")
    listing = cache_sub.add_parser("list", help="list cached builds")
    listing.add_argument("--json", action="store_true")
    clear = cache_sub.add_parser("clear", help="remove cached builds")
    clear.add_argument("--stale", action="store_true", help="only entries that do not match this toolchain")
    clear.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    cache.set_defaults(func=cmd_cache)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
