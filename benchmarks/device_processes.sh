#!/usr/bin/env bash
# One call on the GPU machine: the layer benchmark (exodus-jit and the floor, LIF) in several
# fresh processes, for the spread between processes (the host's speed differs between them).
# Writes $OUT/processes.json (every run) and prints medians and ranges over the processes.
# Usage (device tool): PROCESSES=8 bash benchmarks/device_processes.sh (DTYPES="float32 bfloat16":
# both)
source benchmarks/device_env.sh
# CHECKOUTS: "current" (this checkout) and/or names of whole older checkouts carried under
# .variants/NAME (src/, kernels/, benchmarks/bench_layer.py), run in alternation, process by process
CHECKOUTS=${CHECKOUTS:-current}
for c in $CHECKOUTS; do
  root=$PWD; [ "$c" = current ] || root=$PWD/.variants/$c
  PYTHONPATH=/tmp/site:$root/src python3 -m exodus_jit build --cuda 2>&1 | tail -1
done
rm -rf /tmp/processes && mkdir -p /tmp/processes  # a warm machine keeps the last call's
for i in $(seq ${PROCESSES:-8}); do
  for c in $CHECKOUTS; do
    root=$PWD; [ "$c" = current ] || root=$PWD/.variants/$c
    name=$i; [ "$CHECKOUTS" = current ] || name=$c-$i
    PYTHONPATH=/tmp/site:$root/src python3 $root/benchmarks/bench_layer.py --device cuda --frameworks exodus-jit floor \
      --layers ${LAYERS:-LIF} --sizes ${SIZES:-16x500x512 16x500x16384 16x4000x1024} ${DTYPES:+--dtypes $DTYPES} \
      --json /tmp/processes/$name.json > /dev/null 2>&1
  done
done
python3 - <<'PY' | tee "$OUT/processes.txt"
import json, os, pathlib, statistics
runs = {p.stem: json.loads(p.read_text()) for p in sorted(pathlib.Path("/tmp/processes").glob("*.json"))}
pathlib.Path(os.environ["OUT"], "processes.json").write_text(json.dumps({"runs": runs}, indent=1))
rows = {}
for name, results in runs.items():
    checkout = name.rsplit("-", 1)[0] if "-" in name else "current"
    for r in (results["results"] if isinstance(results, dict) else results):
        size = "x".join(map(str, r["shape"]))
        rows.setdefault((checkout, r["framework"], size, r.get("dtype", "float32")), []).append(r["total_ms"])
for (checkout, framework, size, dtype), totals in sorted(rows.items()):
    print(f"{checkout:8s} {framework:11s} {size:14s} {dtype:8s} total ms over {len(totals)} processes: median "
          f"{statistics.median(totals):.3f} (min {min(totals):.3f}, max {max(totals):.3f})")
PY
