#!/usr/bin/env bash
# One call whose work depends on the card that came (a call free to take an H100 or an H200 gets
# whichever starts): on an H200, or on any card while no patch waits in pending/, the published
# run (device_run.sh without the examples, then the benchmark in 5 fresh processes, float32 and
# bfloat16; env.txt names the card), the run issue 5's targets are read on; on another card with
# patches pending, their call (device_pending.sh: with none it would only time identical trees).
# After a published run, if it leaves more than a minute of the call's LIMIT seconds (default 570,
# for the 600 s limit), device_trace.sh runs in what is left (trace.tgz). BENCH_ONLY=1: the
# published run without the CUDA suite (when it already ran on this tree and device time is short);
# PROCESSES: how many fresh processes follow it (default 5).
# OTHER: what another card does while nothing is pending: "published" (the default, as above),
# "suite" (the CUDA suite only, with the default kernels and with the scan kernels forced, ~5
# minutes: when a published run of this code on that card has landed already), "syn" (the LIF_syn
# diagnosis of device_syn.sh, ~2.5 minutes) or "none" (stop at once: only the start's device time is
# spent).
# Usage (device tool): bash benchmarks/device_by_card.sh   (results under $OUT)
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
echo "card: $card"
pending=$(ls benchmarks/pending/*.patch 2> /dev/null | wc -l)
# what this call does: an H200 the published run, a pending patch its call, else OTHER's choice
mode=${OTHER:-published}
case "$mode" in published | suite | syn | none) ;; *) echo "OTHER must be published, suite, syn or none, not $mode"; exit 2 ;; esac
if [[ "$card" == *H200* ]]; then mode=published; elif [ "$pending" -gt 0 ]; then mode=pending; fi
case "$mode" in
none)
  echo "not an H200 and OTHER=none: nothing run" ;;
syn)
  bash benchmarks/device_syn.sh ;;
suite)
  # device_run.sh's build and suite (TESTS), then the suite again on the same build with the
  # scan kernels forced (a choice made at run time)
  TESTS=tests/ bash benchmarks/device_run.sh 2>&1 | grep -E "passed|failed|error|build wall|cached load"
  (source benchmarks/device_env.sh
   EXODUS_JIT_KERNELS=scan python3 -m pytest -q -m cuda tests/ -p no:cacheprovider 2>&1 \
     | tee "$OUT/pytest_cuda_scan.txt" | tail -2) ;;
published)
  unset SIZES  # the published table's sizes are its own (SIZES, meant for a pending call's A/B, would cut it)
  SKIP_TRAIN=1 bash benchmarks/device_run.sh 2>&1 | grep -E "passed|failed|error|build wall|cached load|ms" | tail -60
  PROCESSES=${PROCESSES:-5} DTYPES="float32 bfloat16" bash benchmarks/device_processes.sh
  # then, in what is left of the call, the protocol's timelines (device_trace.sh), packed as one
  # file: at most 8 files come back, and the published run already writes 7
  left=$((${LIMIT:-570} - SECONDS))
  if [ "$left" -gt 60 ]; then
    OUT=/tmp/trace-out timeout "$left" bash benchmarks/device_trace.sh > /dev/null 2>&1
    tar czf "${OUT:-/tmp/exodus-out}/trace.tgz" -C /tmp trace-out && echo "trace.tgz: device_trace.sh's results"
  fi ;;
pending)
  bash benchmarks/device_pending.sh 2>&1 | tail -60 ;;
esac
