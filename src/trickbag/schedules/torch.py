"""Attach any ``Schedule`` to any torch optimizer (the only torch import in ``schedules``).

``attach(optimizer, schedule)`` returns a ``ScheduledLR`` that writes
``schedule(step) * multiplier[g] (* plateau.scale)`` into each param group. It keeps
one integer, the step, so ``state_dict()`` / ``load_state_dict()`` resume at exactly
the right lr, and it never recomputes lrs recursively (pytorch#60265, #152081).

Choices, in the terms of PyTorch's ``LRScheduler``:
* building it writes the lr of the current step into the groups (so the very first
  ``optimizer.step()`` uses ``schedule(0)``) and touches nothing else;
* ``step()`` advances by one optimizer update; ``step(taken=False)`` records an update
  the AMP scaler skipped and leaves the lr where it is (pytorch#44511);
* ``get_last_lr()`` exists for every schedule, plateau control included (pytorch#2829);
* per-group multipliers default to each group's ``"lr_mult"`` key, else 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from trickbag._checks import check_nonnegative
from trickbag.schedules.base import Schedule
from trickbag.schedules.plateau import PlateauController

__all__ = ["ScheduledLR", "attach"]


class ScheduledLR:
    """Drives an optimizer's param-group lrs from a schedule; see the module docstring.

    Args:
        optimizer: any ``torch.optim.Optimizer``.
        schedule: a callable ``step -> lr`` (any trickbag ``Schedule``).
        multipliers: one factor per param group (>= 0); default each group's
            ``lr_mult`` or 1.0.
        plateau: an optional ``PlateauController`` whose ``scale`` multiplies the lr;
            feed it with ``scheduler.report(metric)``.
        step: the step to start at (e.g. when resuming without a state dict).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        multipliers: Sequence[float] | None = None,
        plateau: PlateauController | None = None,
        step: int = 0,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not callable(schedule):
            raise TypeError(f"schedule must be a callable step -> lr, got {schedule!r}")
        groups = optimizer.param_groups
        if multipliers is None:
            multipliers = [g.get("lr_mult", 1.0) for g in groups]
        if len(multipliers) != len(groups):
            raise ValueError(f"multipliers must have one value per param group ({len(groups)}), got {len(multipliers)}")
        self.multipliers = [check_nonnegative(f"multipliers[{i}]", m) for i, m in enumerate(multipliers)]
        self.optimizer = optimizer
        self.schedule = schedule
        self.plateau = plateau
        self.last_step = int(check_nonnegative("step", step))
        self.skipped_steps = 0
        self._apply()

    def _apply(self) -> None:
        base = self.schedule(self.last_step)
        if self.plateau is not None:
            base *= self.plateau.scale
        self.lr = base  # before the per-group multipliers
        for group, mult in zip(self.optimizer.param_groups, self.multipliers):
            group["lr"] = base * mult

    def set_step(self, step: int) -> None:
        """Jump to ``step`` (e.g. a loop that owns its step counter) and write its lr."""
        self.last_step = int(check_nonnegative("step", step))
        self._apply()

    def step(self, taken: bool = True) -> None:
        """Advance one optimizer update (``taken=False``: the update was skipped, e.g. by
        ``GradScaler`` on inf/NaN gradients; the lr stays)."""
        if taken:
            self.last_step += 1
            self._apply()
        else:
            self.skipped_steps += 1

    def report(self, metric: float):
        """Feed the plateau controller one evaluation; returns its ``PlateauDecision``."""
        if self.plateau is None:
            raise RuntimeError("report() needs a plateau controller: attach(..., plateau=PlateauController(...))")
        decision = self.plateau.update(metric)
        self._apply()
        return decision

    def get_last_lr(self) -> list[float]:
        """The lr currently written in each param group."""
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "last_step": self.last_step,
            "skipped_steps": self.skipped_steps,
            "multipliers": list(self.multipliers),
        }
        if self.plateau is not None:
            state["plateau"] = self.plateau.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: restores the step (and plateau state) and rewrites the group lrs."""
        self.last_step = int(state["last_step"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.multipliers = [float(m) for m in state["multipliers"]]
        if "plateau" in state:
            if self.plateau is None:
                raise ValueError("state has plateau state but this scheduler has no plateau controller")
            self.plateau.load_state_dict(state["plateau"])
        self._apply()

    def __repr__(self) -> str:
        return f"ScheduledLR(step={self.last_step}, schedule={self.schedule!r}, multipliers={self.multipliers})"


def attach(
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    multipliers: Sequence[float] | None = None,
    plateau: PlateauController | None = None,
    step: int = 0,
) -> ScheduledLR:
    """``ScheduledLR(optimizer, schedule, multipliers, plateau, step)``.

    Example::

        opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9, nesterov=True)
        sched = attach(opt, cosine(0.1, total_steps=10_000, warmup_steps=500))
        for batch in loader:
            loss_fn(model(batch)).backward(); opt.step(); opt.zero_grad(); sched.step()
    """
    return ScheduledLR(optimizer, schedule, multipliers, plateau, step)
