#!/usr/bin/env bash
# One call on the GPU machine after a change: the kernels of a carried older version against this
# checkout's (device_ab.sh), whole checkouts in alternating fresh processes (device_processes.sh),
# and the protocol's times of the layer's operator alone (trace_protocol.py --timed-only: the
# layer minus its Python and reset, beside the floor). Usage (device tool):
# OLD=v30 bash benchmarks/device_check.sh   (carry .whl and .variants)
# SUITE=1: the full CUDA test suite on this checkout first; AB=0: without the kernel A/B;
# OP_ONLY=0: without the last part.
# Between them, the host time per call of both checkouts (host_overhead.py --breakdown).
OLD=${OLD:-v30}
if [ -n "${SUITE:-}" ]; then
  (source benchmarks/device_env.sh
   rm -rf "$EXODUS_JIT_CACHE"
   python3 -m exodus_jit build --cuda 2>&1 | tail -1 | tee "$OUT/pytest_cuda.txt"
   python3 -m pytest -q -m cuda tests/ -p no:cacheprovider 2>&1 | tee -a "$OUT/pytest_cuda.txt" | tail -5)
fi
[ "${AB:-1}" = 0 ] || VARIANTS="$OLD current" ROUNDS=${ROUNDS:-2} \
  SIZES=${AB_SIZES:-"16x500x512 16x500x16384 16x4000x1024"} bash benchmarks/device_ab.sh > /dev/null 2>&1
CHECKOUTS="$OLD current" PROCESSES=${PROCESSES:-4} LAYERS=${LAYERS:-"LIF LIF_syn"} DTYPES="float32 bfloat16" \
  SIZES=${SIZES:-"16x500x512 16x500x4096 16x500x16384 16x4000x1024"} bash benchmarks/device_processes.sh
source benchmarks/device_env.sh
# host time per call of both checkouts' call paths (tiny layer), alternating
for c in $OLD current $OLD current; do
  root=$PWD; [ "$c" = current ] || root=$PWD/.variants/$c
  echo "== host_overhead.py --breakdown: $c" | tee -a "$OUT/host.txt"
  PYTHONPATH=/tmp/site:$root/src python3 $root/benchmarks/host_overhead.py --device cuda --breakdown 2>&1 | tee -a "$OUT/host.txt"
done
[ "${OP_ONLY:-1}" = 0 ] || python3 benchmarks/trace_protocol.py --timed-only --iters 50 --cases \
  $(for s in 16x500x512:float32 16x500x16384:float32 16x500x16384:bfloat16; do
      for f in floor exodus-jit op-reset op; do echo $f:LIF:$s; done; done) 2>&1 | tee "$OUT/op_only.txt" | grep -v JSON
[ ! -f "$OUT/ab.txt" ] || grep -E "total|label|us" "$OUT/ab.txt" | tail -40
