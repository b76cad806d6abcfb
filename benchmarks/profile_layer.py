"""Where one layer call spends its time: CUDA kernels and host time, with torch.profiler.

    python benchmarks/profile_layer.py --size 16x500x512 [--dtype bfloat16]
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from bench_layer import clear_grads  # noqa: E402
from exodus_jit import layers  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="16x500x512")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--dtype", default="float32", help="the input's dtype (float32, bfloat16, float16)")
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.size.split("x"))
    dtype = getattr(torch, args.dtype)
    layer = layers.LIF(tau_mem=10.0).cuda()
    x = (torch.randn(shape, device="cuda") * 10).to(dtype).requires_grad_()
    grad = torch.randn(shape, device="cuda").to(dtype)

    def step():
        layer.reset_states()
        layer(x).backward(grad)

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        step()
    host = (time.perf_counter() - t0) / args.iters * 1e3
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / args.iters * 1e3
    print(f"{args.size}: host issue time {host:.3f} ms/iter, wall {wall:.3f} ms/iter")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(args.iters):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))
    protocol(layer, x, grad, args.iters)


def protocol(layer, x, grad, iters: int) -> None:
    """bench_layer.py's protocol (events around forward, then around backward, a sync after each)
    next to the kernels' own time in it: what the events add to the kernels is host time before
    the launches and gaps between them."""
    fwd, bwd = [], []
    state = {}

    def forward():
        layer.reset_states()
        state["out"] = layer(x)

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            clear_grads(layer, x)  # as bench_layer.py: no gradient accumulation in the times
            for times, call in ((fwd, forward), (bwd, lambda: state["out"].backward(grad))):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                call()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
    kernels = {e.key: e.device_time_total / iters / 1e3 for e in prof.key_averages() if e.device_time_total > 0}
    print(f"protocol: forward {sorted(fwd)[iters // 2]:.3f} ms, backward {sorted(bwd)[iters // 2]:.3f} ms (event medians)")
    for name, ms in sorted(kernels.items(), key=lambda kv: -kv[1]):
        print(f"  kernel {ms:8.3f} ms/iter  {name[:90]}")


if __name__ == "__main__":
    main()
