"""Search spaces: what ``trickbag tune`` may change in a recipe, and over which range.

A recipe's ``search:`` section (or a YAML file of the same shape) maps recipe keys to one
distribution each::

    search:
      optim.lr: {log_uniform: [0.01, 1.0]}       # float, uniform in log(lr)
      loss.label_smoothing: {uniform: [0, 0.3]}  # float, uniform
      train.epochs: {int: [4, 12]}               # integer in [4, 12] (optional step, log)
      data.batch_size: {choice: [128, 256, 512]} # one of these values
      trick.mixup: {choice: [true, false]}       # a trick on or off (trickbag tricks)

Keys are dotted recipe keys (``model.params.width`` reaches into a free-form mapping) or
``trick.<name>``; the parsed space is a tuple of frozen ``Dimension`` values. Sampling goes
through an Optuna trial's ``suggest_*`` methods (duck-typed: nothing here imports Optuna or
torch), so the tuner, its storages and its samplers stay Optuna's own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["KINDS", "Dimension", "SearchError", "parse_space", "suggest", "corners", "starting_point", "read_space", "TRICK_PREFIX"]

#: the distribution kinds a dimension may name
KINDS = ("log_uniform", "uniform", "int", "choice")
#: keys under this prefix switch a trick on or off instead of setting a recipe key
TRICK_PREFIX = "trick."


class SearchError(ValueError):
    """A search space names an unknown key or kind, or gives a bad range."""


@dataclass(frozen=True)
class Dimension:
    """One searched key: ``kind`` is ``log_uniform`` | ``uniform`` | ``int`` | ``choice``;
    ``low``/``high`` bound the numeric kinds (inclusive), ``step``/``log`` refine ``int``;
    ``choices`` lists a ``choice``'s values."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: int = 1
    log: bool = False
    choices: tuple = ()

    @property
    def is_trick(self) -> bool:
        return self.key.startswith(TRICK_PREFIX)

    @property
    def trick(self) -> str:
        """The trick's name (``trick.mixup`` -> ``mixup``)."""
        return self.key[len(TRICK_PREFIX):]


def _bounds(key: str, kind: str, value: Any) -> tuple[Any, Any]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise SearchError(f"search key {key!r}: {kind} takes [low, high], got {value!r}")
    low, high = value
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise SearchError(f"search key {key!r}: {kind} {name} must be a finite number, got {v!r}")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise SearchError(f"search key {key!r}: int bounds must be integers, got [{low}, {high}]")
    if not low < high:
        raise SearchError(f"search key {key!r}: {kind} needs low < high, got [{low}, {high}]")
    if kind == "log_uniform" and low <= 0:
        raise SearchError(f"search key {key!r}: log_uniform needs 0 < low, got [{low}, {high}]")
    return low, high


def _dimension(key: str, spec: Any) -> Dimension:
    if not isinstance(spec, Mapping):
        raise SearchError(f"search key {key!r} must map to one of {{{', '.join(k + ': ...' for k in KINDS)}}}, got {spec!r}")
    kinds = [k for k in spec if k in KINDS]
    extra = [k for k in spec if k not in KINDS and k not in ("step", "log")]
    if len(kinds) != 1 or extra:
        from trickbag._checks import did_you_mean

        hint = did_you_mean(str(extra[0]), KINDS) if extra else ""
        raise SearchError(f"search key {key!r} must name exactly one of {', '.join(KINDS)} (int may add step, log); "
                          f"got {dict(spec)!r}{hint}")
    kind = kinds[0]
    if kind != "int" and ("step" in spec or "log" in spec):
        raise SearchError(f"search key {key!r}: step and log go with int only")
    if kind == "choice":
        values = spec[kind]
        if not isinstance(values, (list, tuple)) or not values:
            raise SearchError(f"search key {key!r}: choice takes a non-empty list of values, got {values!r}")
        for v in values:
            if not (v is None or isinstance(v, (bool, int, float, str))):
                raise SearchError(f"search key {key!r}: choice values must be numbers, strings, booleans or null, got {v!r}")
        if len({repr(v) for v in values}) != len(values):
            raise SearchError(f"search key {key!r}: choice lists a value twice: {list(values)!r}")
        if key.startswith(TRICK_PREFIX) and not all(isinstance(v, bool) for v in values):
            raise SearchError(f"search key {key!r}: a trick is on or off: choice: [true, false], got {list(values)!r}")
        return Dimension(key, kind, choices=tuple(values))
    if key.startswith(TRICK_PREFIX):
        raise SearchError(f"search key {key!r}: a trick is on or off: choice: [true, false], got {kind}")
    low, high = _bounds(key, kind, spec[kind])
    if kind == "int":
        step = spec.get("step", 1)
        log = spec.get("log", False)
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise SearchError(f"search key {key!r}: int step must be an integer >= 1, got {step!r}")
        if not isinstance(log, bool):
            raise SearchError(f"search key {key!r}: int log must be true or false, got {log!r}")
        if log and (step != 1 or low < 1):
            raise SearchError(f"search key {key!r}: int with log needs low >= 1 and step 1")
        return Dimension(key, kind, int(low), int(high), step=step, log=log)
    return Dimension(key, kind, float(low), float(high))


def parse_space(space: Mapping[str, Any] | None, known_keys: Iterable[str] | None = None,
                free_form: Iterable[str] = ()) -> tuple[Dimension, ...]:
    """The dimensions of a search section, checked.

    Args:
        space: ``{recipe key: {kind: ...}}`` (a recipe's ``search`` section).
        known_keys: the recipe's dotted keys; when given, every key must be one of them, or
            lie under a ``free_form`` mapping (``model.params.width``), or be ``trick.<name>``
            (trick names are checked by the tuner, which knows the registry).
        free_form: dotted keys of free-form mappings (``model.params``).

    Raises ``SearchError`` naming the key, with a did-you-mean for unknown keys.
    """
    if space is None:
        return ()
    if not isinstance(space, Mapping):
        raise SearchError(f"a search space must map recipe keys to distributions, got {space!r}")
    known = set(known_keys) if known_keys is not None else None
    out = []
    for key, spec in space.items():
        key = str(key)
        if known is not None and not key.startswith(TRICK_PREFIX) and key not in known \
                and not any(key.startswith(f + ".") for f in free_form):
            from trickbag._checks import did_you_mean

            raise SearchError(f"search key {key!r} is not a recipe key{did_you_mean(key, sorted(known))} "
                              f"(or trick.<name> to switch a trick)")
        out.append(_dimension(key, spec))
    return tuple(out)


def suggest(trial: Any, space: Iterable[Dimension]) -> dict[str, Any]:
    """``{key: value}`` drawn for one trial, through the trial's ``suggest_float``,
    ``suggest_int`` and ``suggest_categorical`` (each under the key's name)."""
    values: dict[str, Any] = {}
    for d in space:
        if d.kind == "choice":
            values[d.key] = trial.suggest_categorical(d.key, list(d.choices))
        elif d.kind == "int":
            values[d.key] = trial.suggest_int(d.key, d.low, d.high, step=d.step, log=d.log)
        else:
            values[d.key] = trial.suggest_float(d.key, d.low, d.high, log=d.kind == "log_uniform")
    return values


def corners(space: Iterable[Dimension]) -> list[dict[str, Any]]:
    """Points that together reach every bound and every choice of every dimension (the
    others at their first value): building a recipe at each one checks the whole space's
    ranges against the recipe's own checks before any trial runs."""
    space = list(space)
    first = {d.key: d.choices[0] if d.kind == "choice" else d.low for d in space}
    points = [dict(first)]
    for d in space:
        for value in (d.choices[1:] if d.kind == "choice" else (d.high,)):
            points.append({**first, d.key: value})
    return points


def starting_point(space: Iterable[Dimension], values: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe's own values (``values``: its flattened keys, ``model.params`` as a mapping)
    for the dimensions they lie inside: the point a study tries first, so its best is never
    below the recipe as shipped. Tricks and values outside the space are left to the sampler."""
    point: dict[str, Any] = {}
    for d in space:
        if d.is_trick:
            continue
        head, _, rest = d.key.rpartition(".")
        value = values.get(d.key, (values.get(head) or {}).get(rest) if isinstance(values.get(head), Mapping) else None)
        if d.kind == "choice":
            if any(value == c and type(value) is type(c) for c in d.choices):
                point[d.key] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and d.low <= value <= d.high:
            if d.kind != "int" or (float(value).is_integer() and (int(value) - d.low) % d.step == 0):
                point[d.key] = int(value) if d.kind == "int" else float(value)
    return point


def read_space(path: str) -> dict:
    """The search mapping in a YAML file (``trickbag tune --space FILE``): the file holds the
    mapping itself, or a recipe-shaped ``search:`` section."""
    from pathlib import Path

    from trickbag._params import load_yaml

    file = Path(path)
    if not file.is_file():
        raise SearchError(f"--space {path}: no such file")
    data = load_yaml(file.read_text(), f"search space {path}")
    if isinstance(data, Mapping) and set(data) == {"search"}:
        data = data["search"]
    if not isinstance(data, Mapping) or not data:
        raise SearchError(f"--space {path} must map recipe keys to distributions (optim.lr: {{log_uniform: [0.01, 1.0]}}), got {data!r}")
    return dict(data)
