"""Lookahead (Zhang, Lucas, Hinton & Ba 2019, "Lookahead Optimizer: k steps forward, 1 step
back", Algorithm 1): the optimizer moves *fast* weights θ; every ``k`` of its steps the *slow*
weights φ move part of the way toward them and the fast weights restart from there::

    φ ← φ + α (θ − φ)        θ ← φ

With α = 1 it is the plain optimizer. The paper's defaults: k = 5 or 10, α = 0.5.

``ramp=True`` is airbench94's schedule: α falls from 1 (no pull-back) at the start to the
given α at the end as ``α_t = 1 - (1 - α) (t / T)^3`` (t the step, T the run's steps), so the
averaging is strong only once the lr has come down; airbench uses k = 5 and α = 1 - 0.95^5
≈ 0.226 there.

As in airbench (``legacy/airbench94.py``'s ``LookaheadState``), every floating-point tensor
of the model moves this way: the parameters and the BatchNorm statistics, so the statistics
follow the weights they were pulled back to. The run also ends on a synchronisation (at the
schedule's last step), so its final weights are slow ones, as the paper evaluates.

The trainer calls ``after_step(model, step, total_steps)`` after every optimizer step it
counts; the slow copy is in ``state_dict`` (a resume is bit-exact), and when a sync is due
follows from the step alone (no counter of its own).
"""

from __future__ import annotations

import torch
from torch import nn

from trickbag._checks import check_range

__all__ = ["Lookahead", "alpha_at", "sync_due"]


def sync_due(step: int, every: int, total_steps: int) -> bool:
    """Whether the slow weights move after optimizer step ``step`` (1-based): every ``every``
    steps, and at the run's last step (``total_steps``) so that it ends on slow weights."""
    return step % every == 0 or step == total_steps


def alpha_at(step: int, total_steps: int, alpha: float, ramp: bool) -> float:
    """α at optimizer step ``step``: ``alpha``, or with ``ramp`` ``1 - (1 - alpha) (step / total_steps)^3``."""
    if not ramp:
        return alpha
    return 1.0 - (1.0 - alpha) * (min(step, total_steps) / total_steps) ** 3


def _moving(model: nn.Module) -> list[torch.Tensor]:
    """The tensors lookahead moves: every floating-point parameter and buffer, in a fixed order."""
    return [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]


class Lookahead:
    """Slow weights for ``model``; ``synchronize`` is the paper's outer step.

    Args:
        model: the net the optimizer trains (its current weights become the slow ones).
        every: k, optimizer steps between synchronisations (>= 1).
        alpha: α, the share of the way the slow weights move toward the fast ones, in (0, 1]
            (with ``ramp``, its value at the end of the run).
        ramp: α falls from 1 to ``alpha`` over the run (``alpha_at``; airbench).
    """

    def __init__(self, model: nn.Module, every: int, alpha: float, ramp: bool = False) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"lookahead_steps must be an integer >= 1, got {every!r}")
        check_range("lookahead_alpha", alpha, 0.0, 1.0, low_open=True)
        self.every, self.alpha, self.ramp = every, float(alpha), bool(ramp)
        self.restart(model)

    def restart(self, model: nn.Module) -> None:
        """The slow weights become a copy of ``model``'s current ones (at the start, and on a
        resume from a checkpoint that holds none)."""
        self.slow = [t.detach().clone() for t in _moving(model)]

    @torch.no_grad()
    def synchronize(self, model: nn.Module, alpha: float | None = None) -> None:
        """φ ← φ + α (θ − φ), then θ ← φ, for every moving tensor of ``model`` (α: ``alpha``,
        else the constructor's)."""
        fast = [t.detach() for t in _moving(model)]
        torch._foreach_lerp_(self.slow, fast, self.alpha if alpha is None else alpha)
        torch._foreach_copy_(fast, self.slow)

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Call after optimizer step ``step`` (1-based): synchronizes when ``sync_due``, with
        ``alpha_at(step, ...)``."""
        if sync_due(step, self.every, total_steps):
            self.synchronize(model, alpha_at(step, total_steps, self.alpha, self.ramp))

    def state_dict(self) -> dict:
        return {"every": self.every, "alpha": self.alpha, "ramp": self.ramp, "slow": [t.clone() for t in self.slow]}

    def load_state_dict(self, state: dict) -> None:
        slow = state["slow"]
        if len(slow) != len(self.slow) or any(a.shape != b.shape for a, b in zip(slow, self.slow)):
            raise ValueError("the checkpoint's lookahead weights do not match this model")
        with torch.no_grad():
            torch._foreach_copy_(self.slow, [t.to(s.device) for t, s in zip(slow, self.slow)])
