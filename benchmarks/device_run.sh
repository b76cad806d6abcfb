#!/usr/bin/env bash
# One call on the GPU machine: first-use CUDA build, cached load, the CUDA test suite and the
# layer benchmark. Needs sinabs & co. as wheels in .whl/ (see benchmarks/README.md).
# Usage (device tool): bash benchmarks/device_run.sh   -> results under $OUT
# SHORT=1: without sinabs, sinabs-exodus (built from .whl/sdist), the linear mode, the sweeps, the
# general kernels and the examples (little device time left); SKIP_TRAIN=1: without the examples;
# SIZES="...": the main table's sizes; QUICK=1: after the build and the host times, only LIF and
# the floor at three sizes (no tests).
source benchmarks/device_env.sh
rm -rf "$EXODUS_JIT_CACHE"

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/env.txt"
python3 -m exodus_jit doctor | tee -a "$OUT/env.txt"

echo "== first-use build (CPU + CUDA, $(nproc) cores)"
start=$(date +%s.%N)
python3 -m exodus_jit build --cpu --cuda 2>&1 | tee -a "$OUT/env.txt"
echo "build wall: $(python3 -c "import time; print(round(time.time() - $start, 1))") s" | tee -a "$OUT/env.txt"
python3 - <<'PY' 2>&1 | tee -a "$OUT/env.txt"
import time, torch
t = time.monotonic()
from exodus_jit.ops import _extension
_extension.backend_ops(torch.device("cuda"))
print(f"cached load (new process): {time.monotonic() - t:.3f} s")
PY

if [ -n "${TESTS:-}" ]; then
  # only these CUDA tests (a short call after a change that needs re-checking on the GPU)
  python3 -m pytest -q -m cuda ${TESTS} -p no:cacheprovider 2>&1 | tee "$OUT/pytest_cuda.txt" | tail -5
  exit 0
fi

echo "== host time per call (tiny layer)"
python3 benchmarks/host_overhead.py --device cuda --breakdown --cold --cold-parts --gaps ${HOST_PROFILE:+--profile} 2>&1 | tee -a "$OUT/env.txt" | head -50

if [ -n "${QUICK:-}" ]; then
  # a quick look: the fast kernels at three sizes beside the protocol's floor (which tells the
  # host's speed: without it a quick run's times cannot be compared with another machine's)
  python3 benchmarks/bench_layer.py --device cuda --frameworks exodus-jit floor --layers LIF \
    --sizes 16x500x512 16x500x16384 16x4000x1024 \
    --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.txt"
  exit 0
fi

# sinabs-exodus 2.0 from its source distribution, built while the tests run (its build time is then
# not a clean reading: ANCHORS.md has one); a peer that does not build is reported, not fatal
peers=""
if [ -z "${SHORT:-}" ]; then
  MAX_JOBS=8 bash benchmarks/build_sinabs_exodus.sh > /tmp/sinabs-exodus-build.txt 2>&1 &
  peer_build=$!
fi

if [ -z "${BENCH_ONLY:-}" ]; then
echo "== CUDA tests"
python3 -m pytest -q -m cuda tests/ -p no:cacheprovider ${PYTEST_ARGS:-} 2>&1 | tee "$OUT/pytest_cuda.txt" | tail -25
fi
if [ -n "${peer_build:-}" ]; then
  wait $peer_build && peers="sinabs-exodus"
  cat /tmp/sinabs-exodus-build.txt | tee -a "$OUT/env.txt"
fi

echo "== benchmark (exodus-jit, SpikingJelly 2.0 and the protocol's floor in one process layout; sinabs at the small size)"
python3 benchmarks/bench_layer.py --device cuda --frameworks exodus-jit spikingjelly floor --layers LIF IAF LIF_syn LIF_minv \
  --sizes ${SIZES:-16x500x512 16x500x4096 16x500x16384 16x4000x1024} --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.txt"
mkdir -p /tmp/bench
[ -n "${SHORT:-}" ] || python3 benchmarks/bench_layer.py --device cuda --frameworks sinabs --layers LIF --sizes 16x500x512 \
  --repeats 3 --warmup 1 --json /tmp/bench/sinabs.json 2>&1 | tee -a "$OUT/bench.txt"
# float32 again in the same process as the half types: their ratio to it is then free of the
# host-speed differences between processes
python3 benchmarks/bench_layer.py --device cuda --frameworks exodus-jit floor --layers LIF --dtypes float32 bfloat16 float16 \
  --sizes 16x500x16384 --json /tmp/bench/half.json 2>&1 | tee -a "$OUT/bench.txt"
if [ -z "${SHORT:-}" ]; then
echo "== the Open Neuromorphic network (nn.Linear + LIF) and the N / T sweeps" | tee -a "$OUT/bench.txt"
python3 benchmarks/bench_layer.py --device cuda --frameworks exodus-jit spikingjelly floor --modes linear --repeats 10 \
  --json /tmp/bench/linear.json 2>&1 | tee -a "$OUT/bench.txt"
python3 benchmarks/bench_layer.py --device cuda --frameworks exodus-jit spikingjelly floor --sweep n t \
  --json /tmp/bench/sweep.json 2>&1 | tee -a "$OUT/bench.txt"
if [ -n "$peers" ]; then
  echo "== sinabs-exodus 2.0 (O(T^2) backward: 3 repeats)" | tee -a "$OUT/bench.txt"
  python3 benchmarks/bench_layer.py --device cuda --frameworks sinabs-exodus --modes layer linear --repeats 3 --warmup 1 \
    --json /tmp/bench/sinabs_exodus.json 2>&1 | tee -a "$OUT/bench.txt"
fi
echo "== the general kernels (EXODUS_JIT_KERNELS=general), for comparison" | tee -a "$OUT/bench.txt"
EXODUS_JIT_KERNELS=general python3 benchmarks/bench_layer.py --device cuda --layers LIF \
  --sizes 16x500x512 16x500x16384 16x4000x1024 --json /tmp/bench/general.json 2>&1 | tee -a "$OUT/bench.txt"
fi
# at most 8 files come back: the secondary runs travel as one JSON
python3 -c "import json, pathlib; print(json.dumps({p.stem: json.loads(p.read_text()) for p in pathlib.Path('/tmp/bench').glob('*.json')}))" > "$OUT/bench_extra.json"

[ -z "${SHORT:-}${SKIP_TRAIN:-}" ] || exit 0
echo "== example: train_synthetic on the GPU"
python3 examples/train_synthetic.py --epochs 5 --plot "$OUT/train_synthetic_loss.png" 2>&1 | tee "$OUT/train.txt"

gpus=$(nvidia-smi -L | wc -l)
if [ "$gpus" -ge 2 ]; then
  echo "== DDP example on 2 GPUs (fresh JIT cache shared by both ranks)"
  EXODUS_JIT_CACHE=/tmp/exodus-cache-ddp torchrun --nproc_per_node=2 examples/ddp_train.py --steps 8 2>&1 \
    | grep -vE "FutureWarning|DistributedDataParallel\(" | tee -a "$OUT/train.txt"
fi

if [ -n "${PROFILE:-}" ]; then
  echo "== profile"
  for size in ${PROFILE_SIZES:-16x500x512 16x500x16384}; do
    python3 benchmarks/profile_layer.py --size $size 2>&1 | tee -a "$OUT/profile.txt" | grep -E "host issue|membrane|synaptic|Self CUDA|elementwise|reduce"
  done
fi

if [ -n "${NCU:-}" ]; then
  echo "== ncu (speed of light) of one forward and one backward kernel at 16x500x16384"
  ncu --clock-control none --kernel-name regex:membrane_ --launch-skip 10 --launch-count 2 --section SpeedOfLight --section InstructionStats --section Occupancy \
    python3 benchmarks/profile_layer.py --size 16x500x16384 --iters 1 2>&1 | tee -a "$OUT/profile.txt" \
    | grep -E "membrane_|Throughput|Duration|SM Busy|Registers|Executed Instructions  |Achieved Occ" | head -40
fi
