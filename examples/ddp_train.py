"""Data-parallel training with exodus-jit layers, checked against one process on the global batch.

    torchrun --nproc_per_node=2 examples/ddp_train.py --steps 5

Each rank trains the moving-bar SNN of train_synthetic.py on its slice of every global batch with
DistributedDataParallel (NCCL on GPUs, gloo on the CPU). All ranks load the kernels from one JIT
cache: the first builds under the cache's file lock, the others wait and load. Rank 0 then trains
the same model alone on the whole global batch and prints both loss curves: they must agree to
float32 rounding, which the script checks.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_synthetic import DIRECTIONS, make_dataset, make_model, reset  # noqa: E402

from exodus_jit.conversion import sinabs_to_exodus  # noqa: E402


def losses_for(model, data, labels, steps, global_batch, lo, hi, device, distributed):
    """Train `model` for `steps` batches on samples [lo, hi) of each global batch."""
    opt = torch.optim.SGD(model.parameters(), lr=0.002)
    time_steps = data.shape[1]
    history = []
    for step in range(steps):
        start = step * global_batch
        x = data[start + lo:start + hi].to(device).flatten(0, 1)
        y = labels[start + lo:start + hi].to(device)
        reset(model)
        opt.zero_grad()
        counts = model(x).reshape(hi - lo, time_steps, DIRECTIONS).sum(1)
        loss = nn.functional.cross_entropy(counts, y)
        loss.backward()  # DDP averages gradients over ranks here
        opt.step()
        mean_loss = loss.detach()
        if distributed:
            dist.all_reduce(mean_loss)
            mean_loss /= dist.get_world_size()
        history.append(mean_loss.item())
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--global-batch", type=int, default=32)
    parser.add_argument("--time-steps", type=int, default=30)
    args = parser.parse_args()

    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = f"cuda:{local_rank}" if use_cuda else "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if args.global_batch % world:
        raise SystemExit("--global-batch must divide evenly over the ranks")
    per_rank = args.global_batch // world

    data, labels = make_dataset(args.steps * args.global_batch, args.time_steps, seed=2)
    base = make_model(per_rank)  # the same seed on every rank: identical initial weights
    model = sinabs_to_exodus(copy.deepcopy(base)).to(device)
    # neuron states are per sample, not model state: every rank keeps its own
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if use_cuda else None,
                                              broadcast_buffers=False)
    ddp_losses = losses_for(ddp, data, labels, args.steps, args.global_batch, rank * per_rank,
                            (rank + 1) * per_rank, device, distributed=True)
    print(f"rank {rank}/{world} on {device}: kernels loaded, DDP losses {['%.6f' % l for l in ddp_losses]}",
          flush=True)

    if rank == 0:
        single = make_model(args.global_batch)
        single.load_state_dict(base.state_dict())
        single = sinabs_to_exodus(single).to(device)
        single_losses = losses_for(single, data, labels, args.steps, args.global_batch, 0, args.global_batch,
                                   device, distributed=False)
        print(f"single process, global batch {args.global_batch}: {['%.6f' % l for l in single_losses]}")
        worst = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ddp_losses, single_losses))
        print(f"largest relative loss difference DDP vs single: {worst:.2e}")
        if worst > 1e-4:
            raise SystemExit("DDP and single-process losses disagree")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
