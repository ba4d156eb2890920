"""Exponential moving average of weights *and buffers* (BatchNorm statistics), built on
``torch.optim.swa_utils.AveragedModel`` (pytorch#84053: buffers must follow too).

``decay_t = min(decay, (1 + n) / (10 + n))`` with ``warmup`` (n = updates so far), so early
averages are not dominated by the random init. The update counter lives in the
averaged model's ``n_averaged`` buffer, so it is saved and restored with its
``state_dict`` (YOLOX#1318, lightly-train PR#892).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from trickbag._checks import check_range

__all__ = ["build_ema"]


def build_ema(model: nn.Module, decay: float, warmup: bool = True) -> AveragedModel:
    check_range("ema_decay", decay, 0.0, 1.0, low_open=True, high_open=True)

    @torch.no_grad()
    def ema_update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n)) if warmup else decay
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1.0 - d)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():  # e.g. BN's num_batches_tracked: copy
                a.copy_(c)

    return AveragedModel(model, multi_avg_fn=ema_update, use_buffers=True)
