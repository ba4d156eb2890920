"""Run by tests/train/test_distributed.py, under torchrun or alone: train a recipe and write the
per-step training losses averaged over the ranks (each rank's loss is the mean over its equal
slice, so their mean is the global batch's) to a JSON file. ``--fail-rank R --fail-step S``
makes rank R raise at step S instead."""

import argparse
import json
import os

import torch
import torch.distributed as dist

from trickbag.recipes import load
from trickbag.train import Callback, Trainer


class Losses(Callback):
    def __init__(self, fail_rank: int, fail_step: int) -> None:
        self.values: list[float] = []
        self.fail_rank, self.fail_step = fail_rank, fail_step

    def on_step_end(self, trainer, loss) -> None:
        rank = int(os.environ.get("RANK", 0))
        if rank == self.fail_rank and trainer.step == self.fail_step:
            raise RuntimeError(f"injected failure in rank {rank} at step {trainer.step}")
        value = loss.detach().double().reshape(1).clone()
        if dist.is_initialized():
            dist.all_reduce(value)
            value /= dist.get_world_size()
        self.values.append(float(value))


ap = argparse.ArgumentParser()
ap.add_argument("recipe")
ap.add_argument("out")
ap.add_argument("--fail-rank", type=int, default=-1)
ap.add_argument("--fail-step", type=int, default=-1)
args = ap.parse_args()
torch.set_num_threads(1)
losses = Losses(args.fail_rank, args.fail_step)
trainer = Trainer(load(args.recipe), out=os.path.join(args.out, "run"), callbacks=[losses], quiet=True, tensorboard=False)
summary = trainer.fit()
if trainer.is_main:
    with open(os.path.join(args.out, "losses.json"), "w") as f:
        json.dump({"losses": losses.values, "world_size": summary["world_size"]}, f)
