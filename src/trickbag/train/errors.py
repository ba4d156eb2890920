"""Why a run could not go on, as exceptions the CLI turns into one ``error:`` line.

``exit_code`` is what ``trickbag train`` exits with: 2 for a request it refuses
(an occupied run directory, a resume that cannot work), 1 for a run that failed
(divergence, a disk that would not take a checkpoint).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DIVERGENCE_ADVICE", "TrainingError", "RunDirError", "ResumeError", "DivergedError", "NonFiniteLossError", "RunWriteError"]


class TrainingError(RuntimeError):
    """Base class; ``summary`` is the run's summary when one was written."""

    exit_code = 1

    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = summary


class RunDirError(TrainingError):
    """The run directory holds another run, or another process is training into it."""

    exit_code = 2


class ResumeError(TrainingError):
    """``--resume`` found nothing it could load, or the recipe no longer fits the checkpoint."""

    exit_code = 2


DIVERGENCE_ADVICE = ("Try: a lower optim.lr (e.g. /10), a warmup (schedule.params.warmup_steps=1ep), gradient clipping "
                     "(optim.clip_norm=5), or precision=fp32; `trickbag doctor RUN_DIR` shows where it went wrong.")


class DivergedError(TrainingError):
    """Training diverged: the loss rose far above its start or the evaluation was not finite.
    ``reason`` is the evidence alone; the message adds what to try."""

    def __init__(self, reason: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(f"{reason}; training diverged. {DIVERGENCE_ADVICE}", summary)
        self.reason = reason


class NonFiniteLossError(DivergedError):
    """Too many non-finite losses: training diverged."""


class RunWriteError(TrainingError):
    """The run directory would not take a write (disk full, read-only); what was written before is intact."""
