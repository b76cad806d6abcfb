#!/usr/bin/env bash
# One call on a two-GPU machine (device kind nvidia-h200-x2): the DDP example with torchrun on two
# GPUs, starting from an empty JIT cache that both ranks share, then the cache's listing (one CUDA
# build, not two). Usage (device tool): bash benchmarks/device_ddp.sh   -> $OUT/ddp.txt
source benchmarks/device_env.sh
# NVLink multicast stays off (the lent hosts' rule; torchrun passes the environment to the ranks)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export EXODUS_JIT_CACHE=/tmp/exodus-cache-ddp
rm -rf "$EXODUS_JIT_CACHE"
{
  nvidia-smi -L
  nvidia-smi topo -m 2>/dev/null | head -5
  python3 -c "import torch; print('torch', torch.__version__, 'GPUs:', torch.cuda.device_count())"
  echo "== torchrun --nproc_per_node=2 examples/ddp_train.py --steps ${STEPS:-8} (empty JIT cache)"
  start=$(date +%s.%N)
  torchrun --nproc_per_node=2 examples/ddp_train.py --steps "${STEPS:-8}" 2>&1 | grep -vE "FutureWarning|DistributedDataParallel\("
  echo "exit status: ${PIPESTATUS[0]}, wall $(python3 -c "import time; print(round(time.time() - $start, 1))") s"
  echo "== the shared cache afterwards"
  python3 -m exodus_jit cache list
  echo "== again, cache warm"
  torchrun --nproc_per_node=2 examples/ddp_train.py --steps "${STEPS:-8}" 2>&1 | grep -vE "FutureWarning|DistributedDataParallel\("
  echo "exit status: ${PIPESTATUS[0]}"
} 2>&1 | tee "$OUT/ddp.txt"
