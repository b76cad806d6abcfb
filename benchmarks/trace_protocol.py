"""Where the protocol's time goes, call by call: bench_layer.py's timed forward and backward under
torch.profiler, read back as one timeline per iteration (host calls and GPU kernels on one clock).

For each case it prints the medians over iterations of: when, after the forward's start event is
recorded, reset_states, the layer call and the main kernel's launch begin on the host, when the
kernel runs on the GPU and when the end event is recorded; the same for the backward (the engine
thread's start, the launch, the kernels after it, the end). Then the whole timeline of the median
iteration. Cases are FRAMEWORK:KIND:SIZE:DTYPE, as bench_layer.py names them; FRAMEWORK also `op` and
`op-reset` (OpOnly: the LIF layer's operator without the layer's Python).

    python benchmarks/trace_protocol.py --cases floor:LIF:16x500x512:float32 exodus-jit:LIF:16x500x512:float32
"""

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from bench_layer import clear_grads, make_layer  # noqa: E402

MARKS = ("reset_states", "layer_call", "backward_call")


class OpOnly(torch.nn.Module):
    """Diagnostic: the LIF layer's C++ operator called straight from forward with the arguments
    its MembraneCall prepared, the state a zero tensor it never resets (reset=False) or zeroes
    with one `zero_` (reset=True): the layer's time without its Python."""

    def __init__(self, x: torch.Tensor, reset: bool):
        super().__init__()
        from exodus_jit import layers

        lif = layers.LIF(tau_mem=10.0).cuda()
        lif(x.detach())
        call = lif.__dict__["_exodus_call"][1]
        self.op, self.args, self.reset = call._op, call._op_args, reset
        self.v0 = torch.zeros(x.shape[0], x.shape[2], device=x.device, dtype=call._state_dtype)
        self.tau = lif.tau_mem  # keeps the Parameter alive

    def reset_states(self):
        if self.reset:
            self.v0.zero_()

    def forward(self, x):
        return self.op(x, self.v0, *self.args)[0]


def run_case(case: str, iters: int, warmup: int, timed_only: bool = False):
    """The protocol under the profiler; returns the chrome trace's events. timed_only: the
    protocol without the profiler instead; returns the medians of its event times (ms)."""
    framework, kind, size, dtype_name = case.split(":")
    shape = tuple(int(s) for s in size.split("x"))
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    x = (torch.randn(shape, device="cuda") * 10).to(dtype).requires_grad_()
    if framework in ("op", "op-reset"):  # diagnostics, LIF only
        layer = OpOnly(x, reset=framework == "op-reset")
    else:
        layer = make_layer(framework, kind, "cuda")
    if getattr(layer, "time_major", False):
        shape = (shape[1], shape[0], *shape[2:])
        x = (torch.randn(shape, device="cuda") * 10).to(dtype).requires_grad_()
    grad = torch.randn(shape, device="cuda").to(dtype)
    state = {}

    def forward():
        with record_function("reset_states"):
            layer.reset_states()
        with record_function("layer_call"):
            state["out"] = layer(x)

    def backward():
        with record_function("backward_call"):
            state["out"].backward(grad)

    def timed(fn):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        # marked: the profiler leaves cudaEventRecord out of its runtime calls
        with record_function("start_record"):
            start.record()
        fn()
        with record_function("end_record"):
            end.record()
        end.synchronize()
        return start.elapsed_time(end)

    for _ in range(warmup):
        clear_grads(layer, x)
        timed(forward)
        timed(backward)
    torch.cuda.synchronize()
    if timed_only:
        fwd, bwd = [], []
        for _ in range(iters):
            clear_grads(layer, x)
            fwd.append(timed(forward))
            bwd.append(timed(backward))
        return {"forward_ms": statistics.median(fwd), "backward_ms": statistics.median(bwd),
                "total_ms": statistics.median(f + b for f, b in zip(fwd, bwd))}
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            clear_grads(layer, x)
            timed(forward)
            timed(backward)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            return json.load(f)["traceEvents"]


def iterations(events: list) -> list:
    """Splits the trace at the marked event records (forward start and end, backward start and
    end) into per-iteration lists of spans (host calls and GPU work, one clock)."""
    spans = [e for e in events if e.get("ph") == "X" and "ts" in e and "dur" in e]
    marks = sorted((e["ts"], e["name"]) for e in spans
                   if e.get("cat") == "user_annotation" and e["name"] in ("start_record", "end_record"))
    records = [t for t, _ in marks]
    if [n for _, n in marks[:4]] != ["start_record", "end_record"] * 2:
        print("unexpected record marks:", marks[:6])
        return []
    out = []
    for i in range(0, len(records) - 3, 4):
        t0, t_end = records[i], (records[i + 4] if i + 4 < len(records) else float("inf"))
        rows = [e for e in spans if t0 <= e["ts"] < t_end and e.get("cat") in
                ("cpu_op", "user_annotation", "cuda_runtime", "kernel", "gpu_memset", "gpu_memcpy", "cuda_driver")]
        out.append({"t": records[i:i + 4], "rows": rows})
    return out


def summary(it: dict) -> dict:
    """Microseconds after each direction's start record of its landmarks."""
    f0, f1, b0, b1 = it["t"]
    rows = it["rows"]
    kernels = [e for e in rows if e["cat"] in ("kernel", "gpu_memset")]
    launches = {e["args"].get("correlation"): e for e in rows if e["cat"] == "cuda_runtime" and "args" in e}

    def main_kernel(lo, hi):
        ks = [k for k in kernels if lo <= k["ts"] < hi]
        return max(ks, key=lambda k: k["dur"]) if ks else None

    def mark(name, lo, hi):
        ms = [e for e in rows if e["name"] == name and lo <= e["ts"] < hi and e["cat"] == "user_annotation"]
        return ms[0] if ms else None

    s = {}
    for d, lo, hi, nxt in (("fwd", f0, f1, b0), ("bwd", b0, b1, b1 + 1e9)):
        k = main_kernel(lo, nxt)
        ks = [x for x in kernels if lo <= x["ts"] < nxt]
        s[f"{d}.end_record"] = hi - lo
        if k is not None:
            launch = launches.get(k["args"].get("correlation"))
            s[f"{d}.launch"] = (launch["ts"] - lo) if launch else float("nan")
            s[f"{d}.kernel_start"] = k["ts"] - lo
            s[f"{d}.kernel_us"] = k["dur"]
            s[f"{d}.last_gpu_end"] = max(x["ts"] + x["dur"] for x in ks) - lo
            s[f"{d}.gpu_items"] = len(ks)
        s[f"{d}.launches"] = sum(1 for e in rows if e["cat"] == "cuda_runtime" and lo <= e["ts"] < hi
                                 and e["name"].startswith(("cudaLaunchKernel", "cuLaunchKernel", "cudaMemsetAsync")))
    for name in MARKS:
        m = mark(name, f0, b1)
        if m is not None:
            base = b0 if name == "backward_call" else f0
            s[f"{name}.start"] = m["ts"] - base
            s[f"{name}.dur"] = m["dur"]
    engine = [e for e in rows if e["cat"] == "cpu_op" and e["name"].startswith("autograd::engine::evaluate_function")
              and b0 <= e["ts"] < b1]
    if engine:
        s["bwd.engine_first"] = min(e["ts"] for e in engine) - b0
        s["bwd.engine_last_end"] = max(e["ts"] + e["dur"] for e in engine) - b0
    return s


def timeline(it: dict, limit: int = 200) -> str:
    f0 = it["t"][0]
    rows = sorted(it["rows"], key=lambda e: e["ts"])
    lines = []
    for e in rows:
        if e["cat"] == "cpu_op" and e["dur"] < 2 and not e["name"].startswith(("exodus", "autograd")):
            continue  # tiny nested ops: noise in a timeline
        where = "GPU " if e["cat"] in ("kernel", "gpu_memset", "gpu_memcpy") else f"t{e.get('tid', '?')}"[:6]
        lines.append(f"  {e['ts'] - f0:8.1f} +{e['dur']:7.1f}  {where:6s} {e['cat'][:10]:10s} {e['name'][:90]}")
    return "\n".join(lines[:limit])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", nargs="+", required=True)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--save", help="folder for the gzipped chrome traces")
    parser.add_argument("--timed-only", action="store_true",
                        help="no profiler: the protocol's event times alone (medians), e.g. for the op-only cases")
    args = parser.parse_args()
    report = {}
    if args.timed_only:
        for case in args.cases:
            report[case] = run_case(case, args.iters, args.warmup, timed_only=True)
            r = report[case]
            print(f"{case:45s} fwd {r['forward_ms']:.3f}  bwd {r['backward_ms']:.3f}  total {r['total_ms']:.3f} ms")
        print("JSON " + json.dumps(report))
        return
    for case in args.cases:
        events = run_case(case, args.iters, args.warmup)
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            with gzip.open(Path(args.save) / (case.replace(":", "_") + ".json.gz"), "wt") as f:
                json.dump(events, f)
        its = iterations(events)
        if len(its) != args.iters:
            print(f"warning: {len(its)} iterations found in the trace, {args.iters} run")
        if not its:
            continue
        sums = [summary(it) for it in its]
        keys = sorted({k for s in sums for k in s})
        med = {k: statistics.median(s[k] for s in sums if k in s) for k in keys}
        report[case] = med
        print(f"== {case}: {len(its)} iterations, medians (us after the direction's start record)")
        for k in keys:
            print(f"  {k:24s} {med[k]:9.1f}")
        total = [s["fwd.end_record"] for s in sums]
        pick = its[sorted(range(len(its)), key=lambda i: total[i])[len(its) // 2]]
        print("  timeline of the median iteration (us after the forward's start record; +duration):")
        print(timeline(pick))
    print("JSON " + json.dumps(report))


if __name__ == "__main__":
    main()
