"""``probe``: a short training run of a recipe with the doctor's monitors on, for
``trickbag doctor --recipe R --steps 300``."""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Any

from trickbag._checks import check_positive
from trickbag.doctor.monitor import DoctorMonitor
from trickbag.doctor.rules import loss_series
from trickbag.recipes import Recipe
from trickbag.recipes.config import override
from trickbag.train.callbacks import Callback

__all__ = ["probe", "ProbeResult"]


@dataclasses.dataclass
class ProbeResult:
    records: list[dict[str, Any]]
    epochs: list[dict[str, Any]]
    summary: dict[str, Any]
    out: Path


class _StopAt(Callback):
    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_step_end(self, trainer: Any, loss: float) -> None:
        if trainer.step >= self.steps or trainer.nonfinite >= trainer.recipe.train.nan_patience - 1:
            trainer.should_stop = True
            trainer.stop_reason = trainer.stop_reason or f"probe: {trainer.step} steps"


def probe(recipe: Recipe, steps: int = 300, every: int = 10, out: str | Path | None = None, data: Any = None,
          quiet: bool = True) -> ProbeResult:
    """Train ``recipe`` for ``steps`` optimizer steps (its schedule as in the full run) with a
    ``DoctorMonitor`` every ``every`` steps; no checkpoints. Then the validation split is
    evaluated once, so the train/validation gap rule has a point.

    A run that diverges ends early (before the trainer's ``nan_patience`` would raise), and
    its records say so.
    """
    from trickbag.train import DivergedError, Trainer

    check_positive("steps", steps)
    check_positive("every", every)
    train = dataclasses.replace(recipe.train, checkpoint=False, doctor_every=0,
                                epochs=max(recipe.train.epochs, 1))
    # the monitor's forward hooks must see every layer: a CUDA graph's replay would skip them
    recipe = override(dataclasses.replace(recipe, train=train), {"train.cuda_graph": False})
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="trickbag-doctor-"))
    monitor = DoctorMonitor(every, out / "doctor.jsonl")
    trainer = Trainer(recipe, out=out, quiet=quiet, data=data, callbacks=[monitor, _StopAt(steps)], tensorboard=False)
    try:
        summary = trainer.fit()
    except DivergedError as exc:  # a probe of a diverging recipe is a finding, not a failure
        summary = exc.summary or {"steps": trainer.step, "stopped": f"diverged: {exc.reason}"}
    epochs = list(monitor.epochs)
    if len(trainer.data.val_y) and trainer.batch_in_epoch:  # stopped inside an epoch: measure its part too
        val = trainer.evaluate(trainer.data.val_x, trainer.data.val_y)
        finite = [x for x in loss_series(monitor.records)[-trainer.batch_in_epoch:] if math.isfinite(x)]
        epochs.append({"epoch": trainer.step / trainer.steps_per_epoch, "step": trainer.step,
                       "train_loss": sum(finite) / len(finite) if finite else float("nan"),
                       "val_loss": val["loss"], "val_acc": val["acc"], "partial": True})
    return ProbeResult(monitor.records, epochs, summary, out)
