"""The ``Schedule`` base class, the schedule registry and config round-trips.

A schedule is a frozen dataclass whose ``__call__(step) -> float`` is a closed-form
function of the step (STYLE.md, convention 1): it holds no optimizer and no counter,
so resuming at step N gives exactly the lr of step N, and it pickles. ``get_config()``
gives ``{"name": ..., **parameters}`` (nested schedules as nested configs) and
``from_config`` rebuilds it, as Keras' ``get_config``/``from_config`` do.

Steps are counted in optimizer updates and may be ints or floats >= 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from trickbag._checks import (
    check_increasing,
    check_keywords,
    check_nonnegative,
    check_positive,
)
from trickbag.registry import Registry

__all__ = ["Schedule", "SCHEDULES", "register", "from_config", "build", "evaluate"]

SCHEDULES: Registry = Registry("schedule")
register = SCHEDULES.register


class Schedule:
    """Base of every schedule: ``sched(step) -> lr``.

    Subclasses are ``@dataclass(frozen=True)`` and implement ``_value(step)`` for a
    validated ``step >= 0``; ``name`` is the registry name used by ``get_config``.
    """

    name: ClassVar[str] = ""

    def __call__(self, step: float) -> float:
        if not step >= 0:  # also catches NaN
            raise ValueError(f"step must be >= 0, got {step}")
        return self._value(step)

    def _value(self, step: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """``{"name": registry name, **fields}``; nested schedules become nested configs."""
        config: dict[str, Any] = {"name": self.name}
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            config[field.name] = _to_config(getattr(self, field.name))
        return config



def evaluate(schedule: Schedule, steps: int) -> list[float]:
    """``[schedule(0), ..., schedule(steps - 1)]``."""
    return [schedule(s) for s in range(steps)]


def _to_config(value: Any) -> Any:
    if isinstance(value, Schedule):
        return value.get_config()
    if isinstance(value, tuple):
        return [_to_config(v) for v in value]
    return value


def _from_config_value(value: Any) -> Any:
    if isinstance(value, Mapping) and "name" in value:
        return from_config(value)
    if isinstance(value, list):
        return tuple(_from_config_value(v) for v in value)
    return value


def from_config(config: Mapping[str, Any]) -> Schedule:
    """Rebuild a schedule from ``get_config()`` output (or a hand-written dict/YAML)."""
    if "name" not in config:
        raise ValueError(f"a schedule config needs a 'name' key, got keys {sorted(config)}")
    params = {k: _from_config_value(v) for k, v in config.items() if k != "name"}
    return build(config["name"], **params)


def build(name: str, **params: Any) -> Schedule:
    """``SCHEDULES[name](**params)`` with a did-you-mean error for unknown parameters."""
    builder = SCHEDULES.get(name)
    check_keywords(f"schedule {name!r}", builder, params)
    return builder(**params)


def check_lr(name: str, value: object) -> float:
    """A learning rate: finite and >= 0."""
    return check_nonnegative(name, value)


def check_boundaries_values(
    name: str, boundaries: Sequence[float], values: Sequence[float], first_above: float | None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Strictly increasing ``boundaries`` (the first ``> first_above``, or ``>= 0`` when None)
    and ``len(boundaries) + 1`` learning rates; returns both as tuples."""
    bounds = check_increasing(name, tuple(boundaries))
    lrs = tuple(check_lr(f"values[{i}]", v) for i, v in enumerate(values))
    if bounds and (bounds[0] < 0 if first_above is None else bounds[0] <= first_above):
        rule = ">= 0" if first_above is None else f"> {first_above:g}"
        raise ValueError(f"{name} must be {rule}, got {list(bounds)}")
    if len(lrs) != len(bounds) + 1:
        raise ValueError(f"values must have len({name}) + 1 = {len(bounds) + 1} elements, got {len(lrs)}")
    return bounds, lrs


def check_steps(name: str, value: object) -> float:
    """A duration in steps: finite and > 0."""
    return check_positive(name, value)
