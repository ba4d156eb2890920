"""One strict-JSON writer for every output (issue #9, structure 6)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from trickbag._json import append_jsonl, dumps, to_jsonable, write_json


def strict(text):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


@dataclass
class Point:
    x: float
    tags: tuple[str, ...]


def test_non_finite_numbers_become_null_everywhere_in_the_structure():
    value = {"a": math.nan, "b": [1.0, math.inf, -math.inf], "c": {"d": (2, math.nan)}, 3: Point(math.inf, ("t",))}
    assert strict(dumps(value)) == {"a": None, "b": [1.0, None, None], "c": {"d": [2, None]}, "3": {"x": None, "tags": ["t"]}}


def test_numpy_and_torch_scalars_and_paths():
    value = {"np": np.float32(0.5), "npnan": np.float64("nan"), "t": torch.tensor(2), "tnan": torch.tensor(float("inf")),
             "p": Path("/x/y")}
    assert to_jsonable(value) == {"np": 0.5, "npnan": None, "t": 2, "tnan": None, "p": "/x/y"}


def test_files_are_strict_and_the_document_is_written_whole(tmp_path):
    write_json(tmp_path / "s.json", {"loss": math.nan})
    assert strict((tmp_path / "s.json").read_text()) == {"loss": None}
    assert not list(tmp_path.glob("*.tmp"))
    append_jsonl(tmp_path / "m.jsonl", {"v": math.inf})
    append_jsonl(tmp_path / "m.jsonl", {"v": 1})
    assert [strict(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()] == [{"v": None}, {"v": 1}]
