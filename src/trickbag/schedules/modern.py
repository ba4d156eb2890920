"""Modern schedules: constant, linear/cosine anneals, warmup, step/multistep, cosine with
warmup, one-cycle, cyclic, and the seed's CIFAR presets.

Primitives (``Constant``, ``Linear``, ``CosineAnneal``, ``StepValues``, ``Cyclic``) are
classes; everything else is a factory that composes them with ``join``, so it has
the same exact, closed-form semantics and a config that round-trips.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Literal

from trickbag._checks import check_choice, check_nonnegative, check_positive, check_range
from trickbag.schedules.base import (
    Schedule,
    check_boundaries_values,
    check_lr,
    check_steps,
    register,
)
from trickbag.schedules.compose import Join, warmup
from trickbag.schedules.tf1 import ExponentialDecay

__all__ = [
    "Constant",
    "Linear",
    "CosineAnneal",
    "StepValues",
    "Cyclic",
    "constant",
    "linear_warmup",
    "cosine",
    "linear_decay",
    "one_cycle",
    "cyclic",
    "triangular",
    "step_decay",
    "multistep",
    "cifar_200_epochs",
    "cifar_300_epochs",
]


@register("constant")
@dataclass(frozen=True)
class Constant(Schedule):
    """``lr`` at every step."""

    name = "constant"
    learning_rate: float

    def __post_init__(self) -> None:
        check_lr("learning_rate", self.learning_rate)

    def _value(self, step: float) -> float:
        return self.learning_rate


@dataclass(frozen=True)
class _Anneal(Schedule):
    """Fields and checks shared by the anneals from ``start_lr`` to ``end_lr`` over ``steps``."""

    start_lr: float
    end_lr: float
    steps: float

    def __post_init__(self) -> None:
        check_lr("start_lr", self.start_lr)
        check_lr("end_lr", self.end_lr)
        check_steps("steps", self.steps)


@register("linear")
@dataclass(frozen=True)
class Linear(_Anneal):
    """Linear anneal ``start + (end - start) * min(step, steps) / steps``; holds ``end`` after.

    Args:
        start_lr, end_lr: lrs at step 0 and at ``steps`` (>= 0).
        steps: length of the ramp (> 0).
    """

    name = "linear"

    def _value(self, step: float) -> float:
        f = min(step, self.steps) / self.steps
        return self.start_lr * (1.0 - f) + self.end_lr * f  # exact at both ends


@register("cosine_anneal")
@dataclass(frozen=True)
class CosineAnneal(_Anneal):
    """Half-cosine anneal ``end + (start - end) * (1 + cos(pi * min(step, steps) / steps)) / 2``.

    Args:
        start_lr, end_lr: lrs at step 0 and at ``steps`` (>= 0).
        steps: length of the anneal (> 0).
    """

    name = "cosine_anneal"

    def _value(self, step: float) -> float:
        w = 0.5 * (1.0 + math.cos(math.pi * min(step, self.steps) / self.steps))
        return self.start_lr * w + self.end_lr * (1.0 - w)  # exact at both ends


@register("step_values")
@dataclass(frozen=True)
class StepValues(Schedule):
    """``values[i]`` from ``milestones[i-1]`` on: the value switches *at* each milestone.

    This is PyTorch's ``MultiStepLR`` convention (and "lr for epoch < 60" in the seed's
    tables); TF's ``piecewise_constant`` switches one step later.

    Args:
        milestones: strictly increasing steps (> 0).
        values: ``len(milestones) + 1`` lrs (>= 0).
    """

    name = "step_values"
    milestones: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        milestones, values = check_boundaries_values("milestones", self.milestones, self.values, first_above=0.0)
        object.__setattr__(self, "milestones", milestones)
        object.__setattr__(self, "values", values)

    def _value(self, step: float) -> float:
        return self.values[bisect.bisect_right(self.milestones, step)]


CyclicMode = Literal["triangular", "triangular2", "exp_range"]


@register("cyclic")
@dataclass(frozen=True)
class Cyclic(Schedule):
    """Cyclical learning rate (Smith 2017), closed form.

    With ``C = up + down`` and ``x = step / C - floor(step / C)``, the height is
    ``x / r`` rising and ``(1 - x) / (1 - r)`` falling (``r = up / C``);
    ``lr = base + (max - base) * height * g`` with ``g = 1`` (triangular),
    ``1 / 2**floor(step / C)`` (triangular2) or ``gamma**step`` (exp_range).

    Args:
        base_lr, max_lr: bottom and top of each cycle (>= 0).
        step_size_up: steps from bottom to top (> 0).
        step_size_down: steps from top to bottom (> 0; default ``step_size_up``).
        mode: ``triangular``, ``triangular2`` or ``exp_range``.
        gamma: per-step decay of the amplitude in ``exp_range``, in (0, 1].

    Reference: arXiv:1506.01186; ``torch.optim.lr_scheduler.CyclicLR``.
    """

    name = "cyclic"
    base_lr: float
    max_lr: float
    step_size_up: float
    step_size_down: float | None = None
    mode: CyclicMode = "triangular"
    gamma: float = 1.0

    def __post_init__(self) -> None:
        check_lr("base_lr", self.base_lr)
        check_lr("max_lr", self.max_lr)
        check_steps("step_size_up", self.step_size_up)
        if self.step_size_down is not None:
            check_steps("step_size_down", self.step_size_down)
        check_choice("mode", self.mode, ("triangular", "triangular2", "exp_range"))
        check_range("gamma", self.gamma, 0.0, 1.0, low_open=True)

    def _value(self, step: float) -> float:
        up = self.step_size_up
        down = up if self.step_size_down is None else self.step_size_down
        period = up + down
        cycle = math.floor(step / period)
        x = step / period - cycle
        ratio = up / period
        height = x / ratio if x <= ratio else (1.0 - x) / (1.0 - ratio)
        if self.mode == "triangular2":
            height *= 0.5**cycle  # underflows to 0 at huge steps instead of overflowing
        elif self.mode == "exp_range":
            height *= self.gamma**step
        return self.base_lr + (self.max_lr - self.base_lr) * height


def constant(learning_rate: float) -> Constant:
    """``learning_rate`` at every step."""
    return Constant(learning_rate)



def linear_warmup(learning_rate: float, warmup_steps: float, start_lr: float = 0.0) -> Linear:
    """Gradual warmup ``start_lr + (lr - start_lr) * t / m`` for ``t < m``, then ``lr``.

    Goyal et al. 2017: with ``start_lr=0`` the lr at step ``t`` is ``lr * t / m``.
    To warm up into another schedule use ``warmup(schedule, m)``.

    Args:
        learning_rate: lr reached at ``warmup_steps`` and held after (>= 0).
        warmup_steps: ``m`` (> 0).
        start_lr: lr at step 0 (>= 0).

    Reference: arXiv:1706.02677, sec. 2.2.
    """
    return Linear(start_lr, learning_rate, warmup_steps)


def cosine(
    learning_rate: float,
    total_steps: float,
    warmup_steps: float = 0,
    final_lr: float = 0.0,
    warmup_start_lr: float = 0.0,
) -> Schedule:
    """Linear warmup then a half-cosine down to ``final_lr`` at ``total_steps``.

    ``t < m``: ``warmup_start_lr + (lr - warmup_start_lr) * t / m``; then
    ``final + (lr - final) * (1 + cos(pi * (t - m) / (T - m))) / 2``; ``final`` after ``T``.
    ``total_steps`` counts the warmup, and the lr reaches ``final_lr`` exactly at ``T``
    (timm's ``warmup_prefix`` trap, pytorch-image-models#1242, cannot happen).

    Args:
        learning_rate: peak lr (>= 0).
        total_steps: ``T``, whole length including warmup (> 0).
        warmup_steps: ``m``, in [0, T).
        final_lr: lr at and after ``T`` (>= 0).
        warmup_start_lr: lr at step 0 when warming up (>= 0).

    Example: ``cosine(0.1, 10_000, warmup_steps=500, final_lr=1e-4)``.
    Reference: arXiv:1608.03983; Bag of Tricks (arXiv:1812.01187) sec. 5.1.
    """
    return _warmup_then_anneal(CosineAnneal, learning_rate, total_steps, warmup_steps, final_lr, warmup_start_lr)


def linear_decay(learning_rate: float, total_steps: float, warmup_steps: float = 0, final_lr: float = 0.0,
                 warmup_start_lr: float = 0.0) -> Schedule:
    """Linear warmup then a straight line down to ``final_lr`` at ``total_steps``.

    ``t < m``: ``warmup_start_lr + (lr - warmup_start_lr) * t / m``; then
    ``lr + (final - lr) * (t - m) / (T - m)``; ``final`` after ``T``. Arguments and checks
    as ``cosine``'s, so a recipe switches between the two by name. airbench's schedule;
    linear decay to zero matches or beats cosine at every budget in Defazio et al. 2023.

    Example: ``linear_decay(0.2, 4_700, warmup_steps=94)``.
    Reference: arXiv:2310.07831 ("When, Why and How Much?", Defazio et al. 2023); Keller Jordan's airbench (2024).
    """
    return _warmup_then_anneal(Linear, learning_rate, total_steps, warmup_steps, final_lr, warmup_start_lr)


def _warmup_then_anneal(anneal: type, learning_rate: float, total_steps: float, warmup_steps: float, final_lr: float,
                        warmup_start_lr: float) -> Schedule:
    """``warmup`` over ``m`` steps into ``anneal(lr, final_lr, T - m)``, with the range checks."""
    check_steps("total_steps", total_steps)
    check_range("warmup_steps", warmup_steps, 0.0, total_steps, high_open=True)
    return warmup(anneal(learning_rate, final_lr, total_steps - warmup_steps), warmup_steps, warmup_start_lr)


def one_cycle(
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    anneal: Literal["cos", "linear"] = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> Join:
    """One-cycle policy (Smith 2018), with PyTorch ``OneCycleLR``'s phase boundaries.

    ``initial = max_lr / div_factor``, ``min = initial / final_div_factor``. Up from
    ``initial`` to ``max_lr`` over ``u = pct_start * T - 1`` steps, then down to ``min`` at
    step ``T - 1`` (``three_phase``: down to ``initial`` at ``2u``, then to ``min``). After
    ``T - 1`` it holds ``min`` instead of raising (PyTorch "Tried to step N times").

    Args:
        max_lr: peak lr (> 0).
        total_steps: ``T`` (>= 2).
        pct_start: fraction of steps spent rising, in (0, 1) (0.5 max for three_phase).
        anneal: ``cos`` or ``linear`` ramps.
        div_factor, final_div_factor: as above (>= 1).
        three_phase: the fast.ai/Smith three-phase variant.

    Reference: arXiv:1803.09820; ``torch.optim.lr_scheduler.OneCycleLR``.
    """
    check_positive("max_lr", max_lr)
    check_range("total_steps", total_steps, 2.0, math.inf)
    check_range("pct_start", pct_start, 0.0, 0.5 if three_phase else 1.0, low_open=True, high_open=True)
    check_choice("anneal", anneal, ("cos", "linear"))
    check_range("div_factor", div_factor, 1.0, math.inf)
    check_range("final_div_factor", final_div_factor, 1.0, math.inf)
    up = pct_start * total_steps - 1.0
    if up <= 0:
        raise ValueError(
            f"pct_start * total_steps must be > 1 step, got {pct_start} * {total_steps} = {pct_start * total_steps}"
        )
    ramp = CosineAnneal if anneal == "cos" else Linear
    initial = max_lr / div_factor
    floor = initial / final_div_factor
    last = total_steps - 1.0
    if three_phase:
        return Join((ramp(initial, max_lr, up), ramp(max_lr, initial, up), ramp(initial, floor, last - 2 * up)), (up, 2 * up))
    return Join((ramp(initial, max_lr, up), ramp(max_lr, floor, last - up)), (up,))


def cyclic(
    base_lr: float,
    max_lr: float,
    step_size_up: float,
    step_size_down: float | None = None,
    mode: CyclicMode = "triangular",
    gamma: float = 1.0,
) -> Cyclic:
    """Cyclical lr; see ``Cyclic``."""
    return Cyclic(base_lr, max_lr, step_size_up, step_size_down, mode, gamma)


def triangular(base_lr: float, max_lr: float, step_size_up: float) -> Cyclic:
    """Smith's triangular policy: ``cyclic(base_lr, max_lr, step_size_up)``."""
    return Cyclic(base_lr, max_lr, step_size_up)


def step_decay(learning_rate: float, step_size: float, gamma: float = 0.1) -> ExponentialDecay:
    """``lr * gamma ** floor(step / step_size)`` (PyTorch ``StepLR``), i.e.
    ``exponential_decay(lr, step_size, gamma, staircase=True)``."""
    return ExponentialDecay(learning_rate, step_size, gamma, staircase=True)


def multistep(learning_rate: float, milestones: tuple[float, ...], gamma: float = 0.1,
              warmup_steps: float = 0) -> Schedule:
    """``lr * gamma ** (number of milestones <= step)`` (PyTorch ``MultiStepLR``); with
    ``warmup_steps = m > 0``, a linear warmup from 0 over the first ``m`` steps first
    (``lr * t / m``), the milestones staying steps of the whole run (Bag of Tricks' baseline
    with warmup: 5 epochs up, then /10 at epochs 30, 60, 90).

    Args:
        learning_rate: lr before the first milestone (>= 0).
        milestones: strictly increasing steps (> 0, and > ``warmup_steps``) where the lr is
            multiplied by gamma.
        gamma: factor per milestone, in (0, 1].
        warmup_steps: ``m`` (>= 0).

    Reference: Goyal et al. 2017 (warmup); He et al. 2019 (arXiv:1812.01187) sec. 3.1.
    """
    check_lr("learning_rate", learning_rate)
    check_range("gamma", gamma, 0.0, 1.0, low_open=True)
    check_nonnegative("warmup_steps", warmup_steps)
    milestones = tuple(milestones)
    if warmup_steps and milestones and milestones[0] <= warmup_steps:
        raise ValueError(f"milestones must be > warmup_steps ({warmup_steps}), got {milestones}")
    values = tuple(learning_rate * gamma**i for i in range(len(milestones) + 1))
    # the warmup shifts what follows by m steps: shift the milestones back so they stay steps of the run
    return warmup(StepValues(tuple(m - warmup_steps for m in milestones), values), warmup_steps)


def _epoch_steps(steps_per_epoch: int, epochs: tuple[int, ...], values: tuple[float, ...]) -> StepValues:
    check_positive("steps_per_epoch", steps_per_epoch)
    return StepValues(tuple(e * steps_per_epoch for e in epochs), values)


def cifar_200_epochs(steps_per_epoch: int) -> StepValues:
    """The seed's CIFAR preset (batch 128, Nesterov 0.9): lr 0.1, 0.02, 0.004, 0.0008 for
    epochs [0, 60), [60, 120), [120, 160), [160, 200).

    Args:
        steps_per_epoch: optimizer steps per epoch (> 0), e.g. ``ceil(50_000 / 128) = 391``.

    Reference: Pereyra et al. 2017 (arXiv:1701.06548), via seed 000.
    """
    return _epoch_steps(steps_per_epoch, (60, 120, 160), (0.1, 0.02, 0.004, 0.0008))


def cifar_300_epochs(steps_per_epoch: int) -> StepValues:
    """The seed's second CIFAR preset (batch 128, Nesterov 0.9): lr 0.1, 0.01, 0.001 for
    epochs [0, 150), [150, 225), [225, 300).

    Args:
        steps_per_epoch: optimizer steps per epoch (> 0).
    """
    return _epoch_steps(steps_per_epoch, (150, 225), (0.1, 0.01, 0.001))


for _name, _fn in {
    "linear_warmup": linear_warmup,
    "cosine": cosine,
    "linear_decay": linear_decay,
    "one_cycle": one_cycle,
    "triangular": triangular,
    "step_decay": step_decay,
    "multistep": multistep,
    "cifar_200_epochs": cifar_200_epochs,
    "cifar_300_epochs": cifar_300_epochs,
}.items():
    register(_name)(_fn)
