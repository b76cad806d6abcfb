#!/usr/bin/env bash
# One call on the GPU machine: where the time of a layer call goes, without the test suite.
# torch.profiler (host issue time, kernels) at three sizes, then ncu with warp-stall and
# instruction sections for the membrane kernels (NCU_SIZES: SIZE or SIZE:DTYPE; NCU_PAGE=raw:
# every metric; NCU_ONLY: skip the profiler; NCU_EXTRA: more ncu arguments, e.g. "--section
# SourceCounters" for the instructions where warps stall). Usage (device tool): bash benchmarks/device_profile.sh
source benchmarks/device_env.sh
python3 -m exodus_jit build --cuda 2>&1 | tail -2
for size in ${SIZES:-16x500x512 16x500x16384 16x4000x1024}; do
  [ -n "${NCU_ONLY:-}" ] && break
  python3 benchmarks/profile_layer.py --size $size 2>&1 | tee -a "$OUT/profile.txt" | grep -E "host issue|membrane|synaptic|Self CUDA|elementwise|reduce"
done
SECTIONS="--section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis --section InstructionStats ${NCU_EXTRA:-}"
for spec in ${NCU_SIZES:-16x500x16384 16x4000x1024}; do  # SIZE, or SIZE:DTYPE
  size=${spec%%:*}
  dtype=float32
  [[ $spec == *:* ]] && dtype=${spec#*:}
  ncu --clock-control none --kernel-name regex:membrane_ --launch-skip 10 --launch-count 2 $SECTIONS --page ${NCU_PAGE:-details} \
    python3 benchmarks/profile_layer.py --size $size --dtype $dtype --iters 1 > "$OUT/ncu-$size-$dtype.txt" 2>&1
  grep -E "membrane_|Duration|DRAM Throughput|Compute \(SM\)|Registers|Achieved Occupancy|Executed Ipc A|Issue Slots Busy|Stall|Executed Instructions  " "$OUT/ncu-$size-$dtype.txt" | head -40
done
