"""Host (CPU) time per layer call: what Python and the launches cost before the GPU gets work.

At small sizes this time *is* the layer's time; at large sizes the forward's host time before its
kernel launch adds to the measured time too. Prints microseconds per call for reset_states,
forward and backward of a tiny layer, then the functions that take the host time (cProfile).

    python benchmarks/host_overhead.py --device cuda   (--breakdown, --cold, --cold-parts, --gaps: see --help)
"""

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from bench_layer import FloorLayer, clear_grads  # noqa: E402  (the protocol's floor, as the benchmark builds it)
from exodus_jit import layers  # noqa: E402


class EmptyFunction(torch.autograd.Function):
    """An autograd Function that does nothing (a view each way): what any Function call costs."""

    @staticmethod
    def forward(ctx, a):
        return a.view_as(a)

    @staticmethod
    def backward(ctx, grad):
        return grad


def per_call_us(layer, device: str, calls: int = 2000, shape: tuple = (1, 1, 1)) -> dict:
    x = (torch.randn(shape, device=device) * 10).requires_grad_()
    g = torch.randn(shape, device=device)
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


def ops_us(device: str, calls: int = 2000) -> dict:
    """Host microseconds per direct call of the backend ops (tiny tensors, no autograd), with a
    plain torch op and allocations beside them: where a layer call's host time is spent."""
    from exodus_jit.ops import _extension
    from exodus_jit.ops._config import SaveKind

    ops = _extension.backend_ops(torch.device(device))
    u = torch.randn(1, 8, 1, device=device)
    v0, g = torch.zeros(1, 1, device=device), torch.randn(1, 8, 1, device=device)
    alpha, one = torch.full((1,), 0.9, device=device), torch.ones(1, device=device)
    config = (0.0, 1, 0, 0, True)
    out, ckpt, _, _, _, _ = ops.membrane_forward(u, v0, alpha, one, one, None, *config, int(SaveKind.CHECKPOINTS),
                                                 False, True)
    surrogate = (1, [0.5, 1.0])

    def backward(alpha_grad):
        return lambda: ops.membrane_backward(g, None, None, None, ckpt, u, v0, alpha, one, one, None, *config,
                                             *surrogate, None, alpha_grad)

    calls_ = {
        "membrane_forward": lambda: ops.membrane_forward(u, v0, alpha, one, one, None, *config,
                                                         int(SaveKind.CHECKPOINTS), False, True),
        "membrane_backward": backward(True),
        "membrane_backward (no alpha grad)": backward(False),
        "torch.add": lambda: torch.add(u, g),
        "3 x torch.empty": lambda: (torch.empty(1, 8, 1, device=device), torch.empty(1, 1, device=device),
                                    torch.empty(1, 1, device=device)),
    }
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    result = {}
    for name, call in calls_.items():
        for _ in range(50):
            call()
        sync()
        t0 = time.perf_counter()
        for _ in range(calls):
            call()
        result[name] = (time.perf_counter() - t0) / calls * 1e6
        sync()
    return result


def _best_us(fn, calls: int, rounds: int = 5) -> float:
    """Fewest microseconds per call over a few rounds (the host is shared; the minimum is the cost)."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(calls)
        best = min(best, (time.perf_counter() - t0) / calls * 1e6)
    return best


def breakdown_us(device: str, calls: int = 1000) -> dict:
    """Host microseconds per call of each layer of the LIF's call path, forward and backward
    (tiny tensors), beside an empty autograd Function: which layer costs what."""
    from exodus_jit import ops
    from exodus_jit.ops import _extension, _registry, functional
    from exodus_jit.ops._config import SaveKind

    layer = layers.LIF(tau_mem=10.0).to(device)
    x = (torch.randn(1, 1, 1, device=device) * 10).requires_grad_()
    g = torch.randn(1, 1, 1, device=device)
    options = layer._kernel_options()
    v0 = torch.zeros(1, 1, device=device)
    alpha = functional._decay_alpha("alpha", layer.tau_mem.detach(), x)
    threshold = functional._feature_param("threshold", layer.spike_threshold, x)
    config = (0.0, 1, 0, 0, True)
    surrogate = options["surrogate"]
    backend = _extension.backend_ops(torch.device(device))

    def layer_call():
        layer.reset_states()
        return layer(x)

    # the same layer through MembraneCall's general path (_run), for comparison in one process
    slow_layer = layers.LIF(tau_mem=10.0).to(device)
    slow_layer(x)
    slow_layer.__dict__["_exodus_call"][1]._direct = False

    def slow_layer_call():
        slow_layer.reset_states()
        return slow_layer(x)

    autograd_op = _registry.membrane_autograd_op(torch.device(device))

    def op_args(alpha, tau):  # prepared once, as MembraneCall does
        return _registry.membrane_autograd_args(alpha, threshold, threshold, None, config, 1, [0.5, 1.0], False,
                                                True, tau, (1,))

    tau_args, alpha_args = op_args(None, layer.tau_mem), op_args(alpha, None)

    paths = {
        "layer (reset_states + forward)": layer_call,
        "layer, MembraneCall._run path": slow_layer_call,
        "ops.membrane": lambda: ops.membrane(x, v0, ops.Decay(layer.tau_mem), layer.spike_threshold,
                                             norm_input=True, sum_output=True, **options).output,
        "C++ autograd op (tau)": lambda: autograd_op(x, v0, *tau_args)[0],
        "C++ autograd op (alpha, no grad)": lambda: autograd_op(x, v0, *alpha_args)[0],
        "Python autograd Function": lambda: functional._Membrane.apply(
            x, v0, alpha, threshold, threshold, None, config, surrogate, False, True)[0],
        "empty autograd Function": lambda: EmptyFunction.apply(x),
    }
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    result = {}
    for name, make in paths.items():
        for _ in range(50):
            make().backward(g)
        sync()

        def forward(n, make=make):
            for _ in range(n):
                make()

        def backward(n, make=make):
            outs = [make() for _ in range(n)]
            sync()
            t0 = time.perf_counter()
            for out in outs:
                out.backward(g)
            backward.elapsed = time.perf_counter() - t0

        fwd = _best_us(forward, calls)
        bwd = float("inf")
        for _ in range(5):
            backward(calls)
            bwd = min(bwd, backward.elapsed / calls * 1e6)
        result[name] = (fwd, bwd)
        sync()
    with torch.no_grad():
        ckpt = backend.membrane_forward(x, v0, alpha, threshold, threshold, None, *config, int(SaveKind.CHECKPOINTS),
                                        False, True)[1]

        def raw_forward(n):
            for _ in range(n):
                _registry.run_membrane_forward(x, v0, alpha, threshold, threshold, None, config, 1, [0.5, 1.0],
                                               SaveKind.CHECKPOINTS, False, True)

        def raw_backward(n):
            for _ in range(n):
                backend.membrane_backward(g, None, None, None, ckpt, x, v0, alpha, threshold, threshold, None,
                                          *config, 1, [0.5, 1.0], None, True)

        result["backend ops (no autograd)"] = (_best_us(raw_forward, calls), _best_us(raw_backward, calls))
    sync()
    return result


def _spin(seconds: float) -> None:
    """Wait without sleeping, as a CUDA synchronize does: the thread keeps its core."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def _kept_lif(device: str, **options):
    """A tiny LIF layer (with `options`, such as tau_syn) after its first call (its MembraneCall
    kept), an input that takes gradients, the kept call and a zero state for calling its C++
    operator alone."""
    layer = layers.LIF(tau_mem=10.0, **options).to(device)
    x = (torch.randn(1, 1, 1, device=device) * 10).requires_grad_()
    layer(x)
    return layer, x, layer.__dict__["_exodus_call"][1], torch.zeros(1, 1, device=device)


def _general_lif(device: str, x):
    """A tiny LIF layer after its first call on x whose every call takes the general path (no
    kept call's path, _forward_kept, as before version 51)."""
    general = layers.LIF(tau_mem=10.0).to(device)
    general.__dict__["_forward_kept"] = lambda *args: None
    general(x)
    return general


def cold_us(device: str, calls: int = 300, gap_s: float = 0.001) -> dict:
    """Host microseconds per call as the benchmark protocol makes its calls: each forward and each
    backward alone, after a wait (bench_layer.py times each between CUDA events and waits for the
    GPU in between). Tight loops hide what such single calls cost: on the 2-core box a layer's
    forward took ~3x its loop time this way, the floor's too. Medians, for the protocol's floor,
    the LIF layer, the LIF layer with tau_syn, the LIF layer without its kept call's path
    (_forward_kept: every call takes the general path, as before version 51) and the layer's C++
    operator alone (no layer Python)."""
    layer, x, call, v0 = _kept_lif(device)
    general = _general_lif(device, x)
    synaptic = _kept_lif(device, tau_syn=5.0)[0]  # the fused synaptic stage (next step 7), warmed alike
    g = torch.randn(1, 1, 1, device=device)
    floor = FloorLayer()
    paths = {
        "floor (reset_states + forward)": lambda: (floor.reset_states(), floor(x))[1],
        "layer (reset_states + forward)": lambda: (layer.reset_states(), layer(x))[1],
        "LIF_syn (reset_states + forward)": lambda: (synaptic.reset_states(), synaptic(x))[1],
        "layer, general path (no kept)": lambda: (general.reset_states(), general(x))[1],
        "C++ operator alone": lambda: call._autograd_op(x, v0, ())[0],
    }
    models = torch.nn.ModuleList([floor, layer, synaptic, general])  # the operator's tau is layer's
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = {name: ([], []) for name in paths}
    for _ in range(calls):
        for name, make in paths.items():  # interleaved, so each call follows other work
            clear_grads(models, x)  # as the protocol: no gradient accumulation in the times
            sync()
            _spin(gap_s)
            t0 = time.perf_counter()
            out = make()
            t1 = time.perf_counter()
            sync()
            _spin(gap_s)
            t2 = time.perf_counter()
            out.backward(g)
            t3 = time.perf_counter()
            times[name][0].append((t1 - t0) * 1e6)
            times[name][1].append((t3 - t2) * 1e6)
    sync()
    return {name: (statistics.median(f), statistics.median(b)) for name, (f, b) in times.items()}


def _single_calls_us(paths: dict, device: str, calls: int, gap_s: float) -> dict:
    """Median host microseconds of each path's single calls (forward only), each after the GPU
    is done and a spinning wait of gap_s, the paths interleaved so each call follows other work.
    A path's result is freed when its next call returns, inside the timing, as the protocol's
    `out = layer(x)` frees the last output."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    held = dict.fromkeys(paths)
    times = {name: [] for name in paths}
    for _ in range(calls):
        for name, make in paths.items():
            sync()
            _spin(gap_s)
            t0 = time.perf_counter()
            held[name] = make()
            times[name].append((time.perf_counter() - t0) * 1e6)
    sync()
    return {name: statistics.median(t) for name, t in times.items()}


def cold_parts_us(device: str, calls: int = 300, gap_s: float = 0.001) -> dict:
    """Host microseconds of single calls (as cold_us makes them: alone, after a spinning wait;
    forward only) of the pieces a layer call is built from, beside the layer call itself: what a
    cold call's cost is made of. In a single call what costs is what the call touches (caches
    emptied while the thread waited: twentieth session), so the pieces are the call's
    allocations, frees, launches, autograd nodes and Python."""
    layer, x, call, v0 = _kept_lif(device)
    buffer = torch.zeros(64, device=device)
    module = torch.nn.Identity()

    def no_grad_op():
        with torch.no_grad():
            return call._autograd_op(x, v0, ())

    # the layer's Python alone: a layer whose operator returns outputs made once (no torch work)
    stubbed = layers.LIF(tau_mem=10.0).to(device)
    stubbed(x)
    made = no_grad_op()
    stubbed.__dict__["_exodus_call"][1]._op = lambda *args: made

    paths = {
        "layer (reset_states + forward)": lambda: (layer.reset_states(), layer(x)),
        "reset_states alone": layer.reset_states,
        "layer's Python (stub operator)": lambda: (stubbed.reset_states(), stubbed(x)),
        "C++ operator (autograd node)": lambda: call._autograd_op(x, v0, ()),
        "C++ operator, no grad (no node)": no_grad_op,
        "1 allocation (torch.empty)": lambda: torch.empty(64, device=device),
        "5 allocations": lambda: [torch.empty(64, device=device) for _ in range(5)],
        "1 launch (zero_, no allocation)": buffer.zero_,
        "empty autograd Function": lambda: EmptyFunction.apply(x),
        "nn.Module call (Identity)": lambda: module(x),
    }
    return _single_calls_us(paths, device, calls, gap_s)


def gap_us(device: str, calls: int = 200, gaps_s: tuple = (0.0, 1e-4, 1e-3, 1e-2)) -> dict:
    """Host microseconds of a single forward of the floor and of the layer's C++ operator after a
    spinning wait of each length in `gaps_s` (medians): how a call's cost grows with the time
    since the last call. On the 2-core box the operator read 44 / 47 / 64 / 220 us after waits of
    0 / 0.1 / 1 / 10 ms (twentieth session), as caches emptied during the wait would make it."""
    _, x, call, v0 = _kept_lif(device)
    floor = FloorLayer()
    paths = {"floor forward": lambda: floor(x), "C++ operator": lambda: call._autograd_op(x, v0, ())}
    return {(name, gap): us for gap in gaps_s for name, us in _single_calls_us(paths, device, calls, gap).items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--profile", action="store_true", help="also show where the LIF's host time goes")
    parser.add_argument("--ops", action="store_true", help="also time direct calls of the backend ops")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time each layer of the LIF's call path (forward and backward)")
    parser.add_argument("--cold", action="store_true",
                        help="also time single calls after a wait, as the benchmark protocol makes them")
    parser.add_argument("--cold-parts", action="store_true",
                        help="also time single calls of the pieces a layer call is built from")
    parser.add_argument("--gaps", action="store_true",
                        help="also time single calls after waits of 0, 0.1, 1 and 10 ms")
    parser.add_argument("--shape", default="1x1x1",
                        help="the layers' input, B x T x neuron shape (default 1x1x1; 1x1x2x2x2: a convolutional layer's)")
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.split("x"))
    if args.breakdown:
        for name, (fwd, bwd) in breakdown_us(args.device).items():
            print(f"path host us/call on {args.device}: {name:32s} forward {fwd:6.1f}  backward {bwd:6.1f}")
    if args.cold:
        for name, (fwd, bwd) in cold_us(args.device).items():
            print(f"cold host us/call on {args.device}: {name:32s} forward {fwd:6.1f}  backward {bwd:6.1f}")
    if args.cold_parts:
        for name, us in cold_parts_us(args.device).items():
            print(f"cold part host us/call on {args.device}: {name:32s} {us:6.1f}")
    if args.gaps:
        for (name, gap), us in gap_us(args.device).items():
            print(f"after a {gap * 1e3:4.1f} ms wait, host us/call on {args.device}: {name:16s} {us:6.1f}")
    if args.ops:
        for name, us in ops_us(args.device).items():
            print(f"op host us/call on {args.device}: {name} {us:.1f}")
    # LIF_syn: the fused synaptic stage's call, two more states (NOTES' next step 7)
    for name, layer in (("LIF", layers.LIF(tau_mem=10.0)), ("IAF", layers.IAF()),
                        ("LIF_syn", layers.LIF(tau_mem=10.0, tau_syn=5.0))):
        t = per_call_us(layer.to(args.device), args.device, shape=shape)
        print(f"{name} {args.shape} host us/call on {args.device}: reset_states {t['reset']:.0f}, forward {t['forward']:.0f}, "
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
