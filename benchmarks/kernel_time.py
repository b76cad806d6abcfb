"""GPU time of the membrane kernels alone (no autograd, no Python per launch in the timed region
but the launch itself): forward and backward of the LIF's fast kernels, back to back, timed with
CUDA events over many launches, median of rounds. For comparing kernel versions (A/B) without the
host's per-call time in the numbers. Each row also carries a fingerprint of the forward's and the
backward's outputs for the first input set, so versions that should compute the same bits (a
change of memory access only) can be seen to. `--alpha-syn A`: the LIF with the fused synaptic
stage instead, which only the autograd operator reaches; its kernels are timed by torch.profiler
(each launch's own GPU time, so the autograd engine's host time stays out too).

    python benchmarks/kernel_time.py --sizes 16x500x512 16x500x16384 16x4000x1024
    python benchmarks/kernel_time.py --sizes 16x500x512 --alpha-syn 0.8
"""

import argparse
import hashlib
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from exodus_jit import ops as exodus_ops  # noqa: E402
from exodus_jit.ops import _extension  # noqa: E402
from exodus_jit.ops._config import SaveKind  # noqa: E402

CONFIG = (0.0, 1, 0, 0, True)  # reset_value, multi spike, max_spikes, subtract reset, norm_input
SURROGATE = (1, [0.5, 1.0])    # single exponential, sinabs' defaults


def fingerprint(outputs) -> str:
    """The first 12 hex digits of a SHA-1 over the bytes of every non-empty tensor in `outputs`
    (in order; None and the ops' empty placeholders skipped): equal exactly where the bits are."""
    digest = hashlib.sha1()
    for t in outputs:
        if isinstance(t, torch.Tensor) and t.numel() > 0:
            digest.update(str((t.dtype, tuple(t.shape))).encode())
            digest.update(t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:12]


def input_sets(shape) -> int:
    """How many input sets to rotate between, so small sizes do not run from L2 on repeated data
    only."""
    B, T, N = shape
    return max(1, min(8, (256 << 20) // (B * T * N * 4)))


def summarise(result: dict, name: str, times: list) -> None:
    """The rounds' median as `name` and their spread (max - min) beside it."""
    result[name] = statistics.median(times)
    result[name.replace("_us", "_spread_us")] = max(times) - min(times)


def time_kernels(shape, dtype, launches: int, rounds: int, min_v=None) -> dict:
    """Median microseconds per forward and per backward launch over `rounds` rounds of `launches`;
    min_v: clip the membrane below it (sinabs' min_v_mem), else no clipping."""
    torch.manual_seed(0)
    ops = _extension.backend_ops(torch.device("cuda"))
    B, T, N = shape
    sets = input_sets(shape)
    us = [(torch.randn(shape, device="cuda") * 10).to(dtype) for _ in range(sets)]
    gs = [torch.randn(shape, device="cuda").to(dtype) for _ in range(sets)]
    v0 = torch.zeros(B, N, device="cuda")
    alpha = torch.full((1,), float(torch.exp(torch.tensor(-0.1))), device="cuda")
    one = torch.ones(1, device="cuda")
    clip = None if min_v is None else torch.full((1,), float(min_v), device="cuda")

    def forward(i):
        return ops.membrane_forward(us[i % sets], v0, alpha, one, one, clip, *CONFIG, int(SaveKind.CHECKPOINTS),
                                    False, True)

    ckpts = [forward(i)[1] for i in range(sets)]

    def backward(i):
        return ops.membrane_backward(gs[i % sets], None, None, None, ckpts[i % sets], us[i % sets], v0, alpha, one,
                                     one, clip, *CONFIG, *SURROGATE, None, True)

    result = {"forward_sha1": fingerprint(forward(0)), "backward_sha1": fingerprint(backward(0))}
    for name, fn in (("forward_us", forward), ("backward_us", backward)):
        for i in range(10):
            fn(i)
        times = []
        for _ in range(rounds):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for i in range(launches):
                fn(i)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e3 / launches)
        summarise(result, name, times)
    return result


def time_syn_kernels(shape, dtype, launches: int, rounds: int, alpha_syn: float, min_v=None) -> dict:
    """As time_kernels for the LIF with the fused synaptic stage (alpha_syn per step), through
    exodus_jit.ops.membrane (the autograd operator: the backend ops take no synaptic stage): the
    median over rounds of the median GPU time of the forward's and of the backward's membrane
    kernel (torch.profiler), per launch."""
    torch.manual_seed(0)
    B, T, N = shape
    sets = input_sets(shape)
    us = [(torch.randn(shape, device="cuda") * 10).to(dtype).requires_grad_() for _ in range(sets)]
    gs = [torch.randn(shape, device="cuda").to(dtype) for _ in range(sets)]
    v0, i0 = torch.zeros(B, N, device="cuda"), torch.zeros(B, N, device="cuda")
    alpha = float(torch.exp(torch.tensor(-0.1)))

    def step(i):
        r = exodus_ops.membrane(us[i % sets], v0, alpha, 1.0, norm_input=True, min_v_mem=min_v, i_syn=i0,
                                alpha_syn=alpha_syn)
        (g_u,) = torch.autograd.grad(r.output, us[i % sets], gs[i % sets])
        return r.output, r.v_final, r.i_final, g_u

    first = step(0)
    result = {"forward_sha1": fingerprint(first[:3]), "backward_sha1": fingerprint(first[3:])}
    for i in range(10):
        step(i)
    torch.cuda.synchronize()
    per_round = {"forward_us": [], "backward_us": []}
    for _ in range(rounds):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for i in range(launches):
                step(i)
            torch.cuda.synchronize()
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        for name, part in (("forward_us", "membrane_forward"), ("backward_us", "membrane_backward")):
            times = [e.time_range.elapsed_us() for e in kernels if part in e.name]
            if len(times) != launches:
                raise RuntimeError(f"{len(times)} {part} kernels in {launches} launches")
            per_round[name].append(statistics.median(times))
    for name, times in per_round.items():
        summarise(result, name, times)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", default=["16x500x512", "16x500x16384", "16x4000x1024"])
    parser.add_argument("--dtypes", nargs="+", default=["float32"])
    parser.add_argument("--launches", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--label", default="", help="a name for this kernel version in the output")
    parser.add_argument("--json", help="append the results to this JSON file")
    parser.add_argument("--min-v", type=float, help="clip the membrane below this (LIF with min_v_mem)")
    parser.add_argument("--alpha-syn", type=float,
                        help="the LIF with the fused synaptic stage (tau_syn) of this decay per step")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        shape = tuple(int(s) for s in size.split("x"))
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            if args.alpha_syn is None:
                r = time_kernels(shape, dtype, args.launches, args.rounds, args.min_v)
            else:
                r = time_syn_kernels(shape, dtype, args.launches, args.rounds, args.alpha_syn, args.min_v)
            r.update(size=size, dtype=dtype_name, label=args.label, min_v=args.min_v, alpha_syn=args.alpha_syn)
            rows.append(r)
            clipped = "" if args.min_v is None else f" min_v {args.min_v:g}"
            clipped += "" if args.alpha_syn is None else f" alpha_syn {args.alpha_syn:g}"
            print(f"kernels {args.label:12s} {size:14s} {dtype_name:9s}{clipped} forward {r['forward_us']:8.1f} us "
                  f"(spread {r['forward_spread_us']:.1f})  backward {r['backward_us']:8.1f} us "
                  f"(spread {r['backward_spread_us']:.1f})  bits {r['forward_sha1']}/{r['backward_sha1']}", flush=True)
    if args.json:
        path = Path(args.json)
        old = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps(old + rows, indent=1))


if __name__ == "__main__":
    main()
