"""One way to read user-written values: ``key=value`` strings, YAML text and recipe fields.

Every place a user types a value goes through here, so ``1e-5`` is a number whether it
arrives as ``--set schedule.params.final_lr=1e-5``, ``-p decay_rate=1e-5``, an init spec
``random_normal:stddev=1e-5`` or a YAML recipe:

* ``load_yaml(text)``: PyYAML's ``SafeLoader`` (no object construction, as ``safe_load``)
  with YAML 1.2's float rule added, so ``1e-5``, ``1E+3`` and ``.5`` are floats; YAML 1.1
  (PyYAML's default) reads ``1e-5`` as the *string* ``"1e-5"``.
* ``coerce(key, value, annotation)``: a value (text from the command line, or whatever
  YAML produced) converted to the type an annotation describes: float, int, bool, str,
  ``Literal``, ``X | None``, lists and tuples (of numbers, dicts, ...), dicts. Errors name
  the key, the expected type and the value received.
* ``parse_params(target, ["k=v", ...])``: keyword arguments for a function or class,
  typed from its signature; unknown keys get a did-you-mean error.
* ``parse_spec("NAME:k=v,k=v")``: the ``--init`` form.
"""

from __future__ import annotations

import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import yaml

from trickbag._checks import check_keywords, did_you_mean

__all__ = ["parse_params", "parse_spec", "coerce", "typed_kwargs", "parse_number", "load_yaml", "YamlError"]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class YamlError(ValueError):
    """Text that is not valid YAML; the message says where."""


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` with YAML 1.2's float syntax (``1e-5`` is a float, not a string)."""


_FLOAT_12 = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def load_yaml(text: str, what: str = "YAML") -> Any:
    """Parse ``text`` safely (``SafeLoader`` + YAML 1.2 floats); a syntax error becomes a
    ``YamlError`` naming ``what`` (e.g. ``"recipe file x.yaml"`` or ``"--set a.b=[1"``)."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YamlError(f"{what} is not valid YAML{at}: {problem}") from None


def parse_number(key: str, text: str) -> int | float:
    """``"3"`` -> 3, ``"1e-5"`` -> 1e-05, ``"0.5"`` -> 0.5: an int only where the text is
    written as one, so errors echo the value as typed."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{key} must be a number, got {text!r}") from None
    plain_int = value.is_integer() and math.isfinite(value) and "." not in text and "e" not in text.lower()
    return int(value) if plain_int else value


def _type_name(annotation: Any) -> str:
    names = {float: "a number", int: "an integer", bool: "true or false", str: "a string", dict: "a mapping",
             list: "a list", tuple: "a list"}
    origin = typing.get_origin(annotation) or annotation
    return names.get(origin, getattr(annotation, "__name__", str(annotation)))


def _is_sequence(annotation: Any) -> bool:
    origin = typing.get_origin(annotation) or annotation
    return origin in (list, tuple) or (isinstance(origin, type) and origin.__module__ == "collections.abc"
                                       and origin.__name__ in ("Sequence", "MutableSequence"))


def coerce(key: str, value: Any, annotation: Any = inspect.Parameter.empty, *, text: bool = True,
           label: str = "{}") -> Any:
    """Convert ``value`` (text, or a value YAML produced) to what ``annotation`` describes.

    Numeric text is a number (``"1e-5"`` -> float) wherever a number is expected; with
    ``text=True`` (command-line values) ``"true"`` is a bool and ``"1,2,3"`` a sequence too,
    while with ``text=False`` (YAML values, already typed) a string stays a string.
    Numbers are checked (no bools for numbers, integral floats accepted for ints). Raises
    ``ValueError("<label of key> must be <type>, got <value>")``; ``label`` is a format
    string for the key, e.g. ``"recipe key '{}'"``.
    """
    name = label.format(key)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(key, value, arg, text=text, label=label)
            except ValueError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, args))}, got {value!r}{did_you_mean(str(value), map(str, args))}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if text and isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, str):
            value = parse_number(name, value.strip())
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be {_type_name(annotation)}, got {value!r}")
        if annotation is int:
            if isinstance(value, int):
                return value
            if not float(value).is_integer():
                raise ValueError(f"{name} must be an integer, got {value!r}")
            return int(value)
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
        return value
    if _is_sequence(annotation):
        if text and isinstance(value, str):
            value = [p.strip() for p in value.strip("[]() ").split(",") if p.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list, got {value!r}")
        item = args[0] if args and args[0] is not Ellipsis else inspect.Parameter.empty
        items = [coerce(f"{key}[{i}]", v, item, text=text, label=label) for i, v in enumerate(value)]
        return list(items) if (origin or annotation) is list else tuple(items)
    if annotation is dict or origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be a mapping, got {value!r}")
        return value
    if text and isinstance(value, str):  # no annotation: a number where the text is one
        try:
            return parse_number(name, value.strip())
        except ValueError:
            return value
    return value


def parse_params(target: Callable, pairs: Iterable[str], *, skip: tuple[str, ...] = (), what: str = "") -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: typed v}`` for calling ``target``.

    Args:
        target: the function or class the parameters are for.
        pairs: ``key=value`` strings.
        skip: parameters of ``target`` that cannot be set this way (e.g. ``tensor``).
        what: how to name ``target`` in errors, e.g. ``"schedule 'cosine'"``.
    """
    what = what or getattr(target, "__name__", str(target))
    split = []
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"parameters are written key=value, got {pair!r}")
        split.append((key.strip(), text.strip()))
    check_keywords(what, target, [key for key, _ in split], skip=skip, error=ValueError)
    return typed_kwargs(target, dict(split))


def typed_kwargs(target: Callable, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` coerced to ``target``'s parameter annotations (unannotated ones: numbers
    where the text is one)."""
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to guessing from the text
        hints = {}
    return {key: coerce(key, value, hints.get(key, inspect.Parameter.empty)) for key, value in values.items()}


def parse_spec(spec: str) -> tuple[str, list[str]]:
    """``"name"`` or ``"name:k=v,k=v"`` -> ``("name", ["k=v", ...])`` (the ``--init`` form)."""
    name, _, rest = spec.partition(":")
    if not name.strip():
        raise ValueError(f"expected NAME or NAME:k=v,k=v, got {spec!r}")
    return name.strip(), [p.strip() for p in rest.split(",") if p.strip()]
