"""Turn ``key=value`` strings (CLI ``--param``/``--set``) into typed keyword arguments.

Types come from the target's signature annotations, so ``decay_steps=100`` becomes an
int or float, ``staircase=true`` a bool, ``boundaries=100,200`` a tuple of floats.
Unknown keys get a did-you-mean error naming the accepted parameters.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

from trickbag._checks import check_keywords, did_you_mean

__all__ = ["parse_params", "coerce"]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _number(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{key} must be a number, got {text!r}") from None
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def coerce(key: str, text: str, annotation: Any) -> Any:
    """Convert ``text`` to the type ``annotation`` describes (float, int, bool, str,
    Literal, tuple of numbers, optional of these)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        annotation = next(a for a in args if a is not type(None))
        return coerce(key, text, annotation)
    if origin is typing.Literal:
        if text not in args:
            raise ValueError(f"{key} must be one of {', '.join(map(repr, args))}, got {text!r}{did_you_mean(text, args)}")
        return text
    if origin in (tuple, list) or annotation in (tuple, list):
        parts = [p for p in text.strip("[]() ").split(",") if p.strip()]
        return tuple(_number(f"{key}[{i}]", p.strip()) for i, p in enumerate(parts))
    if annotation is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"{key} must be true or false, got {text!r}")
    if annotation is int:
        value = _number(key, text)
        if not float(value).is_integer():
            raise ValueError(f"{key} must be an integer, got {text!r}")
        return int(value)
    if annotation is float:
        return _number(key, text)  # an int where the text is one, so errors echo it as typed
    if annotation is str:
        return text
    return _number(key, text) if _looks_numeric(text) else text


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_params(target: Callable, pairs: Iterable[str], *, skip: tuple[str, ...] = (), what: str = "") -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: typed v}`` for calling ``target``.

    Args:
        target: the function or class the parameters are for.
        pairs: ``key=value`` strings.
        skip: parameters of ``target`` that cannot be set this way (e.g. ``tensor``).
        what: how to name ``target`` in errors, e.g. ``"schedule 'cosine'"``.
    """
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable annotations: fall back to guessing from the text
        hints = {}
    what = what or getattr(target, "__name__", str(target))
    split = []
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"parameters are written key=value, got {pair!r}")
        split.append((key.strip(), text.strip()))
    check_keywords(what, target, [key for key, _ in split], skip=skip, error=ValueError)
    return {key: coerce(key, text, hints.get(key, inspect.Parameter.empty)) for key, text in split}
