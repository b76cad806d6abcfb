#!/usr/bin/env bash
# One call on the GPU machine: does an idle GPU's clock slow the first configuration measured?
# The small sizes' layer benchmark after an idle pause, without and with bench_layer.py's
# --raise-clocks (heavy work first), the SM clock before and after each configuration's repeats.
# Usage (device tool): bash benchmarks/device_clocks.sh   -> $OUT/clocks.txt, clocks-*.json
source benchmarks/device_env.sh
python3 -m exodus_jit build --cuda 2>&1 | tail -1
for seconds in ${RAISE:-0 2}; do
  sleep ${PAUSE:-10}  # idle, as after the tests or a build
  echo "== idle ${PAUSE:-10} s (SM $(nvidia-smi --query-gpu=clocks.sm --format=csv,noheader)), then --raise-clocks $seconds" | tee -a "$OUT/clocks.txt"
  python3 benchmarks/bench_layer.py --device cuda --frameworks exodus-jit floor --layers LIF IAF LIF_minv LIF \
    --sizes 16x500x512 16x500x4096 --raise-clocks $seconds --json "$OUT/clocks-$seconds.json" 2>&1 | tee -a "$OUT/clocks.txt"
done
