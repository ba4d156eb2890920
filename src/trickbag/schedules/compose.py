"""Composition: ``join`` schedules in sequence, ``scale`` one, put ``warmup`` before any.

``join`` follows optax's ``join_schedules``: the schedule that runs after boundary
``b`` receives ``step - b``, so every part is written as if it started at step 0.
A warmup or a restart is a join, never a subclass (STYLE.md, convention 2).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from trickbag._checks import check_increasing, check_nonnegative
from trickbag.schedules.base import Schedule, register

__all__ = ["Join", "Scale", "join", "scale", "warmup"]


def _check_schedule(name: str, value: object) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be a schedule (a callable step -> lr), got {value!r}")


@register("join")
@dataclass(frozen=True)
class Join(Schedule):
    """Run ``schedules[i]`` between ``boundaries[i-1]`` and ``boundaries[i]``.

    ``join(s, b)(step) = s[i](step - b[i-1])`` with ``i`` the number of boundaries
    ``<= step`` (so a boundary step belongs to the next schedule) and ``b[-1] = 0``.

    Args:
        schedules: ``len(boundaries) + 1`` schedules.
        boundaries: strictly increasing steps (> 0) where the next schedule starts.

    Example: warmup then cosine,
    ``join([linear(0, 0.1, 500), cosine_decay(0.1, 9500)], [500])``.
    Reference: ``optax.join_schedules``.
    """

    name = "join"
    schedules: tuple[Schedule, ...]
    boundaries: tuple[float, ...]

    def __post_init__(self) -> None:
        schedules = tuple(self.schedules)
        boundaries = check_increasing("boundaries", tuple(self.boundaries))
        for i, s in enumerate(schedules):
            _check_schedule(f"schedules[{i}]", s)
        if boundaries and boundaries[0] <= 0:
            raise ValueError(f"boundaries must be > 0, got {list(boundaries)}")
        if len(schedules) != len(boundaries) + 1:
            raise ValueError(
                f"schedules must have len(boundaries) + 1 = {len(boundaries) + 1} elements, got {len(schedules)}"
            )
        object.__setattr__(self, "schedules", schedules)
        object.__setattr__(self, "boundaries", boundaries)
        # the step is validated once, here; parts that are Schedules skip their own check
        object.__setattr__(self, "_parts", tuple(s._value if isinstance(s, Schedule) else s for s in schedules))

    def _value(self, step: float) -> float:
        i = bisect.bisect_right(self.boundaries, step)
        return self._parts[i](step - self.boundaries[i - 1] if i else step)


@register("scale")
@dataclass(frozen=True)
class Scale(Schedule):
    """``factor * schedule(step)``.

    Args:
        schedule: the schedule to scale.
        factor: multiplier (>= 0), e.g. the linear-scaling rule's ``batch / 256``.
    """

    name = "scale"
    schedule: Schedule
    factor: float

    def __post_init__(self) -> None:
        _check_schedule("schedule", self.schedule)
        check_nonnegative("factor", self.factor)

    def _value(self, step: float) -> float:
        s = self.schedule
        return self.factor * (s._value(step) if isinstance(s, Schedule) else s(step))


def join(schedules: list[Schedule] | tuple[Schedule, ...], boundaries: list[float] | tuple[float, ...]) -> Join:
    """``Join(schedules, boundaries)``; see ``Join``."""
    return Join(tuple(schedules), tuple(boundaries))


def scale(schedule: Schedule, factor: float) -> Scale:
    """``Scale(schedule, factor)``; see ``Scale``."""
    return Scale(schedule, factor)


def warmup(schedule: Schedule, warmup_steps: float, start_lr: float = 0.0) -> Schedule:
    """Linear warmup from ``start_lr`` to ``schedule(0)`` over ``warmup_steps``, then ``schedule``.

    ``warmup(s, m)(t) = start_lr + (s(0) - start_lr) * t / m`` for ``t < m``, else ``s(t - m)``:
    the wrapped schedule starts its own step 0 when the warmup ends (it is shifted, not
    cut), so it is continuous at ``m``. ``warmup_steps=0`` returns ``schedule`` itself.

    Args:
        schedule: what runs after the warmup.
        warmup_steps: steps of warmup (>= 0).
        start_lr: lr at step 0 (>= 0).

    Reference: Goyal et al. 2017, "Accurate, Large Minibatch SGD", sec. 2.2.
    """
    from trickbag.schedules.modern import Linear

    _check_schedule("schedule", schedule)
    if check_nonnegative("warmup_steps", warmup_steps) == 0:
        return schedule
    return Join((Linear(start_lr, schedule(0), warmup_steps), schedule), (warmup_steps,))
