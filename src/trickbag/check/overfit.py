"""Overfit one batch (seed 002: "overfit a small subset first"): a model that cannot drive
one small batch's loss near zero has a bug or a setting that prevents learning."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from trickbag._checks import check_positive

__all__ = ["OverfitResult", "overfit_batch"]

ADVICE = [
    "check that targets match inputs (shuffled separately? off-by-one class ids?)",
    "try the lr 10x lower (diverging) or 10x higher (stalling)",
    "turn off regularization for this check: dropout, weight decay, label smoothing, augmentation",
    "check that every layer trains (requires_grad, parameters given to the optimizer)",
    "check the output size equals the number of classes and the loss gets raw logits",
]


@dataclass
class OverfitResult:
    passed: bool
    steps: int
    initial_loss: float
    final_loss: float
    accuracy: float
    losses: list[float] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)


def overfit_batch(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
    lr: float = 1e-3,
    steps: int = 200,
    target_loss: float = 0.05,
) -> OverfitResult:
    """Train a copy of ``model`` (Adam, ``lr``) on one batch for up to ``steps`` steps.

    Passes when the loss falls below ``target_loss`` (and the batch is then classified
    perfectly when the targets are class indices). The caller's model is not changed.
    """
    check_positive("lr", lr)
    check_positive("steps", steps)
    check_positive("target_loss", target_loss)
    m = copy.deepcopy(model).train()
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    losses: list[float] = []
    for _ in range(int(steps)):
        loss = loss_fn(m(inputs), targets)
        value = float(loss.detach())
        losses.append(value)
        if not math.isfinite(value) or value < target_loss:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        m.eval()
        out = m(inputs)
        acc = float((out.argmax(1) == targets).float().mean()) if targets.dim() == 1 else float("nan")
    final = losses[-1]
    passed = math.isfinite(final) and final < target_loss
    return OverfitResult(passed, len(losses), losses[0], final, acc, losses, [] if passed else list(ADVICE))
