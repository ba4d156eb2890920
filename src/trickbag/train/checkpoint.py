"""Atomic checkpoints: written to a temporary file in the same folder, flushed and
fsynced, then renamed over the target (and the folder fsynced), so a crash at any
moment leaves either the old file or the new one, never a torn one. Loaded with
``weights_only=True``: a checkpoint cannot run code."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_atomic", "load_checkpoint", "epoch_checkpoints", "checkpoint_candidates", "newest_loadable",
           "latest_checkpoint", "prune"]

_EPOCH = re.compile(r"epoch_(\d+)\.pt$")


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def epoch_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """``epoch_NNNN.pt`` files in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _EPOCH.search(p.name))]
    return [p for _, p in sorted(found)]


def checkpoint_candidates(folder: str | os.PathLike) -> list[Path]:
    """Checkpoints a resume may use, newest first: ``interrupt.pt`` (written mid-epoch and
    removed by the next epoch checkpoint), then ``epoch_NNNN.pt`` from the highest N."""
    folder = Path(folder)
    return [p for p in [folder / "interrupt.pt", *reversed(epoch_checkpoints(folder))] if p.is_file()]


def newest_loadable(folder: str | os.PathLike) -> tuple[Path | None, dict | None, list[tuple[Path, str]]]:
    """``(path, state, skipped)``: the newest checkpoint that loads, and every newer one
    that did not with the reason (a damaged file is skipped, never chosen)."""
    skipped: list[tuple[Path, str]] = []
    for path in checkpoint_candidates(folder):
        try:
            state = load_checkpoint(path)
        except Exception as exc:  # noqa: BLE001 - a damaged file of any kind: say why, try an older one
            skipped.append((path, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"))
            continue
        if not isinstance(state, dict) or "model" not in state:
            skipped.append((path, "not a trickbag checkpoint (no model state)"))
            continue
        return path, state, skipped
    return None, None, skipped


def latest_checkpoint(folder: str | os.PathLike) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads (an unreadable newer one is skipped, not fatal)."""
    path, state, _ = newest_loadable(folder)
    return (path, state) if path is not None else None


def prune(folder: str | os.PathLike, keep: int) -> None:
    for path in epoch_checkpoints(folder)[:-keep]:
        path.unlink(missing_ok=True)
