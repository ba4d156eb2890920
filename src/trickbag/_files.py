"""Atomic writes of small text files (``config.yaml``, ``summary.json``, saved recipes):
the text goes to ``<path>.tmp`` first and is renamed over ``path``, so a crash leaves the
old file or the new one, never half of one. (Checkpoints, which are large and must survive
power loss, use ``trickbag.train.checkpoint.save_atomic`` with fsync.)"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_text_atomic", "temporary_path"]


def temporary_path(path: str | os.PathLike) -> Path:
    """Where ``write_text_atomic`` writes ``path`` before the rename (what a kill leaves behind)."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through ``temporary_path(path)`` and a rename."""
    tmp = temporary_path(path)
    tmp.write_text(text)
    tmp.replace(path)
    return Path(path)
