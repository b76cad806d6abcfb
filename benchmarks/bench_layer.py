"""Time one neuron layer, forward and backward separately, per DESIGN.md / ANCHORS.md protocol.

Mode "layer": the LIF layer alone (tau_mem=10, default sinabs options), input randn * 10
requiring grad, ~10% firing; CUDA events after warm-up, median of repeats; peak extra memory of
one forward + backward. Mode "linear": nn.Linear(N, N) followed by the layer, the Open
Neuromorphic SNN library benchmark's network (its weights seeded alike for every framework).
Frameworks: exodus-jit, sinabs (BPTT), sinabs-exodus (2.0, where it is installed),
SpikingJelly 2.0, and "floor", the protocol's floor: one autograd Function with a copy-speed
kernel each way. Also the device-to-device copy bandwidth, to put achieved bytes/s next to it.

    python benchmarks/bench_layer.py --device cuda --sizes 16x500x512 16x500x16384 --json out.json
    python benchmarks/bench_layer.py --device cuda --sweep n t --frameworks exodus-jit spikingjelly
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


class SpikingJellyLIF(torch.nn.Module):
    """SpikingJelly 2.0's multi-step LIF in its own (T, B, N) layout, with a sinabs-like reset."""

    time_major = True

    def __init__(self):
        super().__init__()
        from spikingjelly.activation_based import functional, neuron

        self.node = neuron.LIFNode(tau=10.0, step_mode="m", v_reset=None)
        self._reset = functional.reset_net

    def reset_states(self):
        self._reset(self.node)

    def forward(self, x):
        return self.node(x)


class _CopyFloor(torch.autograd.Function):
    """One elementwise kernel each way, moving a layer's floor bytes: forward reads x and writes
    the output, backward reads the output gradient and x and writes x's gradient."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return torch.add(g, x, alpha=0.0)


class FloorLayer(torch.nn.Module):
    """The protocol's floor for any layer built on torch autograd: one Function call per forward
    (host time of one custom Function and one launch) and copy-speed kernels. No neuron layer
    can beat it in this protocol, so it shows how much of a target the host leaves."""

    def reset_states(self):
        pass

    def forward(self, x):
        return _CopyFloor.apply(x)


FRAMEWORKS = ("exodus-jit", "sinabs", "sinabs-exodus", "spikingjelly", "floor")
MODES = ("layer", "linear")
# --sweep: B x T x N sizes over the neurons at the protocol's 16 x 500, and over time at 1024
SWEEPS = {"n": [f"16x500x{n}" for n in (512, 1024, 2048, 4096, 8192, 16384)],
          "t": [f"16x{t}x1024" for t in (100, 250, 500, 1000, 2000, 4000)]}


def make_layer(framework: str, kind: str, device: str):
    if framework == "floor":
        return FloorLayer() if kind == "LIF" else None
    if framework == "spikingjelly":
        if kind != "LIF":
            return None
        return SpikingJellyLIF().to(device)
    kwargs = {"LIF": dict(tau_mem=10.0), "IAF": {}, "LIF_syn": dict(tau_mem=10.0, tau_syn=5.0),
              "LIF_minv": dict(tau_mem=10.0, min_v_mem=-1.0)}[kind]
    name = "IAF" if kind == "IAF" else "LIF"
    if framework == "exodus-jit":
        from exodus_jit import layers
    elif framework == "sinabs":
        import sinabs.layers as layers
    elif framework == "sinabs-exodus":
        import sinabs.exodus.layers as layers  # built from its source distribution (benchmarks/README.md)
    else:
        raise ValueError(framework)
    return getattr(layers, name)(**kwargs).to(device)


class LinearThen(torch.nn.Module):
    """nn.Linear(N, N) then a neuron layer: the Open Neuromorphic benchmark's network. The linear
    map acts on the last dimension, so each framework's own time layout passes through it."""

    def __init__(self, features: int, layer: torch.nn.Module, device: str, dtype=torch.float32):
        super().__init__()
        torch.manual_seed(1)  # the same weights for every framework
        self.linear = torch.nn.Linear(features, features, device=device, dtype=dtype)
        self.layer = layer
        self.time_major = getattr(layer, "time_major", False)

    def reset_states(self):
        self.layer.reset_states()

    def forward(self, x):
        return self.layer(self.linear(x))


def make_model(framework: str, kind: str, device: str, mode: str, features: int, dtype=torch.float32):
    """The timed module of a mode: the layer alone, or nn.Linear(features, features) in the data's
    dtype then the layer."""
    layer = make_layer(framework, kind, device)
    if layer is None or mode == "layer":
        return layer
    if mode == "linear":
        return LinearThen(features, layer, device, dtype)
    raise ValueError(mode)


def sizes_of(sizes: list, sweeps: list) -> list:
    """The sizes to run: those given, then each sweep's, in order and without repeats."""
    out = []
    for size in [*sizes, *(s for sweep in sweeps for s in SWEEPS[sweep])]:
        if size not in out:
            out.append(size)
    return out


class Timer:
    """Milliseconds of a callable: CUDA events on a GPU, perf_counter on the CPU. `host_ms` is
    the last call's host time (perf_counter around the callable alone, without the wait for the
    GPU): where it is close to the event time, the call was host-bound."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.host_ms = 0.0

    def __call__(self, fn) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            t0 = time.perf_counter()
            fn()
            self.host_ms = (time.perf_counter() - t0) * 1e3
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        self.host_ms = (time.perf_counter() - t0) * 1e3
        return self.host_ms


def clear_grads(model: torch.nn.Module, x: torch.Tensor) -> None:
    """No gradient accumulation in the times: x's and the model's parameters' gradients start
    each repeat as None, as after `optimizer.zero_grad()` (set_to_none, torch's default) in a
    training step. Otherwise a parameter's gradient (tau_mem's, the linear mode's weights) is
    added into the last one by one more kernel and its host time in every backward."""
    x.grad = None
    model.zero_grad(set_to_none=True)


def bench(framework: str, kind: str, shape, device: str, dtype, repeats: int, warmup: int,
          mode: str = "layer") -> dict:
    torch.manual_seed(0)
    layer = make_model(framework, kind, device, mode, shape[-1], dtype)
    if layer is None:
        return None
    if getattr(layer, "time_major", False):
        shape = (shape[1], shape[0], *shape[2:])  # the peer's native layout, same elements
    x = (torch.randn(shape, device=device) * 10).to(dtype).requires_grad_()
    grad = torch.randn(shape, device=device).to(dtype)
    timer = Timer(device)
    state = {}

    def forward():
        layer.reset_states()
        state["out"] = layer(x)

    def backward():
        state["out"].backward(grad)

    for _ in range(warmup):
        forward()
        backward()
    # the baseline holds the input and the incoming gradient only: no output, state or x.grad
    state.clear()
    clear_grads(layer, x)
    layer.reset_states()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    fwd, bwd, fwd_host, bwd_host = [], [], [], []
    clocks = [sm_clock_mhz(device)]
    for _ in range(repeats):
        clear_grads(layer, x)
        fwd.append(timer(forward))
        fwd_host.append(timer.host_ms)
        bwd.append(timer(backward))
        bwd_host.append(timer.host_ms)
    peak_mb = None
    if device.startswith("cuda"):
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    clocks.append(sm_clock_mhz(device))
    firing = float((state["out"] > 0).float().mean())
    return {"framework": framework, "layer": kind, "mode": mode, "shape": list(shape) if not getattr(layer, "time_major", False)
            else [shape[1], shape[0], *shape[2:]], "dtype": str(dtype).split(".")[-1],
            "device": device, "forward_ms": statistics.median(fwd), "backward_ms": statistics.median(bwd),
            "total_ms": statistics.median(f + b for f, b in zip(fwd, bwd)),
            # the host's share of each: the calls' own time on the host, medians
            "forward_host_ms": statistics.median(fwd_host), "backward_host_ms": statistics.median(bwd_host),
            "spread_ms": max(fwd) - min(fwd), "peak_extra_mb": peak_mb, "firing": firing, "repeats": repeats,
            "sm_clock_mhz": clocks}  # before and after the timed repeats


def sm_clock_mhz(device: str):
    """The SM clock over nvidia-smi's last sample period (None off CUDA or without NVML)."""
    if not device.startswith("cuda"):
        return None
    try:
        return torch.cuda.clock_rate()
    except Exception:  # no pynvml / amdsmi
        return None


def copy_bandwidth(device: str) -> float:
    """GB/s of a device-to-device copy of 2 GiB, counting bytes read plus written."""
    n = 2**29
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    timer = Timer(device)
    for _ in range(3):
        dst.copy_(src)
    ms = statistics.median(timer(lambda: dst.copy_(src)) for _ in range(20))
    return 2 * n * 4 / (ms * 1e-3) / 1e9


def command_output(*args: str, cwd: Optional[Path] = None) -> Optional[str]:
    """A command's stripped standard output, or None where it is missing or fails."""
    try:
        out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def nvidia_driver():
    """The NVIDIA driver's version (NVML, else nvidia-smi), or None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else version
    except Exception:
        pass
    out = command_output("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader")
    return out.splitlines()[0] if out else None


def source_version() -> dict:
    """exodus-jit's version, the hash of the kernel sources the JIT builds (its cache key's source
    part: what ran, whatever the checkout) and, in a git checkout, the commit and whether src/ or
    kernels/ differ from it (a GPU machine may get a working tree ahead of its .git: None where
    unknown)."""
    from exodus_jit import __version__
    from exodus_jit.ops import _extension

    root = Path(__file__).resolve().parents[1]
    commit = command_output("git", "rev-parse", "--short", "HEAD", cwd=root) or None
    changes = command_output("git", "status", "--porcelain", "--", "src", "kernels", cwd=root) if commit else None
    return {"exodus_jit": __version__, "commit": commit, "sources_differ": None if changes is None else changes != "",
            "kernel_sources": _extension.cuda_spec().source_hash()[:16]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", nargs="*", default=None,
                        help="B x T x N sizes (default: the protocol's four, unless --sweep is given)")
    parser.add_argument("--sweep", nargs="+", default=[], choices=sorted(SWEEPS),
                        help="n: N from 512 to 16384 at 16 x 500; t: T from 100 to 4000 at 16 x ... x 1024")
    parser.add_argument("--frameworks", nargs="+", default=["exodus-jit"], choices=FRAMEWORKS)
    parser.add_argument("--modes", nargs="+", default=["layer"], choices=MODES)
    parser.add_argument("--layers", nargs="+", default=["LIF"])
    parser.add_argument("--dtypes", nargs="+", default=["float32"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.sizes is None:
        args.sizes = [] if args.sweep else ["16x500x512", "16x500x4096", "16x500x16384", "16x4000x1024"]
    sizes = sizes_of(args.sizes, args.sweep)
    if not sizes:
        parser.error("no sizes: give --sizes or --sweep")

    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
           "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor(),
           "driver": nvidia_driver() if args.device.startswith("cuda") else None,
           "threads": torch.get_num_threads(), "kernels": os.environ.get("EXODUS_JIT_KERNELS", "fast"),
           **source_version()}
    results = []
    # the process's own warm-up (allocator pools, first launches of each kernel, host caches, the
    # host's clock) off the measurements: one throw-away run of every framework, layer and mode at
    # the first size, as long as a measured one. A shorter one (the first configuration, 3 repeats)
    # left the first measured configuration slow: exodus-jit's LIF forward at 16x500x512 read
    # 0.005-0.11 ms more than LIF with min_v (the same host path, measured later) in all ten
    # published H200 runs (benchmarks/NOTES.md).
    first = tuple(int(s) for s in sizes[0].split("x"))
    for mode in args.modes:
        for framework in args.frameworks:
            for kind in args.layers:
                try:
                    bench(framework, kind, first, args.device, getattr(torch, args.dtypes[0]), args.repeats,
                          args.warmup, mode)
                except Exception:  # reported when measured below
                    pass
    for mode in args.modes:
        for size in sizes:
            shape = tuple(int(s) for s in size.split("x"))
            for framework in args.frameworks:
                for kind in args.layers:
                    for dtype in args.dtypes:
                        try:
                            r = bench(framework, kind, shape, args.device, getattr(torch, dtype), args.repeats,
                                      args.warmup, mode)
                        except Exception as exc:  # a peer that fails here is reported, not fatal
                            print(f"{mode} {framework} {kind} {size} {dtype}: FAILED {type(exc).__name__}: {exc}")
                            continue
                        if r is None:
                            continue
                        bandwidth = ""
                        if mode == "layer":
                            elems = shape[0] * shape[1] * shape[2]
                            # the floor's bytes: forward reads x, writes s; backward reads g and x, writes g_x
                            r["floor_bytes"] = elems * 5 * torch.tensor([], dtype=getattr(torch, dtype)).element_size()
                            r["achieved_gbps"] = r["floor_bytes"] / (r["total_ms"] * 1e-3) / 1e9
                            bandwidth = f"{r['achieved_gbps']:7.0f} GB/s  "
                        results.append(r)
                        peak = f"{r['peak_extra_mb']:.0f} MB" if r["peak_extra_mb"] is not None else "-"
                        print(f"{mode:>6} {framework:>13} {kind:>8} {size:>13} {r['dtype']:>8}: fwd {r['forward_ms']:8.3f} ms  "
                              f"bwd {r['backward_ms']:8.3f} ms  total {r['total_ms']:8.3f} ms  peak {peak}  "
                              f"{bandwidth}firing {r['firing']:.2f}  host {r['forward_host_ms']:.3f}/{r['backward_host_ms']:.3f} ms"
                              + (f"  SM {r['sm_clock_mhz'][0]}-{r['sm_clock_mhz'][1]} MHz" if r["sm_clock_mhz"][0] else ""),
                              flush=True)
    out = {"environment": env, "results": results}
    if args.device.startswith("cuda"):
        out["copy_gbps"] = copy_bandwidth(args.device)
        print(f"device-to-device copy: {out['copy_gbps']:.0f} GB/s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
