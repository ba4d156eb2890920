"""Exponential moving average of weights *and buffers* (BatchNorm statistics), an
``torch.optim.swa_utils.AveragedModel`` (pytorch#84053: buffers must follow too).

``decay_t = min(decay, (1 + n) / (10 + n))`` with ``warmup`` (n = updates so far), so early
averages are not dominated by the random init. The update counter lives in the
averaged model's ``n_averaged`` buffer, so it is saved and restored with its
``state_dict`` (YOLOX#1318, lightly-train PR#892). That buffer stays on the CPU and the
update reads it there: ``AveragedModel.update_parameters`` compares it and copies it to
the device every step, each a host synchronisation on a GPU.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from trickbag._checks import check_range

__all__ = ["build_ema", "ExponentialMovingAverage"]


class ExponentialMovingAverage(AveragedModel):
    """``AveragedModel`` with the EMA update above, done with foreach ops and no host sync."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        check_range("ema_decay", decay, 0.0, 1.0, low_open=True, high_open=True)
        super().__init__(model, use_buffers=True)
        self.decay, self.warmup = decay, warmup

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        n = int(self.n_averaged)  # a CPU buffer: reading it waits for no device
        averaged = [*self.module.parameters(), *self.module.buffers()]
        current = [t.detach() for t in (*model.parameters(), *model.buffers())]
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        others = [(a, c) for a, c in zip(averaged, current) if not a.is_floating_point()]  # e.g. BN's num_batches_tracked
        if n == 0:
            floats, others = [], floats + others  # the first update copies
        if floats:
            decay = min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1.0 - decay)
        if others:
            torch._foreach_copy_([a for a, _ in others], [c for _, c in others])
        self.n_averaged += 1


def build_ema(model: nn.Module, decay: float, warmup: bool = True) -> ExponentialMovingAverage:
    return ExponentialMovingAverage(model, decay, warmup)
