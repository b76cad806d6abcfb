"""What one cold host call touches, counted without noise: run under valgrind's callgrind with its
cache simulation, each call of a path follows a sweep that empties the simulated caches, so the
last-level misses per call are the distinct cache lines (64 bytes) the call needs: its code
(instruction misses) and data. Single calls in the benchmark protocol cost what they touch (the
caches empty while the host waits for the GPU: NOTES, twentieth session), and on the 2-core box
their times swing by 2x between runs; these counts do not. CPU only (the CUDA path's host code
cannot run without a GPU), so the parts that differ on CUDA (allocator, launch, alpha from tau:
on the CPU four torch operations) count differently there; the Python, dispatcher and autograd
parts are the same.

    bash benchmarks/footprint.sh [PATH ...]    (paths: floor layer general op minimal; default all)
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from bench_layer import FloorLayer  # noqa: E402
from host_overhead import _general_lif, _kept_lif  # noqa: E402

SWEEP_BYTES = 8 << 20  # twice the simulated last-level cache footprint.sh sets (4 MB)


def paths() -> dict:
    """Each path's call, as host_overhead.py --cold makes it (forward only)."""
    layer, x, call, v0 = _kept_lif("cpu")
    general = _general_lif("cpu", x)
    floor = FloorLayer()
    lean, _, lean_call, _ = _kept_lif("cpu")
    op, op_args = lean_call._op, lean_call._op_args
    attributes, buffers = lean.__dict__, lean._buffers

    def minimal():
        # the least a layer call must do (no Module call, no checks): take the zeros as states,
        # run the operator, keep its outputs: a lower bound for the layer's own Python
        zeros = attributes.pop("_exodus_zeros", None)
        if zeros is not None:
            buffers.update(zeros)
        out, _, v_final, out_sum, _, v_zero, _ = op(x, buffers["v_mem"], *op_args)
        buffers["v_mem"] = v_final
        attributes["_exodus_zeros"] = {"v_mem": v_zero}
        attributes["_firing_rate"] = (out_sum, out.numel(), out.dtype)
        return out

    return {"none": lambda: None,
            "minimal": minimal,
            "floor": lambda: floor(x),
            "layer": lambda: (layer.reset_states(), layer(x))[1],
            "general": lambda: (general.reset_states(), general(x))[1],
            "op": lambda: call._autograd_op(x, v0, ())[0]}


def main() -> None:
    name, calls = sys.argv[1], int(sys.argv[2])
    make = paths()[name]
    sweep = bytearray(SWEEP_BYTES)
    lines = b"\x01" * (SWEEP_BYTES // 64)
    for _ in range(20):
        out = make()
    # instrumented from here only (valgrind --instr-atstart=no): imports and warm-up stay out
    os.system(f"callgrind_control -i on {os.getpid()} > /dev/null")
    for _ in range(calls):
        sweep[::64] = lines  # a write to every line: the simulated caches hold nothing of the call
        out = make()  # frees the previous result, as `out = layer(x)` does
    os.system(f"callgrind_control -i off {os.getpid()} > /dev/null")
    del out


if __name__ == "__main__":
    main()
