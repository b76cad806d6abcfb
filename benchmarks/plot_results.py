"""Plot bench_layer.py JSONs: forward + backward time against size, one line per framework (LIF,
float32), one panel per mode (the layer alone; nn.Linear then the layer), log time axis: the
peers span four orders of magnitude. With several JSONs (processes of one run: the main table,
the sweeps, a peer run apart) the first to hold a framework's size gives its point.

    python benchmarks/plot_results.py benchmarks/results/2026-11-28-h200-layer.json out.png
    python benchmarks/plot_results.py main.json sweep.json sinabs_exodus.json out.png
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

# the floor: one autograd Function with a copy-speed kernel each way (bench_layer.py FloorLayer)
LABELS = {"floor": "protocol floor (copy kernels)"}
TITLES = {"layer": "LIF layer alone", "linear": "nn.Linear + LIF"}
COLORS = {"exodus-jit": "C0", "floor": "C1", "spikingjelly": "C2", "sinabs-exodus": "C3", "sinabs": "C4"}


def size_key(size: str) -> tuple:
    b, t, n = (int(p) for p in size.split("x"))
    return (b * t * n, t, n)


def series(results: list) -> dict:
    """{mode: {framework: {size: total_ms}}} of the LIF float32 rows (JSONs before modes: layer);
    the first row of a framework, mode and size counts."""
    out = defaultdict(lambda: defaultdict(dict))
    for r in results:
        if r["layer"] == "LIF" and r.get("dtype", "float32") == "float32":
            out[r.get("mode", "layer")][r["framework"]].setdefault("x".join(map(str, r["shape"])), r["total_ms"])
    return out


def main(paths: list, out: str) -> None:
    import matplotlib  # only to draw: series() works without it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    runs = [json.load(open(path)) for path in paths]
    data = runs[0]
    by_mode = series([r for run in runs for r in run["results"]])
    modes = [m for m in TITLES if m in by_mode]
    fig, axes = plt.subplots(1, len(modes), figsize=(7 * len(modes), 4.2), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        frameworks = by_mode[mode]
        sizes = sorted({s for times in frameworks.values() for s in times}, key=size_key)
        for framework in sorted(frameworks):
            times = frameworks[framework]
            xs = [i for i, s in enumerate(sizes) if s in times]
            ax.plot(xs, [times[sizes[i]] for i in xs], marker="o", label=LABELS.get(framework, framework),
                    color=COLORS.get(framework))
        ax.set_xticks(range(len(sizes)))
        ax.set_xticklabels(sizes, rotation=30, ha="right")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.set_xlabel("B x T x N")
        ax.set_ylabel("forward + backward (ms, median)")
        ax.set_title(f"{TITLES[mode]}, fp32, {data['environment'].get('device_name', '')}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: plot_results.py RESULTS.json [MORE.json ...] OUT.png")
    main(sys.argv[1:-1], sys.argv[-1])
