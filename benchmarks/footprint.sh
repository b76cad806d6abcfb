#!/usr/bin/env bash
# Cache lines one cold call of each path touches (benchmarks/footprint.py under callgrind), per
# call: instructions, last-level misses for code and for data, less those of the sweeps alone.
# Needs valgrind; ~1 minute per path on the 2-core box (two at a time).
# Usage: bash benchmarks/footprint.sh [floor layer general op minimal]   (CALLS=20)
set -euo pipefail
calls=${CALLS:-20}
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
run() {
  valgrind --tool=callgrind --instr-atstart=no --cache-sim=yes --LL=4194304,16,64 \
    --callgrind-out-file="$out/$1.out" python3 "$here/footprint.py" "$1" "$calls" > "$out/$1.log" 2>&1
}
names=("none" "${@:-floor layer general op minimal}")
names=(${names[@]})
for ((i = 0; i < ${#names[@]}; i += 2)); do
  run "${names[i]}" &
  [ $((i + 1)) -lt ${#names[@]} ] && run "${names[i + 1]}" &
  wait
done
# the summary line: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
python3 - "$out" "$calls" "${names[@]}" <<'PY'
import re, sys
from pathlib import Path
out, calls, names = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
def totals(name):
    line = next(l for l in (out / f"{name}.log").read_text().splitlines() if "Collected :" in l)
    return [int(v) for v in line.split(":")[-1].split()]
base = totals("none")
print(f"{'path':10s} {'instructions':>12s} {'code lines':>10s} {'data lines':>10s}   (per cold call, {calls} calls)")
for name in names[1:]:
    t = [a - b for a, b in zip(totals(name), base)]
    print(f"{name:10s} {t[0] / calls:12.0f} {t[6] / calls:10.0f} {(t[7] + t[8]) / calls:10.0f}")
PY
echo "callgrind files: $out (callgrind_annotate --inclusive=yes --sort=ILmr FILE)"
