"""Plot a bench_layer.py JSON: forward + backward time per size, one bar per framework and layer.

    python benchmarks/plot_results.py benchmarks/results/2026-11-28-h200-layer.json out.png
"""

import json
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# the floor: one autograd Function with a copy-speed kernel each way (bench_layer.py FloorLayer)
LABELS = {"floor": "protocol floor (copy kernels)"}


def main(path: str, out: str) -> None:
    data = json.load(open(path))
    rows = [r for r in data["results"] if r["layer"] == "LIF"]
    sizes = sorted({"x".join(map(str, r["shape"])) for r in rows}, key=lambda s: [int(p) for p in s.split("x")])
    frameworks = sorted({r["framework"] for r in rows})
    times = defaultdict(dict)
    for r in rows:
        times[r["framework"]]["x".join(map(str, r["shape"]))] = r["total_ms"]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / len(frameworks)
    for i, fw in enumerate(frameworks):
        xs = [j + i * width for j in range(len(sizes))]
        ax.bar(xs, [times[fw].get(s, 0) for s in sizes], width, label=LABELS.get(fw, fw))
    ax.set_xticks([j + width * (len(frameworks) - 1) / 2 for j in range(len(sizes))])
    ax.set_xticklabels(sizes)
    ax.set_ylabel("forward + backward (ms, median)")
    ax.set_title(f"LIF layer, fp32, {data['environment'].get('device_name', '')}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
