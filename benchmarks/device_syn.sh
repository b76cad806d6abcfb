#!/usr/bin/env bash
# One call on the GPU machine for NOTES' next step 7: is LIF with tau_syn slow at 16x500x512 for
# its own host path, or for where the benchmark measures it? The variants at 512 in two orders
# (LIF_syn third as in the published run, then first) and at 4096, three processes each; single
# calls of the LIF_syn layer beside LIF's (host_overhead.py --cold) and loops; the protocol's
# timeline for both at 512. Writes $OUT/syn.txt and $OUT/syn-trace.txt.
# Usage (device tool): bash benchmarks/device_syn.sh
source benchmarks/device_env.sh
python3 -m exodus_jit build --cuda 2>&1 | tail -1
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  for round in 1 2 3; do
    for order in "LIF IAF LIF_syn LIF_minv" "LIF_syn LIF_minv IAF LIF"; do
      echo "== round $round, order: $order"
      python3 benchmarks/bench_layer.py --device cuda --frameworks exodus-jit --layers $order \
        --sizes 16x500x512 16x500x4096 2>&1 | grep " layer "
    done
  done
  echo "== host time per call"
  python3 benchmarks/host_overhead.py --device cuda --cold 2>&1 | grep "us/call"
} 2>&1 | tee "$OUT/syn.txt"
python3 benchmarks/trace_protocol.py --cases exodus-jit:LIF:16x500x512:float32 exodus-jit:LIF_syn:16x500x512:float32 \
  2>&1 | grep -v "UserWarning\|_warn_once" > "$OUT/syn-trace.txt"
grep -E "^==|fwd.end_record|bwd.end_record|kernel_us" "$OUT/syn-trace.txt"
