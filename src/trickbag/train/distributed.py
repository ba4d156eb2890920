"""Data-parallel training on ``torch.distributed``, launched by ``torchrun``.

``torchrun --nproc-per-node N -m trickbag train --recipe R`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous in their environment; ``recipes.build`` sees
them and joins the process group (gloo on CPU, nccl on CUDA, each rank on ``cuda:LOCAL_RANK``).

* **Batches**: ``data.batch_size`` is the *global* batch (the linear-scaling rule and the
  schedule's steps use it). Every rank draws the same seeded permutation of the training set
  each epoch (the trainer's data generator: the epoch is its seed, as with a
  ``DistributedSampler`` and ``set_epoch``) and takes its own contiguous ``batch_size /
  world_size`` slice of each global batch, so the ranks together see exactly the batches one
  process would. ``DistributedDataParallel`` averages the gradients, so one step of N ranks is
  one step on the global batch (BatchNorm aside: each rank normalizes its own slice unless
  ``train.sync_bn`` is on, which torch supports on GPUs only).
* **Evaluation** is split the same way and the sums (loss, correct, count) are reduced; before
  it, rank 0's BatchNorm statistics (and EMA buffers) go to every rank, so every rank evaluates
  the weights rank 0 checkpoints.
* **Writes**: only rank 0 writes the run directory (config, logs, checkpoints, summary, with
  ``world_size`` recorded); the others read its checkpoints on ``--resume`` (on several
  machines, ``--out`` must be a shared folder). A checkpoint holds the unwrapped model, so a run
  saved by N ranks resumes on M ranks or in one process (the global batch is the same).
* **Failures**: a rank that raises exits non-zero; torchrun then stops the other ranks (they
  would otherwise wait in the next all-reduce) and exits non-zero itself. The process group
  times out after ``TIMEOUT`` as a last resort.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Distributed", "launched", "join_from_environment", "TIMEOUT"]

#: how long a collective waits for a rank that does not come (torchrun normally ends the job first)
TIMEOUT = timedelta(minutes=5)


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting ``RANK`` and
    ``WORLD_SIZE``)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes."""
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (of indices or examples): rank r of N
        gets ``batch[r*len/N : (r+1)*len/N]`` (``len`` divisible by N for training batches; for
        evaluation the last ranks may get one fewer or none)."""
        n = len(batch)
        per = -(-n // self.world_size)
        return batch[min(n, self.rank * per): min(n, (self.rank + 1) * per)]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a tensor over the ranks (a new tensor; no host synchronisation)."""
        out = value.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.world_size

    def agree(self, *flags: bool, device: torch.device | None = None) -> tuple[bool, ...]:
        """Each flag true on every rank when it is true on any (a stop, a Ctrl-C)."""
        values = torch.tensor([float(f) for f in flags], device=device)
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in values.tolist())

    def augmentation_seed(self, seed: int, step: int) -> int:
        """The seed of this rank's augmentation draws at ``step``: distinct across ranks and
        steps (the ranks share the epoch permutation, not their slices' flips and crops)."""
        return (seed * 1_000_003 + step) * 65_537 + self.rank

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """The sum of ``values`` over the ranks (in place, also returned)."""
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def broadcast_buffers(self, *modules: nn.Module | None) -> None:
        """Rank 0's buffers (BatchNorm running statistics) to every rank: each rank's last
        forward updated its own from its slice, and evaluation and checkpoints must agree."""
        for module in modules:
            if module is not None:
                for buffer in module.buffers():
                    dist.broadcast(buffer, src=0)

    @staticmethod
    def no_sync(forward: nn.Module):
        """DDP's ``no_sync`` of ``forward`` (compiled or not): gradients of the backward passes
        inside stay local, for accumulation; the next backward outside averages them all."""
        return getattr(forward, "_orig_mod", forward).no_sync()

    def barrier(self) -> None:
        dist.barrier()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` in ``DistributedDataParallel`` (its parameters broadcast from rank 0)."""
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def describe(self) -> dict:
        return {"world_size": self.world_size, "rank": self.rank, "backend": self.backend}


def join_from_environment(device_type: str) -> Distributed | None:
    """Join the process group torchrun set up (once per process); None when not launched."""
    if not launched():
        return None
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend, timeout=TIMEOUT)
    return Distributed(rank, world, local, dist.get_backend())
