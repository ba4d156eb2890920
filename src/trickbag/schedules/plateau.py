"""``PlateauController``: divide the lr when a monitored metric stops improving.

The seed's advice (000): watch the validation loss; when it stalls, divide the lr by
5 or 10, train on, and repeat until the lr reaches about 1e-6. Unlike PyTorch's
``ReduceLROnPlateau``:

* ``factor`` is a *divisor* (> 1), as the seed states it: ``factor=10`` means lr / 10;
* it holds no optimizer: it keeps a multiplier ``scale`` that composes with any
  schedule (``lr = schedule(step) * controller.scale``; pytorch#68978) and its own lr
  (``controller.lr``) for plain use;
* every ``update(metric)`` returns a ``PlateauDecision`` saying what it did and why;
* ``state_dict()`` is plain data (no lambdas, pickles and JSON-serializes).

Improvement test (as PyTorch, in the same floating-point form): in ``min`` mode with
``threshold_mode="rel"`` a metric ``m`` improves on ``best`` when
``m < best - threshold * |best|``; ``abs``: ``m < best - threshold``; ``max`` mode
mirrors both. A non-finite metric never improves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from trickbag._checks import (
    check_choice,
    check_nonnegative,
    check_number,
    check_positive,
    check_range,
)

__all__ = ["PlateauController", "PlateauDecision"]


#: an lr within this relative distance of ``min_lr`` is at the floor (1e-3 / 10**3 is
#: 1.0000000000000002e-06 in floating point, and must count as 1e-6)
_FLOOR_SNAP = 1.0 + 1e-9


@dataclass(frozen=True)
class PlateauDecision:
    """What one ``update`` decided: the lr after it, whether it was reduced, and why."""

    lr: float
    reduced: bool
    improved: bool
    reason: str
    best: float
    bad_evaluations: int


class PlateauController:
    """Divide the lr by ``factor`` after ``patience`` evaluations without improvement.

    Args:
        learning_rate: lr before any reduction (> 0).
        factor: divisor applied on a plateau (> 1); the seed uses 2, 5 or 10.
        patience: evaluations without improvement tolerated before a reduction (>= 0).
        mode: ``min`` (loss) or ``max`` (accuracy).
        threshold: minimal change that counts as an improvement (>= 0).
        threshold_mode: ``rel`` (fraction of best) or ``abs``.
        cooldown: evaluations after a reduction during which no reduction happens (>= 0).
        min_lr: the floor (> 0, default 1e-6 as in the seed); the lr never goes below it.

    Example::

        ctl = PlateauController(0.1, factor=10, patience=5)
        for epoch in range(epochs):
            ...
            decision = ctl.update(val_loss)
            if decision.reduced:
                print(decision.reason)

    Reference: seed 000 (divide by 5–10 at a plateau, down to 1e-6);
    ``torch.optim.lr_scheduler.ReduceLROnPlateau``.
    """

    def __init__(
        self,
        learning_rate: float,
        factor: float = 10.0,
        patience: int = 10,
        mode: Literal["min", "max"] = "min",
        threshold: float = 1e-4,
        threshold_mode: Literal["rel", "abs"] = "rel",
        cooldown: int = 0,
        min_lr: float = 1e-6,
    ) -> None:
        self.initial_lr = check_positive("learning_rate", learning_rate)
        self.factor = check_range("factor", factor, 1.0, math.inf, low_open=True)
        self.patience = int(check_nonnegative("patience", patience))
        self.mode = check_choice("mode", mode, ("min", "max"))
        self.threshold = check_nonnegative("threshold", threshold)
        self.threshold_mode = check_choice("threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = int(check_nonnegative("cooldown", cooldown))
        self.min_lr = check_positive("min_lr", min_lr)
        if self.min_lr > self.initial_lr:
            raise ValueError(f"min_lr must be <= learning_rate ({learning_rate}), got {min_lr}")
        self.lr = self.initial_lr
        self.best = math.inf if mode == "min" else -math.inf
        self.bad_evaluations = 0
        self.cooldown_left = 0
        self.evaluations = 0
        self.reductions = 0

    @property
    def scale(self) -> float:
        """``lr / learning_rate``: the multiplier to apply on top of another schedule."""
        return self.lr / self.initial_lr

    @property
    def at_floor(self) -> bool:
        return self.lr <= self.min_lr * _FLOOR_SNAP

    def _improves(self, metric: float) -> bool:
        if not math.isfinite(metric):
            return False
        if math.isinf(self.best):
            return True
        t, best = self.threshold, self.best
        if self.mode == "min":  # improvement: metric below best by more than the margin
            if self.threshold_mode == "abs":
                return metric < best - t
            return metric < best * ((1.0 - t) if best >= 0 else (1.0 + t))
        if self.threshold_mode == "abs":
            return metric > best + t
        return metric > best * ((1.0 + t) if best >= 0 else (1.0 - t))

    def update(self, metric: float) -> PlateauDecision:
        """Record one evaluation of the monitored metric and decide."""
        metric = float(metric) if not isinstance(metric, bool) else check_number("metric", metric)
        self.evaluations += 1
        improved = self._improves(metric)
        if improved:
            self.best = metric
            self.bad_evaluations = 0
        else:
            self.bad_evaluations += 1
        in_cooldown = self.cooldown_left > 0
        if in_cooldown:
            self.cooldown_left -= 1
            self.bad_evaluations = 0
        if improved:
            return self._decision(False, True, f"improved to {metric:.6g}")
        if in_cooldown:
            return self._decision(False, False, f"no improvement ({metric:.6g}); cooling down")
        if self.bad_evaluations <= self.patience:
            why = "not finite" if not math.isfinite(metric) else f"best {self.best:.6g}"
            return self._decision(
                False, False, f"no improvement ({metric:.6g}, {why}) for {self.bad_evaluations}/{self.patience + 1}"
            )
        if self.at_floor:
            return self._decision(False, False, f"plateau, but lr is at the floor min_lr={self.min_lr:g}")
        old = self.lr
        new = old / self.factor
        self.lr = self.min_lr if new <= self.min_lr * _FLOOR_SNAP else new
        self.reductions += 1
        self.bad_evaluations = 0
        self.cooldown_left = self.cooldown
        return self._decision(
            True,
            False,
            f"no improvement on best {self.best:.6g} for {self.patience + 1} evaluations: lr {old:.6g} -> {self.lr:.6g}",
        )

    def _decision(self, reduced: bool, improved: bool, reason: str) -> PlateauDecision:
        return PlateauDecision(self.lr, reduced, improved, reason, self.best, self.bad_evaluations)

    _STATE = ("lr", "best", "bad_evaluations", "cooldown_left", "evaluations", "reductions")
    _CONFIG = ("initial_lr", "factor", "patience", "mode", "threshold", "threshold_mode", "cooldown", "min_lr")

    def state_dict(self) -> dict[str, Any]:
        """Plain data: the configuration and the running state."""
        return {k: getattr(self, k) for k in self._CONFIG + self._STATE}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state_dict()``; configuration keys must match this controller's."""
        missing = [k for k in self._CONFIG + self._STATE if k not in state]
        if missing:
            raise KeyError(f"PlateauController state is missing {missing}")
        for k in self._STATE:
            setattr(self, k, state[k])
        for k in self._CONFIG:
            setattr(self, k, state[k])

    def __repr__(self) -> str:
        cfg = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._CONFIG)
        return f"PlateauController({cfg}; lr={self.lr!r})"


