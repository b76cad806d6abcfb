#!/usr/bin/env bash
# One call on the GPU machine for the patches waiting in benchmarks/pending/: this checkout's
# kernels (and src/) are kept as the A/B variant "base", every patch in PATCHES (default: all of
# pending/*.patch, in name order) is applied, then
#   1. the CUDA suite on the patched tree (pytest-cuda.txt), and again with EXODUS_JIT_KERNELS set
#      to each entry of CHOICES (default "scan"; "" for none: pytest-cuda-CHOICE.txt; the suite
#      expects the fast kernels where they apply, so "general" is not one of them),
#   2. the kernels a LIF launches at 16x500x512 under each EXODUS_JIT_KERNELS value (choices.txt),
#   3. the kernels alone, base against the patched tree (device_ab.sh: ab.json / ab.txt) at SIZES
#      (default: where the scan backward runs) with the clipped LIF too (MIN_V, default -1) and,
#      where ALPHA_SYN is set, the LIF with the fused synaptic stage.
# Each patch in pending/alternatives/ (another way to the same end as a pending patch, so the two
# do not apply together) is applied to a copy of the base as a variant of its own name and timed
# beside them in step 3; its suite does not run here (it would in a call of its own, moved into
# pending/ in place of the patch it competes with).
# A patch that does not apply stops the call before anything is built. The tree is left patched.
# Usage (device tool): bash benchmarks/device_pending.sh   (results under $OUT)
source benchmarks/device_env.sh
rm -rf "$EXODUS_JIT_CACHE" .variants/base
mkdir -p .variants/base
cp -r kernels src .variants/base/
for patch in ${PATCHES:-benchmarks/pending/*.patch}; do
  [ -e "$patch" ] || continue  # none pending: the alternatives alone against the base
  git apply "$patch" || { echo "$patch does not apply"; exit 1; }
  echo "applied $patch" | tee -a "$OUT/pending.txt"
done
alternatives=""
for alternative in benchmarks/pending/alternatives/*.patch; do
  [ -e "$alternative" ] || continue
  name=$(basename "$alternative" .patch)
  rm -rf ".variants/$name" && mkdir -p ".variants/$name" && cp -r .variants/base/kernels .variants/base/src ".variants/$name/"
  git apply --directory=".variants/$name" "$alternative" || { echo "$alternative does not apply"; exit 1; }
  alternatives="$alternatives $name"
  echo "variant $name: the base with $alternative" | tee -a "$OUT/pending.txt"
done
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/env.txt"
python3 -m exodus_jit build --cpu --cuda 2>&1 | tee -a "$OUT/env.txt"

echo "== CUDA tests, patched"
python3 -m pytest -q -m cuda tests/ -p no:cacheprovider 2>&1 | tee "$OUT/pytest-cuda.txt" | tail -15
for choice in ${CHOICES-scan}; do
  echo "== CUDA tests, patched, EXODUS_JIT_KERNELS=$choice"
  EXODUS_JIT_KERNELS=$choice python3 -m pytest -q -m cuda tests/ -p no:cacheprovider 2>&1 \
    | tee "$OUT/pytest-cuda-$choice.txt" | tail -5
done

echo "== the kernels each EXODUS_JIT_KERNELS value launches (LIF, 16x500x512, forward + backward)"
for choice in default general ring scan; do
  EXODUS_JIT_KERNELS=$choice python3 - <<'PY' 2>&1 | tee -a "$OUT/choices.txt"
import os
import sys

import torch
from exodus_jit import ops

sys.path.insert(0, "tests")
from conftest import cuda_kernel_names  # the tests' own reading of the kernels launched

u = (torch.randn(16, 500, 512, device="cuda") * 4).requires_grad_()
v0 = torch.zeros(16, 512, device="cuda")
step = lambda: ops.membrane(u, v0, 0.9, 1.0).output.sum().backward()
step()  # built and warm before profiling
names = sorted({name.split("<")[0] for name in cuda_kernel_names(step) if "membrane" in name})
print(os.environ["EXODUS_JIT_KERNELS"], names)
PY
done

echo "== kernels alone: base against the patched tree${alternatives:+ and$alternatives}"
VARIANTS="base current$alternatives" SIZES=${SIZES:-16x500x512 2x500x512 4x4000x1024} MIN_V=${MIN_V:--1} \
  DTYPES=${DTYPES:-float32} ROUNDS=${ROUNDS:-2} bash benchmarks/device_ab.sh
