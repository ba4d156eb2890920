"""Callbacks: hooks the trainer calls, so monitors (doctor), pruning (Optuna) and loggers
plug in without touching the loop. Each hook receives the trainer; setting
``trainer.should_stop = True`` ends the run after the current step/epoch."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from trickbag._json import append_jsonl

__all__ = ["Callback", "JsonlLogger", "TensorBoardLogger", "ConsoleProgress", "parse_line"]


def parse_line(line: str) -> dict | None:
    """One JSON-lines record, or None for a blank line or one a kill or a full disk cut off
    (a resume drops it rather than fail on it)."""
    try:
        record = json.loads(line) if line.strip() else None
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


class Callback:
    def on_fit_start(self, trainer: Any) -> None: ...

    def on_step_end(self, trainer: Any, loss: Any) -> None:
        """After every step; ``loss`` is a 0-dim tensor on the device (``float(loss)`` waits for
        the device: on a GPU, read it every N steps, not every step)."""

    def on_epoch_end(self, trainer: Any, metrics: dict) -> None: ...

    def on_fit_end(self, trainer: Any, summary: dict) -> None: ...


class JsonlLogger(Callback):
    """One JSON line per epoch in ``metrics.jsonl``. On resume, lines after the resumed
    epoch are dropped, so the file always matches the checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_fit_start(self, trainer: Any) -> None:
        if self.path.exists():
            keep = [line for line in self.path.read_text().splitlines() if (record := parse_line(line)) is not None
                    and record.get("epoch", 0) <= trainer.epoch]
            self.path.write_text("".join(line + "\n" for line in keep))

    def on_epoch_end(self, trainer: Any, metrics: dict) -> None:
        append_jsonl(self.path, metrics)


class TensorBoardLogger(Callback):
    """TensorBoard scalars (loss, lr, accuracy) when ``tensorboard`` is installed. The
    writer opens at ``on_fit_start``, so nothing is written before the run has its directory."""

    def __init__(self, folder: Path, every: int = 50) -> None:
        from torch.utils.tensorboard import SummaryWriter  # ImportError here when tensorboard is missing

        self._writer_class = SummaryWriter
        self.folder = folder
        self.every = every
        self.writer: Any = None

    @classmethod
    def create(cls, folder: Path, every: int = 50) -> TensorBoardLogger | None:
        """A logger, or None when tensorboard is not installed."""
        try:
            return cls(folder, every)
        except ImportError:
            return None

    def on_fit_start(self, trainer: Any) -> None:
        self.writer = self._writer_class(str(self.folder))

    def on_step_end(self, trainer: Any, loss: float) -> None:
        if trainer.step % self.every == 0:
            self.writer.add_scalar("train/loss", float(loss), trainer.step)
            self.writer.add_scalar("train/lr", trainer.current_lr, trainer.step)

    def on_epoch_end(self, trainer: Any, metrics: dict) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                self.writer.add_scalar(f"epoch/{key}", value, trainer.step)
        self.writer.flush()

    def on_fit_end(self, trainer: Any, summary: dict) -> None:
        if self.writer is not None:
            self.writer.close()


class ConsoleProgress(Callback):
    """A rich progress bar (loss, lr, images/s, ETA) on a terminal; one line per epoch
    otherwise. Silent with ``quiet``."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.progress = None

    def on_fit_start(self, trainer: Any) -> None:
        if self.quiet or not self.tty:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                 TextColumn("loss {task.fields[loss]:.4f} lr {task.fields[lr]:.4g} {task.fields[ips]:.0f} img/s"),
                                 TimeRemainingColumn(), transient=True)
        self.progress.start()
        # progress in schedule steps: with train.prune_easy an epoch takes fewer updates but still counts as one
        self.task = self.progress.add_task("train", total=trainer.total_steps, completed=trainer.schedule_position(), epoch=trainer.epoch + 1,
                                           loss=float("nan"), lr=trainer.current_lr, ips=0.0)
        self.t0, self.s0 = time.perf_counter(), trainer.step

    def on_step_end(self, trainer: Any, loss: float) -> None:
        if self.progress is not None and trainer.step % 10 == 0:
            ips = (trainer.step - self.s0) * trainer.batch_size / max(time.perf_counter() - self.t0, 1e-9)
            self.progress.update(self.task, completed=trainer.schedule_position(), epoch=trainer.epoch + 1, loss=float(loss),
                                 lr=trainer.current_lr, ips=ips)

    def on_epoch_end(self, trainer: Any, metrics: dict) -> None:
        if self.quiet:
            return
        parts = [f"epoch {metrics['epoch']:>3}/{trainer.recipe.train.epochs}", f"loss {_num(metrics['train_loss'])}"]
        for key in ("val_loss", "val_acc"):
            if metrics.get(key) is not None:
                parts.append(f"{key} {metrics[key]:.4f}")
        parts += [f"lr {metrics['lr']:.4g}", f"{metrics['images_per_s']:.0f} img/s", f"{metrics['time_s']:.0f}s"]
        line = "  ".join(parts)
        if self.progress is not None:
            self.progress.console.print(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def on_fit_end(self, trainer: Any, summary: dict) -> None:
        if self.progress is not None:
            self.progress.stop()


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
