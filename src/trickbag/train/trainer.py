"""``Trainer``: a lean loop that owns the step.

Per optimizer step: ``lr = schedule(step) * plateau.scale`` is written into the param
groups; the batch is augmented on the device; mixup/cutmix make soft targets; the
forward runs under autocast (bf16 on CPU, fp16 + GradScaler on CUDA); a non-finite
loss skips the step (and stops the run after ``nan_patience`` of them, saying what to
try); gradients are unscaled before clipping; a step the scaler skips does not
advance the schedule; the EMA of weights and buffers is updated.

Per epoch: validation (EMA weights, optional flip TTA), plateau control, early
stopping, an atomic checkpoint (last K kept, plus ``best.pt``), callbacks. At the end:
test once, ``summary.json``.

Resume is bit-exact: model, optimizer, scaler, EMA (with its counter), schedule step,
plateau state, every RNG (data order, augmentation, mixup, dropout) and the position
in the epoch are in the checkpoint. Ctrl-C finishes the current step, writes
``checkpoints/interrupt.pt`` and exits (so does a callback that sets ``should_stop``
mid-epoch); kill -9 loses at most the current epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import platform
import random
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from trickbag import __version__
from trickbag.data import build_augment, load_dataset, pca_basis
from trickbag.data.datasets import ImageData, to_unit
from trickbag.init import initialize, zero_gamma
from trickbag.losses import MixUpCutMix, soft_target_cross_entropy
from trickbag.models import build_model
from trickbag.optim import build_optimizer, clip_gradients, linear_scaling, param_groups
from trickbag.recipes import Recipe, RecipeError, to_dict
from trickbag.schedules import SCHEDULES, PlateauController, Schedule
from trickbag.schedules import build as build_schedule
from trickbag.schedules.torch import attach
from trickbag.train.callbacks import (
    Callback,
    ConsoleProgress,
    JsonlLogger,
    TensorBoardLogger,
)
from trickbag.train.checkpoint import latest_checkpoint, prune, save_atomic
from trickbag.train.ema import build_ema
from trickbag.train.runtime import Runtime, resolve_runtime

__all__ = ["Trainer", "NonFiniteLossError", "resolve_schedule", "steps_from_units"]


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses: training diverged."""


def steps_from_units(value: Any, steps_per_epoch: int, total_steps: int, key: str = "") -> Any:
    """``"3ep"`` -> 3 epochs of steps, ``"500ba"`` -> 500, ``"0.25dur"`` -> a quarter of the run;
    numbers and other values pass through."""
    if not isinstance(value, str):
        return value
    for suffix, scale in (("ep", steps_per_epoch), ("ba", 1), ("dur", total_steps)):
        if value.endswith(suffix):
            try:
                return float(value[: -len(suffix)]) * scale
            except ValueError:
                break
    if value.strip().lstrip("-").replace(".", "", 1).isdigit():
        return float(value)
    raise RecipeError(f"recipe key 'schedule.params.{key}' must be a number or a duration like '3ep', '500ba', '0.5dur'; got {value!r}")


def resolve_schedule(name: str, params: dict, lr: float, steps_per_epoch: int, total_steps: int) -> Schedule:
    """Build the recipe's schedule: units turned into steps, the peak lr filled in."""
    builder = SCHEDULES.get(name)
    accepted = inspect.signature(builder).parameters
    resolved = {k: steps_from_units(v, steps_per_epoch, total_steps, k) for k, v in params.items()}
    for lr_name in ("learning_rate", "max_lr"):
        if lr_name in accepted and lr_name not in resolved:
            resolved[lr_name] = lr
    if "final_lr_frac" in resolved:  # convenience: final lr as a fraction of the peak
        resolved["final_lr"] = lr * resolved.pop("final_lr_frac")
    for key in ("total_steps", "steps_per_epoch"):
        if key in resolved and key in accepted and accepted[key].annotation in (int, "int"):
            resolved[key] = int(round(resolved[key]))
    try:
        return build_schedule(name, **resolved)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"recipe schedule {name!r}: {exc}") from None


class Trainer:
    """Train ``recipe`` and write the run to ``out``.

    Args:
        recipe: a validated ``Recipe`` (``trickbag.recipes.load``).
        out: run directory (default ``runs/<data>-<model>-<time>``).
        callbacks: extra ``Callback`` objects.
        quiet: no progress output.
        data: an ``ImageData`` to use instead of loading ``recipe.data.name``.
    """

    def __init__(self, recipe: Recipe, out: str | Path | None = None, callbacks: Sequence[Callback] = (),
                 quiet: bool = False, data: ImageData | None = None) -> None:
        self.recipe = recipe
        cfg = recipe.train
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.out = Path(out) if out else Path("runs") / f"{recipe.data.name}-{recipe.model.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.data = data if data is not None else load_dataset(recipe.data.name, recipe.data.data_dir, recipe.data.val_size, cfg.seed)
        if recipe.data.train_subset:  # a new ImageData: the caller's object is not changed
            n = recipe.data.train_subset
            self.data = dataclasses.replace(self.data, train_x=self.data.train_x[:n], train_y=self.data.train_y[:n])
        self.model = self._build_model()
        self.runtime: Runtime = resolve_runtime(cfg.device, cfg.precision, cfg.channels_last, self.model)
        self.device = self.runtime.device
        memory_format = torch.channels_last if self.runtime.channels_last else torch.preserve_format
        self.model.to(self.device, memory_format=memory_format)
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self._setup_inputs()
        self.batch_size = recipe.data.batch_size
        self.steps_per_epoch = len(self.data.train_y) // self.batch_size
        if self.steps_per_epoch < 1:
            raise RecipeError(f"recipe data.batch_size ({self.batch_size}) must be <= the {len(self.data.train_y)} training examples")
        self.total_steps = cfg.epochs * self.steps_per_epoch
        o = recipe.optim
        self.base_lr = linear_scaling(o.lr, self.batch_size, o.base_batch_size) if o.base_batch_size else o.lr
        groups = param_groups(self.model, o.weight_decay, o.no_bias_decay)
        self.optimizer = build_optimizer(o.name, groups, lr=self.base_lr, momentum=o.momentum, betas=tuple(o.betas))
        s = recipe.schedule
        self.schedule = resolve_schedule(s.name, dict(s.params), self.base_lr, self.steps_per_epoch, self.total_steps)
        self.plateau = PlateauController(max(self.base_lr, 1e-12), **s.plateau) if s.plateau else None
        # writes schedule(step) * plateau.scale * each group's lr_mult; the loop sets the step
        self.lr_driver = attach(self.optimizer, self.schedule, plateau=self.plateau)
        self.scaler = self.runtime.grad_scaler()
        self.ema = build_ema(self.model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay else None
        loss = recipe.loss
        self.mixer = (MixUpCutMix(self.data.num_classes, loss.mixup_alpha, loss.cutmix_alpha, loss.mix_prob,
                                  label_smoothing=loss.label_smoothing, seed=cfg.seed + 1)
                      if loss.mixup_alpha > 0 or loss.cutmix_alpha > 0 else None)
        self.data_gen = torch.Generator().manual_seed(cfg.seed)
        # running state (all of it goes into checkpoints)
        self.step = 0
        self.epoch = 0  # epochs completed
        self.batch_in_epoch = 0
        self.perm: torch.Tensor | None = None
        self.nonfinite = 0
        self.best_val_acc = -1.0
        self.best_epoch = 0
        self.bad_evals = 0
        self.train_time = 0.0
        self.should_stop = False
        self.stop_reason = ""
        self._interrupt = False
        self.callbacks: list[Callback] = [ConsoleProgress(quiet), JsonlLogger(self.out / "metrics.jsonl")]
        self.tensorboard = self._tensorboard()
        if cfg.doctor_every:
            from trickbag.doctor.monitor import DoctorMonitor

            self.callbacks.append(DoctorMonitor(cfg.doctor_every, self.out / "doctor.jsonl"))
        self.callbacks += list(callbacks)

    # --- construction helpers ---------------------------------------------------------

    def _build_model(self) -> nn.Module:
        m = self.recipe.model
        params = dict(m.params)
        accepted = inspect.signature(_model_builder(m.name)).parameters
        c, h, _ = self.data.shape
        for key, value in (("in_channels", c), ("num_classes", self.data.num_classes), ("image_size", h)):
            if key in accepted and key not in params:
                params[key] = value
        try:
            model = build_model(m.name, **params)
        except (TypeError, ValueError) as exc:
            raise RecipeError(f"recipe model {m.name!r}: {exc}") from None
        if m.init:
            initialize(model, m.init, seed=self.recipe.train.seed, **m.init_params)
        if m.zero_gamma:
            zero_gamma(model)
        return model

    def _setup_inputs(self) -> None:
        d = self.recipe.data
        if d.standardize:
            mean, std = self.data.channel_stats(d.log1p)
            std = std.clamp_min(1e-6)
        else:
            channels = self.data.train_x.shape[1]
            mean, std = torch.zeros(channels), torch.ones(channels)
        self.mean = mean.view(1, -1, 1, 1).to(self.device)
        self.std = std.view(1, -1, 1, 1).to(self.device)
        extra = {}
        if any(a.get("name") == "pca_lighting" for a in d.augment):
            eigval, eigvec = pca_basis(self.data.train_x)
            extra["pca_lighting"] = {"eigval": eigval, "eigvec": eigvec}
        try:
            self.augment = build_augment(d.augment, extra) if d.augment else None
        except (KeyError, ValueError) as exc:
            raise RecipeError(f"recipe data.augment: {exc}") from None

    def _tensorboard(self) -> TensorBoardLogger | None:
        try:
            logger = TensorBoardLogger(self.out / "tensorboard")
        except ImportError:
            return None
        self.callbacks.append(logger)
        return logger

    # --- data -------------------------------------------------------------------------

    def prepare(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 (B, C, H, W) -> augmented (train), standardized float on the device."""
        x = to_unit(x.to(self.device, non_blocking=True), self.recipe.data.log1p)
        if train and self.augment is not None:
            x = self.augment(x, self.data_gen)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.runtime.channels_last else x

    # --- one step ---------------------------------------------------------------------

    @property
    def current_lr(self) -> float:
        """The lr of the current (or last) step, before per-group multipliers."""
        return self.lr_driver.lr

    def train_step(self, x_u8: torch.Tensor, y: torch.Tensor) -> float:
        x = self.prepare(x_u8, train=True)
        y = y.to(self.device, non_blocking=True)
        smoothing = self.recipe.loss.label_smoothing
        if self.mixer is not None:
            x, y = self.mixer(x, y)
            smoothing = 0.0  # the mixer already smoothed the targets
        self.lr_driver.set_step(self.step)
        with self.runtime.autocast():
            logits = self.forward(x)
        loss = soft_target_cross_entropy(logits.float(), y, smoothing)
        value = float(loss.detach())
        if not math.isfinite(value):
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite += 1
            if self.nonfinite >= self.recipe.train.nan_patience:
                raise NonFiniteLossError(
                    f"the loss was not finite ({value}) {self.nonfinite} times (step {self.step}, lr {self.current_lr:.4g}); "
                    "training diverged. Try: a lower optim.lr (e.g. /10), a warmup (schedule.params.warmup_steps=1ep), "
                    "gradient clipping (optim.clip_norm=5), or precision=fp32."
                )
            return value
        self.scaler.scale(loss).backward()
        o = self.recipe.optim
        if o.clip_norm or o.clip_value:
            clip_gradients(self.model.parameters(), o.clip_norm or None, o.clip_value or None, self.scaler, self.optimizer)
        scale_before = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        taken = scale_before is None or self.scaler.get_scale() >= scale_before
        if taken:  # an update the scaler skipped does not advance the schedule
            self.step += 1
            if self.ema is not None:
                self.ema.update_parameters(self.model)
        return value

    # --- evaluation -------------------------------------------------------------------

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    @torch.no_grad()
    def evaluate(self, x_all: torch.Tensor, y_all: torch.Tensor, model: nn.Module | None = None, tta: bool | None = None) -> dict:
        """Loss and accuracy of ``model`` (default: EMA weights if on) on uint8 images."""
        model = model or self.eval_model
        tta = self.recipe.train.tta_flip if tta is None else tta
        was_training = model.training
        model.eval()
        total_loss, correct, n = 0.0, 0, len(y_all)
        bs = self.recipe.data.eval_batch_size
        for i in range(0, n, bs):
            x = self.prepare(x_all[i : i + bs], train=False)
            y = y_all[i : i + bs].to(self.device)
            with self.runtime.autocast():
                probs = F.softmax(model(x).float(), dim=1)
                if tta:
                    probs = (probs + F.softmax(model(x.flip(-1)).float(), dim=1)) / 2
            total_loss += float(F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum"))
            correct += int((probs.argmax(1) == y).sum())
        model.train(was_training)
        return {"loss": total_loss / max(n, 1), "acc": correct / max(n, 1)}

    # --- checkpoints ------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "format": 1,
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
            "plateau": self.plateau.state_dict() if self.plateau is not None else {},
            "mixer": self.mixer.state_dict() if self.mixer is not None else {},
            "data_gen": self.data_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python_rng": random.getstate(),
            "nonfinite": self.nonfinite,
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "bad_evals": self.bad_evals,
            "train_time": self.train_time,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        if self.plateau is not None and state["plateau"]:
            self.plateau.load_state_dict(state["plateau"])
        if self.mixer is not None and state["mixer"]:
            self.mixer.load_state_dict(state["mixer"])
        self.data_gen.set_state(state["data_gen"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        random.setstate(_as_tuple(state["python_rng"]))
        self.epoch, self.batch_in_epoch, self.step = state["epoch"], state["batch_in_epoch"], state["step"]
        self.perm = state["perm"] if state["perm"].numel() else None
        self.nonfinite, self.best_val_acc, self.best_epoch = state["nonfinite"], state["best_val_acc"], state["best_epoch"]
        self.bad_evals, self.train_time = state["bad_evals"], state["train_time"]

    def _save_epoch_checkpoint(self, is_best: bool) -> None:
        if not self.recipe.train.checkpoint:
            return
        folder = self.out / "checkpoints"
        state = self.state_dict()
        save_atomic(state, folder / f"epoch_{self.epoch:04d}.pt")
        (folder / "interrupt.pt").unlink(missing_ok=True)
        if is_best:
            save_atomic(state, folder / "best.pt")
        prune(folder, self.recipe.train.keep_checkpoints)

    def resume(self) -> bool:
        """Load the newest good checkpoint of ``out``; False when there is none."""
        found = latest_checkpoint(self.out / "checkpoints")
        if found is None:
            return False
        self.load_state_dict(found[1])
        return True

    # --- the loop ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _sigint_checkpoint(self):
        """First Ctrl-C: finish the step, checkpoint, stop. Second: stop at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._interrupt:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            self._interrupt = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def fit(self, resume: bool = False) -> dict:
        """Train to the end (or an early stop) and return the summary."""
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(yaml.safe_dump(to_dict(self.recipe), sort_keys=False))
        resumed = self.resume() if resume else False
        wall0 = time.perf_counter()
        for cb in self.callbacks:
            cb.on_fit_start(self)
        cfg = self.recipe.train
        n = len(self.data.train_y)
        history_test: list[tuple[float, float]] = []
        with self._sigint_checkpoint():
            while self.epoch < cfg.epochs and not self.should_stop:
                if self.perm is None:
                    self.perm = torch.randperm(n, generator=self.data_gen)
                    self.batch_in_epoch = 0
                t0 = time.perf_counter()
                steps0, losses = self.batch_in_epoch, []
                self.model.train()
                for b in range(self.batch_in_epoch, self.steps_per_epoch):
                    idx = self.perm[b * self.batch_size : (b + 1) * self.batch_size]
                    loss = self.train_step(self.data.train_x[idx], self.data.train_y[idx])
                    self.batch_in_epoch = b + 1
                    if math.isfinite(loss):
                        losses.append(loss)
                    for cb in self.callbacks:
                        cb.on_step_end(self, loss)
                    if self._interrupt or self.should_stop:
                        break
                epoch_time = time.perf_counter() - t0
                self.train_time += epoch_time
                if self._interrupt or self.batch_in_epoch < self.steps_per_epoch:  # Ctrl-C or a callback's stop mid-epoch
                    if cfg.checkpoint:
                        save_atomic(self.state_dict(), self.out / "checkpoints" / "interrupt.pt")
                    if self._interrupt:
                        self.stop_reason = "interrupted (Ctrl-C): checkpoint saved; continue with --resume"
                    self.stop_reason = self.stop_reason or f"stopped by a callback at step {self.step}"
                    break
                self.epoch += 1
                self.perm = None
                self.batch_in_epoch = 0
                metrics = self._end_of_epoch(losses, epoch_time, (self.steps_per_epoch - steps0) * self.batch_size, history_test)
                for cb in self.callbacks:
                    cb.on_epoch_end(self, metrics)
        summary = self._summary(time.perf_counter() - wall0, resumed, history_test)
        for cb in self.callbacks:
            cb.on_fit_end(self, summary)
        return summary

    def _end_of_epoch(self, losses: list[float], epoch_time: float, images: int, history_test: list) -> dict:
        cfg = self.recipe.train
        metrics: dict[str, Any] = {
            "epoch": self.epoch, "step": self.step, "lr": self.current_lr,
            "train_loss": sum(losses) / len(losses) if losses else float("nan"),
            "time_s": epoch_time, "train_time_s": self.train_time, "images_per_s": images / max(epoch_time, 1e-9),
        }
        last = self.epoch == cfg.epochs
        is_best = False
        if len(self.data.val_y) and (self.epoch % cfg.eval_every == 0 or last):
            val = self.evaluate(self.data.val_x, self.data.val_y)
            metrics.update(val_loss=val["loss"], val_acc=val["acc"])
            if val["acc"] > self.best_val_acc:
                self.best_val_acc, self.best_epoch, self.bad_evals, is_best = val["acc"], self.epoch, 0, True
            else:
                self.bad_evals += 1
            if self.plateau is not None:
                decision = self.plateau.update(val["loss"])
                metrics["plateau"] = decision.reason
            if cfg.early_stopping and self.bad_evals >= cfg.early_stopping:
                self.should_stop = True
                self.stop_reason = f"early stopping: no validation improvement for {self.bad_evals} evaluations"
        if cfg.eval_test:
            test = self.evaluate(self.data.test_x, self.data.test_y)
            metrics.update(test_loss=test["loss"], test_acc=test["acc"])
            history_test.append((self.train_time, test["acc"]))
        self._save_epoch_checkpoint(is_best)
        return metrics

    def _summary(self, wall: float, resumed: bool, history_test: list) -> dict:
        final = {}
        if not self._interrupt:
            final = {f"test_{k}": v for k, v in self.evaluate(self.data.test_x, self.data.test_y).items()}
            if self.ema is not None:
                final.update({f"test_{k}_no_ema": v for k, v in self.evaluate(self.data.test_x, self.data.test_y, self.model).items()})
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
            "resumed": resumed,
            "nonfinite_losses": self.nonfinite,
            "test_acc_by_train_time": history_test,
            "runtime": self.runtime.describe(),
            "data": self.data.summary(),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "versions": {"trickbag": __version__, "torch": torch.__version__, "python": platform.python_version()},
            "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
            "tensorboard": str(self.out / "tensorboard") if self.tensorboard else "not installed (pip install tensorboard)",
            "out": str(self.out),
            "config": to_dict(self.recipe),
        }
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        return summary


def _model_builder(name: str):
    from trickbag.models import MODELS

    return MODELS.get(name)


def _as_tuple(value: Any) -> Any:
    """``random.setstate`` needs tuples; checkpoints may hold lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


