#!/usr/bin/env bash
# One call on the GPU machine: kernel versions side by side (A/B). Each name in VARIANTS other
# than "current" is a kernels/ folder carried under .variants/NAME/kernels (an ignored folder:
# pass it in the device tool's carry); "current" is this checkout's. Each is built (cached per
# source, so a repeat costs nothing) and timed with kernel_time.py, in ROUNDS alternating
# rounds, so host drift shows as spread between rounds of one version.
# A variant may carry its own src/ beside kernels/ (where the Python side lists other kernel
# sources); the others run with this checkout's.
# Usage (device tool): VARIANTS="base current" bash benchmarks/device_ab.sh (MIN_V=-1: also the
# clipped LIF, float32; ALPHA_SYN=0.8: also the LIF with the fused synaptic stage, float32, and
# with MIN_V clipped too)
source benchmarks/device_env.sh
rm -rf "$EXODUS_JIT_CACHE"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/ab-env.txt"
SIZES=${SIZES:-16x500x512 16x500x4096 16x500x16384 16x4000x1024}
mv kernels /tmp/kernels-current
cp -r src /tmp/src-current
for round in $(seq ${ROUNDS:-2}); do
  for v in ${VARIANTS:-base current}; do
    rm -rf kernels src
    if [ "$v" = current ]; then cp -r /tmp/kernels-current kernels; else cp -r ".variants/$v/kernels" kernels; fi
    if [ "$v" != current ] && [ -d ".variants/$v/src" ]; then cp -r ".variants/$v/src" src; else cp -r /tmp/src-current src; fi
    python3 -m exodus_jit build --cuda 2>&1 | tail -1
    python3 benchmarks/kernel_time.py --label "$v" --sizes $SIZES --dtypes ${DTYPES:-float32 bfloat16} \
      --json "$OUT/ab.json" 2>&1 | tee -a "$OUT/ab.txt"
    if [ -n "${MIN_V:-}" ]; then  # the clipped LIF (min_v_mem) too
      python3 benchmarks/kernel_time.py --label "$v" --sizes $SIZES --dtypes float32 --min-v "$MIN_V" \
        --json "$OUT/ab.json" 2>&1 | tee -a "$OUT/ab.txt"
    fi
    if [ -n "${ALPHA_SYN:-}" ]; then  # the fused synaptic stage (kernel_time.py --alpha-syn)
      for clip in "" ${MIN_V:+"--min-v=$MIN_V"}; do
        python3 benchmarks/kernel_time.py --label "$v" --sizes $SIZES --dtypes float32 --alpha-syn "$ALPHA_SYN" \
          --rounds 3 $clip --json "$OUT/ab.json" 2>&1 | tee -a "$OUT/ab.txt"
      done
    fi
  done
done
rm -rf kernels src
mv /tmp/kernels-current kernels
mv /tmp/src-current src
