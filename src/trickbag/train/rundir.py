"""A run directory's guards: one writer at a time, never a silent overwrite, no litter.

* ``RunLock(out)``: an exclusive ``flock`` on ``out/.lock`` (holding the owner's pid and
  host), taken before anything is written and released on exit. The kernel drops the
  lock when its process dies, so a lock left by a killed run is stale by construction
  and the next run takes it; a live one makes the second ``trickbag train`` refuse.
* ``run_artifacts(out)``: what a previous run left there (``config.yaml``,
  ``metrics.jsonl``, ``checkpoints/``, ...): a new run refuses such a directory unless
  told to ``--resume`` it or ``--overwrite`` it (``clear_run``).
* ``remove_partial_writes(folder)``: the ``*.tmp`` files a kill during an atomic write
  leaves behind.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from trickbag._files import temporary_path
from trickbag.train.errors import RunDirError

if TYPE_CHECKING:
    from trickbag.recipes.config import Recipe

__all__ = ["default_run_dir", "RunLock", "run_artifacts", "clear_run", "claim_run_dir", "remove_partial_writes", "RUN_FILES", "finished_summary"]

#: what ``trickbag train`` writes into a run directory
RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "doctor.jsonl", "checkpoints", "tensorboard")


def default_run_dir(recipe: Recipe) -> Path:
    """``runs/<data>-<model>[-x<members>]-<YYYYmmdd-HHMMSS>``: where a run goes without ``--out``."""
    members = recipe.train.members
    return Path("runs") / f"{recipe.data.name}-{recipe.model.name}{f'-x{members}' if members > 1 else ''}-{time.strftime('%Y%m%d-%H%M%S')}"


try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock, said in RunLock's docstring
    fcntl = None  # type: ignore[assignment]


class RunLock:
    """Exclusive lock on a run directory (see the module docstring); a context manager.

    Raises ``RunDirError`` naming the other process's pid when the lock is held. On a
    platform without ``fcntl`` (Windows) no lock is taken.
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.path = Path(out) / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        if fcntl is None:
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise RunDirError(f"cannot write to the run directory {self.path.parent}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise RunDirError(f"{self.path.parent} is in use by another trickbag run ({owner}); wait for it to end, "
                                  "or choose another --out") from None
            # the holder may have removed the file between our open and flock: lock the file that is there
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:  # the owner's name is a courtesy for the refusal message; a full disk must not break the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except OSError:
            pass
        self.fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def run_artifacts(out: str | os.PathLike) -> list[str]:
    """The files and folders of a previous run in ``out`` (empty: a fresh directory)."""
    out = Path(out)
    return [name for name in RUN_FILES if (out / name).exists()]


def clear_run(out: str | os.PathLike) -> None:
    """Remove a previous run's files from ``out`` (only ``RUN_FILES``: nothing else a user
    keeps there is touched)."""
    out = Path(out)
    for name in RUN_FILES:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def claim_run_dir(out: str | os.PathLike, found: list[str], overwrite: bool, clear=clear_run) -> None:
    """Make ``out`` a new run's: a previous run's ``found`` files are removed (``clear(out)``)
    when ``overwrite``, else refused with what to do instead."""
    if found and overwrite:
        clear(out)
    elif found:
        raise RunDirError(f"{out} already holds a run ({', '.join(found)}); continue it with --resume, choose "
                          "another --out, or pass --overwrite to replace it")


def remove_partial_writes(out: str | os.PathLike) -> list[str]:
    """Delete the temporaries of trickbag's own atomic writes that a kill interrupted
    (``config.yaml.tmp``, ``summary.json.tmp``, ``checkpoints/*.pt.*.tmp``); a user's
    other ``*.tmp`` files are left alone. Returns the names removed."""
    out = Path(out)
    candidates = [temporary_path(out / "config.yaml"), temporary_path(out / "summary.json"),
                  *(out / "checkpoints").glob("*.pt.*.tmp")]
    removed = []
    for path in candidates:
        if path.is_file():
            path.unlink()
            removed.append(path.name)
    return sorted(removed)


def finished_summary(out: str | os.PathLike) -> dict | None:
    """The ``summary.json`` of a run that ended (completed, stopped early, or diverged), or
    None: not started, killed, or interrupted with Ctrl-C (those continue from a checkpoint)."""
    import json

    try:
        summary = json.loads((Path(out) / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or str(summary.get("stopped", "")).startswith("interrupted"):
        return None
    return summary
