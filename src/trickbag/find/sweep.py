"""The LR range test (Smith 2017; seed 002) with exact restore of everything it touches.

The lr rises once per *optimizer update* (``accumulation_steps`` batches each), from
``start_lr`` to ``end_lr``, exponentially (``mode="exp"``) or linearly. The recorded loss
is an exponential moving average with bias correction,
``avg_t = beta avg_{t-1} + (1 - beta) loss_t``, ``smoothed_t = avg_t / (1 - beta^t)``.
The test stops when the smoothed loss exceeds ``diverge`` x its best, or a loss is not
finite (that point is not recorded).

No side effects: the model's parameters and buffers (BatchNorm statistics included),
the optimizer's state and param-group lrs, the GradScaler and the torch/Python RNG
states are copied in memory first and restored bitwise afterwards, even on an
exception (pytorch-lr-finder#11, Lightning#12670). AMP is explicit: ``amp=None`` runs
in fp32 whatever the hardware (pytorch-lr-finder#90).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trickbag._checks import check_choice, check_positive, check_range
from trickbag.find.rules import DEFAULT_RULE, RULES, Suggestion, suggest
from trickbag.rng import rng_state, set_rng_state

__all__ = ["LRFinderResult", "lr_range_test", "parts_range_test", "parts_batches", "descending_trials", "SavedState"]


@dataclass
class LRFinderResult:
    """Learning rates tried, their smoothed (and raw) losses, and why the test stopped."""

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float] = field(default_factory=list)
    stopped: str = ""

    def suggestion(self, rule: str = DEFAULT_RULE) -> Suggestion:
        """The lr rule ``rule`` picks (``fall``, ``valley``, ``steepest``, ``minimum``, ``consensus``), with a reason."""
        return suggest(self.lrs, self.losses, rule)

    def suggestions(self) -> dict[str, Suggestion]:
        return {name: self.suggestion(name) for name in ("fall", "valley", "steepest", "minimum", "consensus")}

    def to_schedule(self, kind: str = "one_cycle", total_steps: int = 1000, rule: str = DEFAULT_RULE, warmup_steps: int = 0):
        """A schedule peaking at the suggested lr: ``one_cycle`` or ``cosine`` (with warmup)."""
        from trickbag import schedules as S

        check_choice("kind", kind, ("one_cycle", "cosine"))
        lr = self.suggestion(rule).lr
        if kind == "one_cycle":
            return S.one_cycle(lr, total_steps)
        return S.cosine(lr, total_steps, warmup_steps=warmup_steps)

    def to_dict(self) -> dict[str, Any]:
        return {"lrs": self.lrs, "losses": self.losses, "raw_losses": self.raw_losses, "stopped": self.stopped,
                "suggestions": {k: vars(v) for k, v in self.suggestions().items()} if len(self.lrs) >= 3 else {}}

    def plot(self, path: str, rules: Iterable[str] = ("fall", "valley", "steepest", "minimum", "consensus")) -> str:
        from trickbag.report.plots import _pyplot, save_figure

        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(self.lrs, self.losses, lw=1.5, label="smoothed loss")
        for rule in rules:
            s = self.suggestion(rule)
            ax.axvline(s.lr, ls="--", lw=1, label=f"{rule}: {s.lr:.2g}", color=f"C{list(RULES).index(rule) % 9 + 1}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        path = save_figure(fig, path, "lr_finder.png")
        plt.close(fig)
        return path


class SavedState:
    """Context manager: snapshot model, optimizer, scaler and RNG states; restore on exit."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any = None) -> None:
        self.model, self.optimizer, self.scaler = model, optimizer, scaler

    def __enter__(self) -> SavedState:
        self.model_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.optim_state = copy.deepcopy(self.optimizer.state_dict())
        self.lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.scaler_state = copy.deepcopy(self.scaler.state_dict()) if self.scaler is not None else None
        self.rng = rng_state()
        self.training = self.model.training
        return self

    def restore(self) -> None:
        self.model.load_state_dict(self.model_state)
        self.optimizer.load_state_dict(copy.deepcopy(self.optim_state))
        for g, lr in zip(self.optimizer.param_groups, self.lrs):
            g["lr"] = lr
        if self.scaler is not None:
            self.scaler.load_state_dict(copy.deepcopy(self.scaler_state))
        set_rng_state(self.rng)
        self.model.train(self.training)
        self.optimizer.zero_grad(set_to_none=True)

    def __exit__(self, *exc: object) -> None:
        self.restore()


def group_ratios(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each group's lr relative to the largest, kept during the sweep: from the groups'
    ``lr_mult`` (trickbag's convention, which ``ScheduledLR`` applies; a group without one
    has 1) when any group has one, else from their current lrs (all 1 when those are 0)."""
    groups = optimizer.param_groups
    if any("lr_mult" in g for g in groups):
        values = [float(g.get("lr_mult", 1.0)) for g in groups]
    else:
        values = [g["lr"] for g in groups]
    top = max(values)
    return [v / top if top > 0 else 1.0 for v in values]


def _batches(loader: Iterable):
    """Cycle through ``loader`` for as long as needed (a fresh iterator when it ends)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("loader yielded no batches")


def lr_range_test(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    loader: Iterable,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_iter: int = 100,
    mode: str = "exp",
    smooth: float = 0.98,
    diverge: float = 4.0,
    accumulation_steps: int = 1,
    amp: str | None = None,
    scaler: Any = None,
    device: torch.device | str | None = None,
) -> LRFinderResult:
    """Run the LR range test; see the module docstring.

    Args:
        model, loss_fn, optimizer: what you will train with; all restored afterwards.
        loader: an iterable of ``(inputs, targets)`` batches (re-iterated if it runs out).
        start_lr, end_lr: the sweep's ends (0 < start < end).
        num_iter: optimizer updates in the sweep (>= 3).
        mode: ``exp`` (log-spaced, the default) or ``linear``.
        smooth: beta of the loss EMA, in [0, 1).
        diverge: stop when the smoothed loss exceeds this many times its best (> 1).
        accumulation_steps: batches per optimizer update (gradients averaged).
        amp: ``None`` (fp32), ``"bf16"`` or ``"fp16"`` autocast, explicitly.
        scaler: a ``GradScaler`` for fp16 (restored afterwards too).
        device: where to move batches (default: the model's device).
    """
    check_positive("start_lr", start_lr)
    check_range("end_lr", end_lr, start_lr, math.inf, low_open=True)
    check_range("num_iter", num_iter, 3, math.inf)
    check_choice("mode", mode, ("exp", "linear"))
    check_range("smooth", smooth, 0.0, 1.0, high_open=True)
    check_range("diverge", diverge, 1.0, math.inf, low_open=True)
    check_range("accumulation_steps", accumulation_steps, 1, math.inf)
    if amp is not None:
        check_choice("amp", amp, ("bf16", "fp16"))
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")
    ratios = group_ratios(optimizer)
    lrs, losses, raw = [], [], []
    avg, best, stopped = 0.0, math.inf, f"completed {num_iter} updates"
    batches = _batches(loader)
    with SavedState(model, optimizer, scaler):
        model.train()
        for i in range(num_iter):
            t = i / (num_iter - 1)
            lr = start_lr * (end_lr / start_lr) ** t if mode == "exp" else start_lr + (end_lr - start_lr) * t
            for g, r in zip(optimizer.param_groups, ratios):
                g["lr"] = lr * r
            total = 0.0
            for _ in range(accumulation_steps):
                x, y = next(batches)
                x, y = x.to(device), y.to(device)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    loss = loss_fn(model(x), y) / accumulation_steps
                (scaler.scale(loss) if scaler is not None else loss).backward()
                total += float(loss.detach())
            if not math.isfinite(total):
                stopped = f"loss not finite at lr {lr:.3g} (update {i})"
                break
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            avg = smooth * avg + (1 - smooth) * total
            smoothed = avg / (1 - smooth ** (i + 1))
            lrs.append(lr)
            losses.append(smoothed)
            raw.append(total)
            best = min(best, smoothed)
            if smoothed > diverge * best:
                stopped = f"smoothed loss {smoothed:.4g} > {diverge} x best {best:.4g} at lr {lr:.3g} (update {i})"
                break
    return LRFinderResult(lrs, losses, raw, stopped)


def descending_trials(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    loader: Iterable,
    lrs: Iterable[float] = (1.0, 0.1, 0.01, 0.001, 0.0001),
    steps: int = 50,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Seed 002's "descending trial": a short run at each lr from the same starting state;
    the best is the lr with the lowest mean loss over the last quarter of its run.

    Returns ``{"best_lr", "results": {lr: final mean loss or inf}}``; model and optimizer are
    restored.
    """
    check_range("steps", steps, 4, math.inf)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    results: dict[float, float] = {}
    for lr in lrs:
        check_positive("lrs", lr)
        with SavedState(model, optimizer):
            for g in optimizer.param_groups:
                g["lr"] = lr
            batches, tail = _batches(loader), []
            for i in range(steps):
                x, y = next(batches)
                loss = loss_fn(model(x.to(device)), y.to(device))
                if not torch.isfinite(loss):
                    tail = [math.inf]
                    break
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if i >= steps * 3 // 4:
                    tail.append(float(loss.detach()))
            results[lr] = sum(tail) / len(tail)
    best = min(results, key=results.__getitem__)
    return {"best_lr": best, "results": results}


def parts_batches(parts: Any, num_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``num_batches`` training batches of a recipe's ``Parts`` (or a ``Trainer``), augmented
    and standardized as in training, in an order and with augmentation seeded by the
    recipe's seed; fewer if the data runs out."""
    data, bs, seed = parts.data, parts.batch_size, parts.recipe.train.seed
    order = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(seed))
    augment_gen = torch.Generator().manual_seed(seed)
    batches = [order[i : i + bs] for i in range(0, min(len(order), bs * num_batches) - bs + 1, bs)]
    return [(parts.inputs(data.train_x[idx], True, augment_gen, index=idx), data.train_y[idx].to(parts.device)) for idx in batches]


def parts_range_test(parts: Any, start_lr: float = 1e-7, end_lr: float = 10.0, num_iter: int = 100, **kwargs: Any) -> LRFinderResult:
    """``lr_range_test`` on a recipe's ``Parts`` (``recipes.build``; a ``Trainer`` works too):
    its model, optimizer, data and loss (label smoothing included), with its precision and
    GradScaler. The parts are left exactly as they were."""
    amp = parts.runtime.precision if parts.runtime.precision != "fp32" else None
    return lr_range_test(parts.model, lambda z, y: parts.loss_fn(z.float(), y), parts.optimizer,
                         parts_batches(parts, num_iter), start_lr=start_lr, end_lr=end_lr, num_iter=num_iter, amp=amp,
                         scaler=parts.scaler if parts.scaler.is_enabled() else None, **kwargs)
