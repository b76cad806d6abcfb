#!/usr/bin/env bash
# One call on the GPU machine: one build of this checkout, then the kernels chosen at run time
# compared (A/B). Each CHOICES entry is a value of EXODUS_JIT_KERNELS ("default": unset), read
# once per process, so every measurement is a fresh process; the choices alternate over ROUNDS
# rounds, so host drift shows as spread between rounds of one choice. Per round and choice:
# kernel_time.py (kernels alone, LIF) and bench_layer.py (the layer, forward + backward).
# TESTS="tests/...": the CUDA tests of those paths first (after the build, before the A/B).
# Usage (device tool): CHOICES="ring default" TESTS=tests/ bash benchmarks/device_choice_ab.sh
source benchmarks/device_env.sh
rm -rf "$EXODUS_JIT_CACHE"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/env.txt"

echo "== first-use build (CPU + CUDA, $(nproc) cores)"
start=$(date +%s.%N)
python3 -m exodus_jit build --cpu --cuda 2>&1 | tee -a "$OUT/env.txt"
echo "build wall: $(python3 -c "import time; print(round(time.time() - $start, 1))") s" | tee -a "$OUT/env.txt"

if [ -n "${TESTS:-}" ]; then
  echo "== CUDA tests: ${TESTS}"
  python3 -m pytest -q -m cuda ${TESTS} -p no:cacheprovider 2>&1 | tee "$OUT/pytest_cuda.txt" | tail -15
fi

mkdir -p /tmp/layer
for round in $(seq ${ROUNDS:-3}); do
  for choice in ${CHOICES:-ring default}; do
    if [ "$choice" = default ]; then unset EXODUS_JIT_KERNELS; else export EXODUS_JIT_KERNELS=$choice; fi
    python3 benchmarks/kernel_time.py --label "$choice" --sizes ${SIZES:-16x500x512 16x500x4096 16x4000x1024} \
      --json "$OUT/ab.json" 2>&1 | tee -a "$OUT/ab.txt"
    if [ -n "${MIN_V:-}" ]; then
      python3 benchmarks/kernel_time.py --label "$choice" --sizes ${SIZES:-16x500x512} --min-v "$MIN_V" \
        --json "$OUT/ab.json" 2>&1 | tee -a "$OUT/ab.txt"
    fi
    python3 benchmarks/bench_layer.py --device cuda --frameworks exodus-jit floor --layers ${LAYERS:-LIF IAF LIF_minv} \
      --sizes ${LAYER_SIZES:-16x500x512} --json "/tmp/layer/$choice-$round.json" 2>&1 | tee -a "$OUT/ab.txt"
  done
done
unset EXODUS_JIT_KERNELS
# at most 8 files come back: the layer runs travel as one JSON
python3 -c "import json, pathlib; print(json.dumps({p.stem: json.loads(p.read_text()) for p in sorted(pathlib.Path('/tmp/layer').glob('*.json'))}))" > "$OUT/ab_layer.json"
