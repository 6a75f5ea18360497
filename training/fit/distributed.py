"""Training on several processes with torch.distributed, launched by torchrun; one process changes nothing.

    torchrun --standalone --nproc-per-node 2 -m training.train --model b --data data/faces   # 2 CPU processes or GPUs

Each rank trains on a disjoint share of every epoch's faces (together exactly one process's global
batches), DDP averages the gradients, BatchNorm statistics are synchronised over the global batch
(SyncBatchNorm), validation runs on every rank's share and is gathered, and the decisions that end a
run are made once and shared, so all ranks stop at the same step. Rank 0 alone writes files.
Without torchrun (WORLD_SIZE unset) every function here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The rank that writes files and logs."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


ONE_PROCESS = Ranks()


def start(cuda: bool) -> Ranks:
    """Join the process group torchrun set up (gloo on the CPU, NCCL on GPUs), or a single process."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        return ONE_PROCESS
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local_rank)  # one process per GPU
    return Ranks(dist.get_rank(), dist.get_world_size(), local_rank)


def stop(ranks: Ranks) -> None:
    if ranks.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def share(order: np.ndarray, batch_size: int, ranks: Ranks) -> np.ndarray:
    """This rank's positions of an epoch's order: every world-th of the whole global batches.

    Global batch k is order[k B:(k + 1) B] on one process; rank r's batch k, of B / world faces, is
    its r-th, (r + world)-th, ... faces: together the same faces. Only whole global batches are kept,
    so every rank takes the same number of steps.
    """
    whole = len(order) // batch_size * batch_size or len(order) // ranks.world * ranks.world
    return order[:whole][ranks.rank :: ranks.world]


def agree(flag: bool, ranks: Ranks) -> bool:
    """True on every rank once any rank says so (a clock-based stop must end the same step everywhere)."""
    if not ranks.active:
        return flag
    value = torch.tensor([float(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def from_main(value, ranks: Ranks):
    """Rank 0's value, on every rank."""
    if not ranks.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def summed(values: dict[str, float], ranks: Ranks) -> dict[str, float]:
    """Each value summed over the ranks."""
    if not ranks.active:
        return values
    tensor = torch.tensor([float(v) for v in values.values()], dtype=torch.float64)
    dist.all_reduce(tensor)
    return dict(zip(values, tensor.tolist()))


def gathered(tensors: dict[str, torch.Tensor], ranks: Ranks) -> dict[str, torch.Tensor]:
    """Every rank's tensors (CPU), concatenated in rank order, on every rank."""
    if not ranks.active:
        return tensors
    parts: list = [None] * ranks.world
    dist.all_gather_object(parts, tensors)
    return {key: torch.cat([part[key] for part in parts]) for key in tensors}


def wrap(model: torch.nn.Module, ranks: Ranks, cuda: bool) -> torch.nn.Module:
    """The model as DDP trains it: its trainable parameters now (re-wrap when a stage changes them)."""
    if not ranks.active:
        return model
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[ranks.local_rank] if cuda else None)
