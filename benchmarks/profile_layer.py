"""Where one layer call spends its time: CUDA kernels and host time, with torch.profiler.

    python benchmarks/profile_layer.py --size 16x500x512
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from exodus_jit import layers  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="16x500x512")
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.size.split("x"))
    layer = layers.LIF(tau_mem=10.0).cuda()
    x = (torch.randn(shape, device="cuda") * 10).requires_grad_()
    grad = torch.randn(shape, device="cuda")

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


if __name__ == "__main__":
    main()
