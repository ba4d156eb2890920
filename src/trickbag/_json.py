"""Strict JSON for everything trickbag prints or writes (``--json``, ``metrics.jsonl``,
``summary.json``, ``doctor.jsonl``).

``json.dumps`` writes ``NaN`` and ``Infinity`` for non-finite floats (it never calls
``default`` for floats), which is not JSON: strict parsers (``jq``, JavaScript,
``json.loads(..., parse_constant=...)``) reject it. Here a non-finite float becomes
``null``, tuples become lists, paths and other objects their ``str``; ``allow_nan=False``
then guarantees nothing non-finite slipped through.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any

from trickbag._files import write_text_atomic

__all__ = ["to_jsonable", "dumps", "write_json", "append_jsonl"]


def to_jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as ``None``, tuples as lists, dataclasses as dicts,
    numbers of numpy/torch (anything with ``.item()``) as Python numbers, and anything
    else that JSON cannot hold as its ``str``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return to_jsonable(value.item())
    return str(value)


def dumps(value: Any, **kwargs: Any) -> str:
    """Strict JSON text of ``value`` (see the module docstring)."""
    return json.dumps(to_jsonable(value), allow_nan=False, **kwargs)


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Write ``value`` as indented strict JSON, atomically (temporary file, then rename)."""
    write_text_atomic(path, dumps(value, indent=2) + "\n")


def append_jsonl(path: str | os.PathLike, value: Any) -> None:
    """Append ``value`` as one strict JSON line."""
    with open(path, "a") as f:
        f.write(dumps(value) + "\n")
