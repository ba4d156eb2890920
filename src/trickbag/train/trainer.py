"""``Trainer``: the loop, and only the loop. The parts come from ``recipes.build``.

Per optimizer step: the lr driver writes ``schedule(step) * plateau scale * group
multiplier`` into the param groups; the input pipeline augments the batch on the
device; mixup/cutmix make soft targets; the forward runs under autocast (bf16 on CPU,
bf16 or fp16 + GradScaler on CUDA; with ``distill`` the frozen teacher's logits on the same
batch enter the loss); a non-finite loss skips the step (after ``nan_patience`` of
them the run stops, saying what to try); gradients are unscaled before clipping; a step
the scaler skips does not advance the schedule; lookahead's slow weights move every k steps
and the EMA of weights and buffers is updated. With ``train.prune_easy`` (InfoBatch,
``train.prune``) each epoch leaves out some well-learned samples, the loss is each sample's
weighted by InfoBatch's rescaling, and the schedule runs over the epoch's progress.
A loss that stays above ``diverge_factor`` x its start is divergence too: the run stops.
On a GPU nothing in a step waits for the host: the skip is decided on the device
(``optim.step_unless``) and the losses are read every ``train.sync_every`` steps
(``train_step``); on a CPU, where reading costs nothing, every step.

With ``train.snapshots`` the weights at the end of every lr cycle (a warm restart) are kept
as ``checkpoints/snapshot_<step>.pt`` for snapshot ensembles.

Per epoch: validation (EMA weights, optional flip TTA), plateau control, early stopping,
an atomic checkpoint (last K kept, plus ``best.pt``), callbacks. At the end: test once,
``summary.json``.

The run directory is guarded (``train.rundir``): locked against a second writer, never
overwritten silently (``fit(resume=True)`` continues it, ``fit(overwrite=True)``
replaces it), and nothing is written to it before a resume's checkpoint has loaded.

Resume is bit-exact: model, optimizer, scaler, EMA (with its counter), lookahead's slow
weights, InfoBatch's scores and weights, lr driver (step and plateau state), every RNG (data order, augmentation, mixup,
dropout), the position in the epoch and the epoch's running loss are in the checkpoint.
Ctrl-C finishes the current step, writes ``checkpoints/interrupt.pt`` and stops (so does a
callback that sets ``should_stop`` mid-epoch); a second Ctrl-C stops at once; kill -9
loses at most the current epoch.
"""

from __future__ import annotations

import contextlib
import math
import platform
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from trickbag import __version__
from trickbag._json import write_json
from trickbag.data.datasets import ImageData
from trickbag.data.pipeline import size_at_epoch
from trickbag.data.tta import tta_view_specs, view, view_name, view_subsets
from trickbag.optim import clip_gradients, skips_on_device, step_unless
from trickbag.recipes.config import Recipe, RecipeError, changed_keys, save, to_dict
from trickbag.rng import rng_state, set_rng_state
from trickbag.train.callbacks import Callback, ConsoleProgress, JsonlLogger, TensorBoardLogger
from trickbag.train.checkpoint import checkpoint_candidates, newest_loadable, prune, save_atomic
from trickbag.train.errors import DivergedError, NonFiniteLossError, ResumeError, RunDirError, RunWriteError, TrainingError
from trickbag.train.prune import schedule_step
from trickbag.train.rundir import RunLock, claim_run_dir, default_run_dir, remove_partial_writes, run_artifacts

if TYPE_CHECKING:
    from trickbag.recipes.parts import Parts

__all__ = ["Trainer", "NonFiniteLossError", "DivergedError", "TrainingError"]

CHECKPOINT_FORMAT = 2
_START_STEPS = 10  # finite losses averaged into "the loss at the start" for the divergence rule


class Trainer:
    """Train the parts of a recipe and write the run to ``out``.

    Args:
        parts: what ``trickbag.recipes.build(recipe)`` made; a ``Recipe`` is built here.
        out: run directory (default ``runs/<data>-<model>-<time>``).
        callbacks: extra ``Callback`` objects (after the recipe's own, e.g. the doctor's).
        quiet: no progress output.
        data: with a ``Recipe``: an ``ImageData`` to use instead of loading ``data.name``.
        tensorboard: write TensorBoard events (when tensorboard is installed).
    """

    def __init__(self, parts: Parts | Recipe, out: str | Path | None = None, callbacks: Sequence[Callback] = (),
                 quiet: bool = False, data: ImageData | None = None, tensorboard: bool = True) -> None:
        if isinstance(parts, Recipe):
            from trickbag.recipes.parts import build

            parts = build(parts, data=data, teacher_cache=Path(out).parent if out else None)
        elif data is not None:
            raise ValueError("data= goes with a Recipe; built Parts already hold their data")
        self.parts = parts
        self.recipe = parts.recipe
        # the parts, by name, for the loop and for callbacks
        self.data, self.model, self.forward, self.runtime = parts.data, parts.model, parts.forward, parts.runtime
        self.device, self.inputs = parts.runtime.device, parts.inputs
        self.optimizer, self.schedule, self.lr_driver, self.scaler = parts.optimizer, parts.schedule, parts.lr_driver, parts.scaler
        self.plateau = parts.lr_driver.plateau
        self.ema, self.mixer, self.loss_fn, self.teacher = parts.ema, parts.mixer, parts.loss_fn, parts.teacher
        self.lookahead = parts.lookahead
        self.pruner = parts.pruner  # InfoBatch (train.prune_easy): epochs of changing length, per-sample loss weights
        self.batch_size, self.steps_per_epoch, self.total_steps = parts.batch_size, parts.steps_per_epoch, parts.total_steps
        self.base_lr = parts.base_lr
        # under torchrun: this rank's place; only rank 0 writes the run directory (train.distributed)
        self.dist = parts.dist
        self.is_main = self.dist is None or self.dist.is_main
        self._rank_gen = torch.Generator()  # under torchrun: augmentation draws, reseeded every step (no state to checkpoint)
        # steps between reads of the losses: each read waits for the device, which costs nothing on a CPU
        self.sync_every = self.recipe.train.sync_every or (1 if self.device.type == "cpu" else 50)
        self.out = Path(out) if out else default_run_dir(self.recipe)
        self.data_gen = torch.Generator().manual_seed(self.recipe.train.seed)
        # running state (all of it goes into checkpoints)
        self.step = 0
        self.epoch = 0  # epochs completed
        self.batch_in_epoch = 0
        self.perm: torch.Tensor | None = None
        self.epoch_loss_sum = 0.0  # finite losses of the current epoch, also across a resume
        self.epoch_loss_count = 0
        self.nonfinite = 0
        self._pending: list[torch.Tensor] = []  # losses of steps taken on the device, not yet read (see _read_losses)
        self.start_losses: list[float] = []  # the first finite losses: "the start" of the divergence rule
        self.above = 0  # consecutive steps with the loss above diverge_factor x the start
        self.best_val_acc = -1.0
        self.best_epoch = 0
        self.bad_evals = 0
        self.train_time = 0.0
        self.should_stop = False
        self.stop_reason = ""
        self.resumed_from: str | None = None
        self.skipped_checkpoints: list[dict[str, str]] = []
        self._interrupt = False
        self.callbacks: list[Callback] = [ConsoleProgress(quiet), JsonlLogger(self.out / "metrics.jsonl")]
        self.tensorboard = TensorBoardLogger.create(self.out / "tensorboard") if tensorboard and self.is_main else None
        if self.tensorboard is not None:
            self.callbacks.append(self.tensorboard)
        self.callbacks += list(parts.callbacks) + list(callbacks)
        if not self.is_main:  # the writers are rank 0's; callbacks given here run on every rank
            self.callbacks = list(callbacks)
        if parts.adapted and not quiet and self.is_main:
            print(f"note: on {self.device.type} the recipe's {self.device.type} section applies: "
                  + ", ".join(f"{k}={v}" for k, v in parts.adapted.items()), file=sys.stderr, flush=True)

    # --- data -------------------------------------------------------------------------

    def prepare(self, x: torch.Tensor, train: bool, index: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 (B, C, H, W) -> standardized float on the device; for training also augmented
        (``index``: the images' positions in the training set, for ``alt_flip``) and at the
        epoch's progressive-resizing size (``data.progressive``)."""
        size = size_at_epoch(self.recipe.data.progressive, self.epoch) if train else None
        gen = self.data_gen if self.dist is None else self._rank_gen  # under torchrun each rank draws for its own slice
        return self.inputs(x, train, gen, size, index=index, epoch=self.epoch)

    # --- one step ---------------------------------------------------------------------

    @property
    def current_lr(self) -> float:
        """The lr of the current (or last) step, before per-group multipliers."""
        return self.lr_driver.lr

    def train_step(self, x_u8: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """One optimizer step on a uint8 batch; returns its loss, a detached 0-dim tensor on
        the device (``float(loss)`` reads it, which waits for the device).

        With ``train.sync_every`` > 1 (the default on GPUs), where the optimizer can skip an
        update on the device (Muon, torch's fused optimizers) and no ``GradScaler`` runs, a
        non-finite loss skips its update there and the losses are read every ``sync_every``
        steps (``_read_losses``): no host synchronisation per step; the divergence rule and
        ``nan_patience`` then act up to ``sync_every`` steps late, and the EMA also averages
        a skipped step's (unchanged) weights. Otherwise (the default on CPUs, where a read
        costs nothing) the loss is read at once: a non-finite one skips the step, and a
        diverged run stops before its update."""
        device_guard = self.sync_every > 1 and not self.scaler.is_enabled() and skips_on_device(self.optimizer)
        accumulate = self.recipe.train.accumulate
        self.lr_driver.set_step(self.schedule_position())
        if self.dist is not None:  # this step's augmentation draws: this rank's own, reproducible from the step
            self._rank_gen.manual_seed(self.dist.augmentation_seed(self.recipe.train.seed, self.step))
        if accumulate == 1:
            loss = self._loss(x_u8, y, index)
            value = loss.detach()
        else:  # micro-batches: their backward passes run inside
            loss, value = None, self._accumulate_gradients(x_u8, y, index, accumulate)
        if self.dist is not None:  # the global batch's loss: every rank then skips, counts and stops alike
            value = self.dist.mean(value)
        if not device_guard:
            self._pending.append(value)
            if self._read_losses(counted=False):  # non-finite: skip the step (and drop any accumulated gradients)
                self.optimizer.zero_grad(set_to_none=True)
                return value
        if loss is not None:
            self.scaler.scale(loss).backward()
        optim_cfg = self.recipe.optim
        if optim_cfg.clip_norm or optim_cfg.clip_value:
            clip_gradients(self.model.parameters(), optim_cfg.clip_norm or None, optim_cfg.clip_value or None, self.scaler, self.optimizer)
        if device_guard:
            step_unless(self.optimizer, ~torch.isfinite(value))
            taken = True  # counted now; _read_losses takes back the ones the device skipped
        else:
            scale_before = self.scaler.get_scale() if self.scaler.is_enabled() else None
            self.scaler.step(self.optimizer)
            self.scaler.update()
            taken = scale_before is None or self.scaler.get_scale() >= scale_before
        self.optimizer.zero_grad(set_to_none=True)
        if taken:  # an update the scaler skipped does not advance the schedule
            self.step += 1
            if self.lookahead is not None:
                self.lookahead.after_step(self.model, self.step, self.total_steps)
            if self.ema is not None:
                self.ema.update_parameters(self.model)
        if device_guard:
            self._pending.append(value)
            if len(self._pending) >= self.sync_every:
                self._read_losses(counted=True)
        return value

    def _loss(self, x_u8: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        """The training loss of a uint8 batch: prepared (augmented), mixed, forward, loss."""
        x = self.prepare(x_u8, train=True, index=index)
        y = y.to(self.device, non_blocking=True)
        if self.mixer is not None:
            x, y = self.mixer(x, y)
        with self.runtime.autocast():
            logits = self.forward(x)
        if self.pruner is not None:  # each sample's loss becomes its score; the batch's loss is their weighted mean
            return self.pruner.weighted_mean(self.loss_fn(logits.float(), y, reduction="none"), index)
        if self.teacher is None:
            return self.loss_fn(logits.float(), y)
        with torch.no_grad(), self.runtime.autocast():  # distillation: the frozen teacher on the same (augmented, mixed) batch
            teacher_logits = self.teacher(x)
        return self.loss_fn(logits.float(), y, teacher_logits.float())

    def _accumulate_gradients(self, x_u8: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None, parts: int) -> torch.Tensor:
        """``train.accumulate``: the batch in ``parts`` equal micro-batches, each forward and
        backward on its own with its loss divided by ``parts``, so the summed gradients are
        those of the whole batch's mean loss (BatchNorm aside: each micro-batch is normalized
        alone). Under torchrun the ranks average their gradients once, on the last micro-batch.
        Returns the batch's mean loss (detached)."""
        chunks = zip(x_u8.tensor_split(parts), y.tensor_split(parts),
                     index.tensor_split(parts) if index is not None else [None] * parts)
        total = torch.zeros((), device=self.device)
        for i, (xc, yc, ic) in enumerate(chunks):
            last = i == parts - 1
            with contextlib.nullcontext() if last or self.dist is None else self.dist.no_sync(self.forward):
                loss = self._loss(xc, yc, ic) / parts
                self.scaler.scale(loss).backward()
            total += loss.detach()
        return total

    def _read_losses(self, counted: bool) -> int:
        """Read the losses still on the device (one transfer) and account for them in order:
        the epoch's mean loss, the non-finite count (``nan_patience``) and the divergence
        rule. ``counted``: their steps were counted as taken; each non-finite one was skipped
        on the device, so the count is taken back (the schedule's step is the number of
        updates made). Returns how many were non-finite."""
        if not self._pending:
            return 0
        values = torch.stack(self._pending).tolist()
        self._pending = []
        bad = sum(not math.isfinite(v) for v in values)
        if counted:
            self.step -= bad  # before any error below, so it reports the updates really made
        for value in values:
            if math.isfinite(value):
                self.epoch_loss_sum += value
                self.epoch_loss_count += 1
                self._check_divergence(value)
                continue
            self.nonfinite += 1
            if self.nonfinite >= self.recipe.train.nan_patience:
                raise NonFiniteLossError(
                    f"the loss was not finite ({value}) {self.nonfinite} times (step {self.step}, lr {self.current_lr:.4g})")
        return bad

    def _check_divergence(self, loss: float) -> None:
        """Stop when the loss stays above ``diverge_factor`` x its start (the mean of the
        first finite losses) for ``nan_patience`` steps in a row: a loss at 1e17 is finite
        but the run is lost all the same."""
        factor = self.recipe.train.diverge_factor
        if len(self.start_losses) < _START_STEPS:
            self.start_losses.append(loss)
            return
        start = sum(self.start_losses) / len(self.start_losses)
        if factor and start > 0 and loss > factor * start:
            self.above += 1
            if self.above >= self.recipe.train.nan_patience:
                raise DivergedError(
                    f"the loss rose from {start:.4g} at the start to {loss:.4g} (> {factor:g}x) and stayed there for "
                    f"{self.above} steps (step {self.step}, lr {self.current_lr:.4g})")
        else:
            self.above = 0

    # --- evaluation -------------------------------------------------------------------

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    @torch.no_grad()
    def predict(self, x_all: torch.Tensor, model: nn.Module | None = None, flip: bool | None = None,
                shift: int | None = None) -> torch.Tensor:
        """Class probabilities ``(N, K)`` (float32, on the device) of ``model`` (default: EMA
        weights if on) for uint8 images, averaged over the test-time views: the mirror
        (``flip``) and diagonal shifts of ``shift`` pixels (``None``: the recipe's
        ``train.tta_flip`` / ``train.tta_translate``)."""
        return self.predict_views(x_all, [(flip, shift)], model)[0]

    @torch.no_grad()
    def predict_views(self, x_all: torch.Tensor, view_sets: list[tuple[bool | None, int | None]],
                      model: nn.Module | None = None) -> list[torch.Tensor]:
        """``predict`` for several sets of test-time views ``[(flip, shift), ...]`` in one
        pass: each distinct view goes through the model once, shared by the sets that use it."""
        sets = [self._view_set(flip, shift) for flip, shift in view_sets]
        out = [probs for _, probs in self._probs_by_batch(x_all, model, sets)]
        if not out:
            return [torch.zeros(0, 0, device=self.device) for _ in sets]
        return [torch.cat([batch[j] for batch in out]) for j in range(len(sets))]

    def _view_set(self, flip: bool | None, shift: int | None) -> tuple[bool, int]:
        cfg = self.recipe.train
        return bool(cfg.tta_flip if flip is None else flip), int(cfg.tta_translate if shift is None else shift)

    def _probs_by_batch(self, x_all: torch.Tensor, model: nn.Module | None, view_sets: list[tuple[bool, int]]):
        """``(slice, [probs of each view set])`` per evaluation batch: each distinct view goes
        through the model once, and every set averages its own views' softmax with its weights
        (``data.tta.tta_view_specs``)."""
        model = model or self.eval_model
        specs = [tta_view_specs(flip, shift) for flip, shift in view_sets]
        keys = list(dict.fromkeys((m, o) for spec in specs for m, o, _ in spec))
        black = self.inputs.black
        was_training = model.training
        model.eval()
        bs = self.recipe.data.eval_batch_size
        try:
            for i in range(0, len(x_all), bs):
                x = self.prepare(x_all[i : i + bs], train=False)
                with self.runtime.autocast():
                    probs = {k: F.softmax(model(view(x, *k, black)).float(), dim=1) for k in keys}
                yield slice(i, i + bs), [sum(w * probs[(m, o)] for m, o, w in spec) for spec in specs]
        finally:
            model.train(was_training)

    @torch.no_grad()
    def evaluate(self, x_all: torch.Tensor, y_all: torch.Tensor, model: nn.Module | None = None, flip: bool | None = None,
                 shift: int | None = None) -> dict:
        """Loss (negative log of the averaged probabilities) and accuracy of ``predict``."""
        return self.evaluate_views(x_all, y_all, model, [self._view_set(flip, shift)])[0]

    @torch.no_grad()
    def evaluate_views(self, x_all: torch.Tensor, y_all: torch.Tensor, model: nn.Module | None,
                       view_sets: list[tuple[bool, int]]) -> list[dict]:
        """``evaluate`` for several sets of test-time views ``[(flip, shift), ...]`` in one
        pass: each distinct view is computed once and shared by the sets that use it."""
        if self.dist is not None:  # each rank its slice; the sums are reduced
            x_all, y_all = self.dist.shard(x_all), self.dist.shard(y_all)
        wide = torch.float32 if self.device.type == "mps" else torch.float64  # MPS has no float64
        sums = torch.zeros(len(view_sets), 3, dtype=wide, device=self.device)  # per set: loss, correct, count
        for rows, probs_by_set in self._probs_by_batch(x_all, model, view_sets):
            y = y_all[rows].to(self.device, non_blocking=True)
            for j, probs in enumerate(probs_by_set):
                sums[j, 0] += F.nll_loss(probs.clamp_min(1e-12).log().to(wide), y, reduction="sum")
                sums[j, 1] += (probs.argmax(1) == y).sum()
                sums[j, 2] += len(y)
        if self.dist is not None:
            self.dist.all_reduce_sum(sums)
        return [{"loss": loss / n, "acc": int(correct) / n} if n else {"loss": 0.0, "acc": 0.0}
                for loss, correct, n in sums.tolist()]  # one read at the end

    # --- checkpoints ------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything a bit-exact resume needs (the losses still on the device are read first)."""
        self._read_losses(counted=True)
        return {
            "format": CHECKPOINT_FORMAT,
            "trickbag": __version__,
            "recipe": to_dict(self.recipe),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "perm": self.perm if self.perm is not None else torch.empty(0, dtype=torch.long),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "lookahead": self.lookahead.state_dict() if self.lookahead is not None else {},
            "pruner": self.pruner.state_dict() if self.pruner is not None else {},
            "lr_driver": self.lr_driver.state_dict(),  # its step and the plateau controller's state
            "mixer": self.mixer.state_dict() if self.mixer is not None else {},
            "data_gen": self.data_gen.get_state(),
            "rng": rng_state(),
            "epoch_loss": [self.epoch_loss_sum, self.epoch_loss_count],
            "nonfinite": self.nonfinite,
            "divergence": {"start_losses": list(self.start_losses), "above": self.above},
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "bad_evals": self.bad_evals,
            "train_time": self.train_time,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format", 1) != CHECKPOINT_FORMAT:
            raise ResumeError(f"checkpoint format {state.get('format', 1)} was written by trickbag {state.get('trickbag', '?')}; "
                              f"this trickbag ({__version__}) reads format {CHECKPOINT_FORMAT}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        if self.lookahead is not None and state.get("lookahead"):
            self.lookahead.load_state_dict(state["lookahead"])
        elif self.lookahead is not None:  # a checkpoint without them (lookahead turned on at the resume): not the fresh init
            self.lookahead.restart(self.model)
        if self.pruner is not None and state.get("pruner"):
            self.pruner.load_state_dict(state["pruner"])
        self.lr_driver.load_state_dict(state["lr_driver"])
        if self.mixer is not None and state["mixer"]:
            self.mixer.load_state_dict(state["mixer"])
        self.data_gen.set_state(state["data_gen"])
        set_rng_state(state["rng"])
        self.epoch, self.batch_in_epoch, self.step = state["epoch"], state["batch_in_epoch"], state["step"]
        self.perm = state["perm"] if state["perm"].numel() else None
        self.epoch_loss_sum, self.epoch_loss_count = float(state["epoch_loss"][0]), int(state["epoch_loss"][1])
        self.nonfinite = state["nonfinite"]
        self.start_losses, self.above = list(state["divergence"]["start_losses"]), int(state["divergence"]["above"])
        self.best_val_acc, self.best_epoch = state["best_val_acc"], state["best_epoch"]
        self.bad_evals, self.train_time = state["bad_evals"], state["train_time"]
        self.lr_driver.set_step(self.schedule_position())
        patience = self.recipe.train.early_stopping
        if patience and self.bad_evals >= patience:  # the run had stopped early: a resume must not train on
            self.should_stop = True
            self.stop_reason = f"early stopping: no validation improvement for {self.bad_evals} evaluations"

    def _write_checkpoint(self, name: str, state: dict | None = None) -> None:
        if not self.is_main:
            return
        folder = self.out / "checkpoints"
        try:
            save_atomic(self.state_dict() if state is None else state, folder / name)
        except OSError as exc:
            older = newest_loadable(folder)[0]
            kept = f"the previous checkpoint {older.name} is intact" if older else "no earlier checkpoint exists"
            raise RunWriteError(f"could not write checkpoint {folder / name}: {exc.strerror or exc}; {kept}. "
                                "Free space or fix the folder's permissions, then continue with --resume.") from None

    def _save_epoch_checkpoint(self, is_best: bool) -> None:
        if not self.recipe.train.checkpoint or not self.is_main:
            return
        folder = self.out / "checkpoints"
        state = self.state_dict()
        self._write_checkpoint(f"epoch_{self.epoch:04d}.pt", state)
        (folder / "interrupt.pt").unlink(missing_ok=True)
        if is_best:
            self._write_checkpoint("best.pt", state)
        prune(folder, self.recipe.train.keep_checkpoints)

    def resume(self) -> str:
        """Load the newest checkpoint of ``out`` that loads; returns its name.

        A damaged newer one is skipped and said (stderr and the summary's
        ``skipped_checkpoints``); with none loadable, or a recipe the checkpoint does not
        fit, ``ResumeError`` (nothing in ``out`` has been changed by then).
        """
        folder = self.out / "checkpoints"
        path, state, skipped = newest_loadable(folder)
        self.skipped_checkpoints = [{"checkpoint": p.name, "reason": why} for p, why in skipped]
        for p, why in skipped:
            print(f"warning: skipped checkpoint {p} ({why})", file=sys.stderr, flush=True)
        if path is None:
            if skipped:
                raise ResumeError(f"--resume: no checkpoint in {folder} loads ({'; '.join(f'{p.name}: {w}' for p, w in skipped)}); "
                                  "nothing was changed. Start the run again with --overwrite.")
            raise ResumeError(f"--resume: {self.out} has no checkpoint to continue from (the run stopped before its first "
                              "epoch ended, or ran with train.checkpoint=false); start it again with --overwrite")
        try:
            self.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError) as exc:
            if isinstance(exc, TrainingError):
                raise
            changed = changed_keys(state.get("recipe", {}), to_dict(self.recipe))
            what = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changed) or "no recipe key changed"
            raise ResumeError(f"--resume: checkpoint {path.name} does not fit this recipe ({what}). Resume with the run's "
                              f"own recipe, or start a new --out. ({str(exc).splitlines()[0][:200]})") from None
        self.resumed_from = path.name
        return path.name

    # --- the loop ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _sigint_checkpoint(self):
        """First Ctrl-C: finish the step, checkpoint, stop. Second: stop at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._interrupt and self.dist is None:  # torchrun forwards a Ctrl-C the ranks already had: not a second one
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            self._interrupt = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _open_run(self, resume: bool, overwrite: bool) -> None:
        """Check ``out`` and load the checkpoint (resume) before anything is written."""
        if resume:
            self.resume()
        else:
            claim_run_dir(self.out, run_artifacts(self.out), overwrite)
        removed = remove_partial_writes(self.out)
        if removed:
            print(f"note: removed unfinished writes {', '.join(removed)} (a run was killed while saving)",
                  file=sys.stderr, flush=True)

    def fit(self, resume: bool = False, overwrite: bool = False) -> dict:
        """Train to the end (or an early stop) and return the summary.

        Args:
            resume: continue the run in ``out`` from its newest loadable checkpoint.
            overwrite: replace a previous run in ``out`` (otherwise that is refused).

        Raises ``RunDirError``/``ResumeError`` before writing anything, ``DivergedError``
        (with ``.summary``, also written to ``summary.json``) when training diverges, and
        ``RunWriteError`` when the disk refuses a write.
        """
        if self.recipe.train.members != 1:
            raise RecipeError(f"recipe train.members={self.recipe.train.members}: a Trainer trains one net; train the ensemble "
                              "with trickbag.train.ensemble.fit_members (what `trickbag train` does), or set train.members=1")
        if not self.is_main:  # rank 0 checks (and clears) the run directory; then every rank loads its checkpoint
            self.dist.barrier()
            if resume:
                self.resume()
            return self._fit(resumed=resume)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot create the run directory {self.out}: {exc.strerror or exc}") from None
        with RunLock(self.out):
            self._open_run(resume, overwrite)
            if self.dist is not None:
                self.dist.barrier()
            try:
                return self._fit(resumed=resume)
            except OSError as exc:
                raise RunWriteError(f"could not write to the run directory {self.out}: {exc.strerror or exc} "
                                    f"({getattr(exc, 'filename', '') or 'a file'}); the checkpoints written before are intact; "
                                    "free space, then continue with --resume") from None

    def fit_or_continue(self) -> dict:
        """``fit`` for tools that run a run until it is done (ablations, a recipe teacher):
        continue from the run directory's newest checkpoint where it holds one (bit-exact),
        else start it, replacing what a start killed before its first checkpoint left."""
        resume = bool(checkpoint_candidates(self.out / "checkpoints"))
        return self.fit(resume=resume, overwrite=not resume)

    def _fit(self, resumed: bool) -> dict:
        if self.is_main:
            save(self.recipe, self.out / "config.yaml")
        wall0 = time.perf_counter()
        for cb in self.callbacks:
            cb.on_fit_start(self)
        history_test: list[tuple[float, float]] = []
        try:
            with self._sigint_checkpoint():
                self._epochs(history_test)
        except DivergedError as exc:
            self.stop_reason = f"diverged: {exc.reason}"
            summary = self._summary(wall0, resumed, history_test, evaluate=False)
            for cb in self.callbacks:
                cb.on_fit_end(self, summary)
            exc.summary = summary
            raise
        summary = self._summary(wall0, resumed, history_test, evaluate=not self._interrupt)
        for cb in self.callbacks:
            cb.on_fit_end(self, summary)
        return summary

    def _epochs(self, history_test: list[tuple[float, float]]) -> None:
        cfg = self.recipe.train
        n = len(self.data.train_y)
        while self.epoch < cfg.epochs and not self.should_stop:
            if self.perm is None:
                self.perm = torch.randperm(n, generator=self.data_gen)
                if self.pruner is not None:  # InfoBatch: this epoch's well-learned samples left out at random
                    self.perm = self.pruner.start_epoch(self.perm, self.epoch, self.data_gen, min_keep=self.batch_size)
                self.batch_in_epoch = 0
                self.epoch_loss_sum, self.epoch_loss_count = 0.0, 0
            order = self.perm.to(self.data.train_x.device)  # once per epoch: data kept on a GPU is cut there
            t0 = time.perf_counter()
            steps0, steps = self.batch_in_epoch, self.steps_this_epoch
            self.model.train()
            for b in range(self.batch_in_epoch, steps):
                idx = order[b * self.batch_size : (b + 1) * self.batch_size]
                if self.dist is not None:  # this rank's slice of the global batch
                    idx = self.dist.shard(idx)
                loss = self.train_step(self.data.train_x[idx], self.data.train_y[idx], index=idx)
                self.batch_in_epoch = b + 1
                if cfg.snapshots and self._cycle_ended():
                    self._write_checkpoint(f"snapshot_{self.step:07d}.pt")
                for cb in self.callbacks:
                    cb.on_step_end(self, loss)
                if self.dist is not None:  # ranks stop together, at the steps where they read their losses
                    if self.batch_in_epoch % self.sync_every and self.batch_in_epoch < steps:
                        continue
                    self._interrupt, self.should_stop = self.dist.agree(self._interrupt, self.should_stop, device=self.device)
                if self._interrupt or self.should_stop:
                    break
            self._read_losses(counted=True)
            self.runtime.synchronize()  # the epoch's time includes the device's queued work
            epoch_time = time.perf_counter() - t0
            self.train_time += epoch_time
            if self._interrupt or self.batch_in_epoch < steps:  # Ctrl-C or a callback's stop mid-epoch
                if cfg.checkpoint:
                    self._write_checkpoint("interrupt.pt")
                if self._interrupt:
                    self.stop_reason = ("interrupted (Ctrl-C): checkpoint saved; continue with --resume" if cfg.checkpoint
                                        else "interrupted (Ctrl-C); train.checkpoint is off, so there is nothing to resume")
                self.stop_reason = self.stop_reason or f"stopped by a callback at step {self.step}"
                return
            self.epoch += 1
            self.perm = None
            self.batch_in_epoch = 0
            if self.dist is not None:  # every rank evaluates (and rank 0 saves) the same weights
                self.dist.broadcast_buffers(self.model, self.ema)
            metrics, is_best = self._end_of_epoch(epoch_time, (steps - steps0) * self.batch_size, history_test)
            for cb in self.callbacks:  # before the checkpoint: a resume drops log lines past it, never misses one
                cb.on_epoch_end(self, metrics)
            self._save_epoch_checkpoint(is_best)

    @property
    def steps_this_epoch(self) -> int:
        """Optimizer steps in the current epoch: ``steps_per_epoch``, fewer in an epoch that
        ``train.prune_easy`` pruned."""
        return len(self.perm) // self.batch_size if self.perm is not None else self.steps_per_epoch

    def schedule_position(self) -> int:
        """The lr schedule's step for the next update: the updates made so far, or with
        ``train.prune_easy`` the epoch's progress in unpruned steps (``prune.schedule_step``),
        so a pruned epoch sweeps the lr range of a whole one in fewer steps."""
        if self.pruner is None:
            return self.step
        return schedule_step(self.epoch, self.batch_in_epoch, self.steps_this_epoch, self.steps_per_epoch)

    def _cycle_ended(self) -> bool:
        """The step just taken ended an lr cycle: the lr fell into it and the next step's lr jumps
        back up (a warm restart; a warmup's rise is not one). Snapshot ensembles keep the
        weights here (Huang et al. 2017)."""
        s, lr = self.step, self.schedule
        return 1 < s < self.total_steps and lr(s) > lr(s - 1) < lr(s - 2)

    def _end_of_epoch(self, epoch_time: float, images: int, history_test: list) -> tuple[dict, bool]:
        cfg = self.recipe.train
        metrics: dict[str, Any] = {
            "epoch": self.epoch, "step": self.step, "lr": self.current_lr,
            "train_loss": self.epoch_loss_sum / self.epoch_loss_count if self.epoch_loss_count else None,
            "time_s": epoch_time, "train_time_s": self.train_time, "images_per_s": images / max(epoch_time, 1e-9),
        }
        last = self.epoch == cfg.epochs
        is_best = False
        if len(self.data.val_y) and (self.epoch % cfg.eval_every == 0 or last):
            val = self.evaluate(self.data.val_x, self.data.val_y)
            metrics.update(val_loss=val["loss"], val_acc=val["acc"])
            if not math.isfinite(val["loss"]):
                raise DivergedError(f"the validation loss is not finite after epoch {self.epoch} ({val['loss']}): "
                                    "the weights hold inf/NaN")
            if val["acc"] > self.best_val_acc:
                self.best_val_acc, self.best_epoch, self.bad_evals, is_best = val["acc"], self.epoch, 0, True
            else:
                self.bad_evals += 1
            if self.plateau is not None:
                metrics["plateau"] = self.lr_driver.report(val["loss"]).reason
            if cfg.early_stopping and self.bad_evals >= cfg.early_stopping:
                self.should_stop = True
                self.stop_reason = f"early stopping: no validation improvement for {self.bad_evals} evaluations"
        if cfg.eval_test:
            test = self.evaluate(self.data.test_x, self.data.test_y)
            metrics.update(test_loss=test["loss"], test_acc=test["acc"])
            history_test.append((self.train_time, test["acc"]))
        return metrics, is_best

    def _final_test(self) -> dict:
        """Test metrics of the final weights with the recipe's test-time views, and
        ``test_acc_by_tta``: the accuracy with every subset of those views (``{"none": ..,
        "flip": .., "translate1": .., "flip+translate1": ..}``; empty without test-time views),
        what each view is worth on this run; one pass computes them all."""
        full = self._view_set(None, None)
        subsets = view_subsets(*full)
        results = self.evaluate_views(self.data.test_x, self.data.test_y, None, subsets)
        final = {f"test_{k}": v for k, v in results[subsets.index(full)].items()}
        if self.ema is not None:
            final.update({f"test_{k}_no_ema": v for k, v in self.evaluate(self.data.test_x, self.data.test_y, self.model).items()})
        final["test_acc_by_tta"] = {view_name(*v): r["acc"] for v, r in zip(subsets, results)} if full != (False, 0) else {}
        return final

    def _summary(self, wall0: float, resumed: bool, history_test: list, evaluate: bool) -> dict:
        """The run's summary; ``wall_time_s`` runs from the start of ``fit`` to the end of
        the final evaluation."""
        final = self._final_test() if evaluate else {}
        wall = time.perf_counter() - wall0
        images = self.step * self.batch_size
        summary = {
            **final,
            "best_val_acc": self.best_val_acc if self.best_val_acc >= 0 else None,
            "best_epoch": self.best_epoch,
            "epochs": self.epoch,
            "steps": self.step,
            "train_time_s": self.train_time,
            "wall_time_s": wall,
            "images_per_s": images / max(self.train_time, 1e-9),
            "stopped": self.stop_reason or "completed",
            "diverged": self.stop_reason.startswith("diverged"),
            "resumed": resumed,
            "resumed_from": self.resumed_from,
            "skipped_checkpoints": self.skipped_checkpoints,
            "nonfinite_losses": self.nonfinite,
            # train.prune_easy (InfoBatch): training samples left out, summed over the epochs
            "pruned_samples": self.pruner.dropped if self.pruner is not None else 0,
            "test_acc_by_train_time": history_test,
            "runtime": self.runtime.describe(),
            # what `auto` changed for the device the run landed on (the recipe's cuda section), if anything
            "adapted_for_device": {"device": self.device.type, "changed": self.parts.adapted} if self.parts.adapted else None,
            "data": self.data.summary(),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "versions": {"trickbag": __version__, "torch": torch.__version__, "python": platform.python_version()},
            "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
            "tensorboard": str(self.out / "tensorboard") if self.tensorboard else None,
            "world_size": self.dist.world_size if self.dist is not None else 1,  # processes of a torchrun job (data-parallel)
            "out": str(self.out),
            "config": to_dict(self.recipe),
        }
        if self.is_main:
            write_json(self.out / "summary.json", summary)
        return summary

