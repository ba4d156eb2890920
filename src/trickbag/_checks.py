"""Argument validation shared by every module (torch-free).

Errors name the parameter, the allowed range and the value received, e.g.
``ValueError("decay_steps must be > 0, got 0")``, and are raised when an object is
built, not when it is first used (STYLE.md, convention 5).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence

__all__ = [
    "check_number",
    "check_positive",
    "check_nonnegative",
    "check_range",
    "check_choice",
    "check_increasing",
    "did_you_mean",
    "check_keywords",
]


def check_number(name: str, value: object) -> float:
    """Return ``value`` as a float; reject bools, non-numbers, NaN and infinities."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def check_positive(name: str, value: object) -> float:
    """``value > 0``."""
    v = check_number(name, value)
    if v <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return v


def check_nonnegative(name: str, value: object) -> float:
    """``value >= 0``."""
    v = check_number(name, value)
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return v


def check_range(
    name: str,
    value: object,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``low <= value <= high`` (either end may be open)."""
    v = check_number(name, value)
    below = v <= low if low_open else v < low
    above = v >= high if high_open else v > high
    if below or above:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value}")
    return v


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keywords(
    what: str, target: object, keys: Iterable[str], *, skip: Sequence[str] = (), error: type[Exception] = TypeError
) -> list[str]:
    """Every key is a parameter of ``target`` (minus ``skip``); else ``error`` naming ``what``
    (e.g. ``"schedule 'cosine'"``), the key, the closest match and the accepted parameters.
    Returns the accepted parameter names."""
    import inspect

    accepted = [p for p in inspect.signature(target).parameters if p not in skip]  # type: ignore[arg-type]
    for key in keys:
        if key not in accepted:
            raise error(f"{what} has no parameter {key!r}{did_you_mean(key, accepted)}; parameters: {', '.join(accepted)}")
    return accepted


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` is one of ``choices``; the error lists them and suggests the closest."""
    if value not in choices:
        hint = did_you_mean(str(value), choices)
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}{hint}")
    return str(value)


def check_increasing(name: str, values: Sequence[float], *, strict: bool = True) -> tuple[float, ...]:
    """Each element finite and (strictly) larger than the one before it."""
    out = tuple(check_number(f"{name}[{i}]", v) for i, v in enumerate(values))
    for i in range(1, len(out)):
        if out[i] < out[i - 1] or (strict and out[i] == out[i - 1]):
            rule = "strictly increasing" if strict else "non-decreasing"
            raise ValueError(f"{name} must be {rule}, got {list(values)} ({name}[{i}]={out[i]} after {out[i - 1]})")
    return out
