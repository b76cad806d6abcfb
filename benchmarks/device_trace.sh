#!/usr/bin/env bash
# One call on the GPU machine: where the protocol's time goes (trace_protocol.py) for the floor,
# the layer and the layer's operator alone, and the host time per call (host_overhead.py).
# Writes $OUT/trace.txt, $OUT/host.txt and the raw traces as $OUT/traces.tgz.
# Usage (device tool): bash benchmarks/device_trace.sh   (CASES="..." to choose the cases)
source benchmarks/device_env.sh
python3 -m exodus_jit build --cuda 2>&1 | tail -1
CASES=${CASES:-"floor:LIF:16x500x512:float32 exodus-jit:LIF:16x500x512:float32 op-reset:LIF:16x500x512:float32
op:LIF:16x500x512:float32 exodus-jit:IAF:16x500x512:float32 floor:LIF:16x500x16384:float32
exodus-jit:LIF:16x500x16384:float32 op:LIF:16x500x16384:float32 floor:LIF:16x500x16384:bfloat16
exodus-jit:LIF:16x500x16384:bfloat16 floor:LIF:16x500x4096:float32 exodus-jit:LIF:16x500x4096:float32
exodus-jit:LIF_syn:16x500x4096:float32 exodus-jit:LIF_syn:16x500x512:float32"}
python3 benchmarks/trace_protocol.py --cases $CASES --save /tmp/traces 2>&1 | grep -v "UserWarning\|_warn_once" \
  | tee "$OUT/trace.txt" | grep -E "^==|fwd.end_record|bwd.end_record|kernel_us"
tar czf "$OUT/traces.tgz" -C /tmp traces
python3 benchmarks/host_overhead.py --device cuda --breakdown 2>&1 | tee "$OUT/host.txt" | head -20
