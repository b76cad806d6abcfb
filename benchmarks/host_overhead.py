"""Host (CPU) time per layer call: what Python and the launches cost before the GPU gets work.

At small sizes this time *is* the layer's time; at large sizes the forward's host time before its
kernel launch adds to the measured time too. Prints microseconds per call for reset_states,
forward and backward of a tiny layer, then the functions that take the host time (cProfile).

    python benchmarks/host_overhead.py --device cuda
"""

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from exodus_jit import layers  # noqa: E402


def per_call_us(layer, device: str, calls: int = 2000) -> dict:
    x = (torch.randn(1, 1, 1, device=device) * 10).requires_grad_()
    g = torch.randn(1, 1, 1, device=device)
    for _ in range(50):
        layer.reset_states()
        layer(x).backward(g)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(calls):
        layer.reset_states()
    t1 = time.perf_counter()
    outs = []
    for _ in range(calls):
        layer.reset_states()
        outs.append(layer(x))
    t2 = time.perf_counter()
    for out in outs:
        out.backward(g)
    t3 = time.perf_counter()
    sync()
    reset = (t1 - t0) / calls * 1e6
    return {"reset": reset, "forward": (t2 - t1) / calls * 1e6 - reset, "backward": (t3 - t2) / calls * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--profile", action="store_true", help="also show where the LIF's host time goes")
    args = parser.parse_args()
    for name, layer in (("LIF", layers.LIF(tau_mem=10.0)), ("IAF", layers.IAF())):
        t = per_call_us(layer.to(args.device), args.device)
        print(f"{name} host us/call on {args.device}: reset_states {t['reset']:.0f}, forward {t['forward']:.0f}, "
              f"backward {t['backward']:.0f}")
    if args.profile:
        layer = layers.LIF(tau_mem=10.0).to(args.device)
        x = (torch.randn(1, 1, 1, device=args.device) * 10).requires_grad_()
        g = torch.randn(1, 1, 1, device=args.device)
        with cProfile.Profile() as prof:
            for _ in range(2000):
                layer.reset_states()
                layer(x).backward(g)
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
