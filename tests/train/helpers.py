"""What the trainer tests share: a fast setting of the quick recipe (small_cnn on
``small_data``), callbacks that stop a run at a chosen point, and weight comparisons."""

from __future__ import annotations

import torch

from trickbag.recipes import load
from trickbag.train import Callback

FAST = [
    "data.batch_size=50", "model.params={widths: [8, 16], depth: 1}", "train.epochs=3", "train.threads=1",
    "schedule.params={total_steps: 1dur, warmup_steps: 0.5ep}",
]


def recipe(*extra: str):
    """``fashion-mnist-quick`` cut down to ``FAST`` plus ``extra`` overrides."""
    return load("fashion-mnist-quick", FAST + list(extra))


class StopAfterEpoch(Callback):
    """Stop at the end of epoch ``epoch`` (as if killed right after its checkpoint)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer, metrics) -> None:
        if trainer.epoch == self.epoch:
            trainer.should_stop = True


class StopAtStep(Callback):
    """Stop after optimizer step ``step`` (mid-epoch: the trainer writes interrupt.pt)."""

    def __init__(self, step: int) -> None:
        self.at = step

    def on_step_end(self, trainer, loss) -> None:
        if trainer.step == self.at:
            trainer.should_stop = True


def same_weights(a, b) -> bool:
    """Two trainers' model weights (and buffers) are bitwise equal."""
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
