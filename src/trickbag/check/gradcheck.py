"""Whole-model gradient check: autograd vs central finite differences, in float64.

On a float64 copy of the model in eval mode (no dropout, fixed BatchNorm statistics),
for ``samples`` randomly chosen entries of every parameter tensor:
``g_num = (L(w + h) - L(w - h)) / 2h`` and the relative error
``|g_auto - g_num| / max(|g_auto|, |g_num|, rel_floor * max|g_auto of the tensor|, floor)``.
A layer fails when its largest error exceeds ``tol``. Errors near 1e-10..1e-7 are normal
in float64; a wrong backward gives errors near 1.

Two false alarms are designed out. An entry whose gradient is thousands of times smaller
than its tensor's largest is measured against ``rel_floor`` of that largest (float64
round-off in the two losses, ~1e-16 * L / h, would otherwise dominate its own tiny
value). An entry that fails at ``h`` is retried at ``10h`` and ``h/10`` and keeps its
smallest error: a ReLU or max-pool kink crossed by one step size is not crossed by all
three, while a wrong backward is wrong at every step size.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from trickbag._checks import check_positive

__all__ = ["GradCheckLayer", "gradient_check"]


@dataclass(frozen=True)
class GradCheckLayer:
    name: str
    checked: int
    max_rel_error: float
    passed: bool


@torch.no_grad()
def _loss(model: nn.Module, loss_fn, x, y) -> float:
    return float(loss_fn(model(x), y))


def _entry_error(m: nn.Module, loss_fn, x, y, flat: torch.Tensor, i: int, auto: float, h: float, floor: float,
                 tensor_floor: float) -> float:
    """Relative error of autograd's ``auto`` against the central difference at step ``h``."""
    orig = float(flat[i])
    flat[i] = orig + h
    up = _loss(m, loss_fn, x, y)
    flat[i] = orig - h
    down = _loss(m, loss_fn, x, y)
    flat[i] = orig
    numeric = (up - down) / (2 * h)
    if max(abs(numeric), abs(auto)) < floor:
        return 0.0  # both vanish: equal
    return abs(numeric - auto) / max(abs(numeric), abs(auto), tensor_floor)


def gradient_check(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
    samples: int = 8,
    step: float = 1e-6,
    tol: float = 1e-4,
    seed: int = 0,
    floor: float = 1e-10,
    rel_floor: float = 1e-3,
) -> list[GradCheckLayer]:
    """Check every parameter tensor of ``model`` on one batch; the caller's model is not touched.

    Args:
        model: any ``nn.Module`` (a float64 CPU copy is checked).
        inputs, targets: one (small) batch.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``.
        samples: entries checked per parameter tensor (>= 1).
        step: the finite-difference step ``h`` (> 0).
        tol: the largest relative error that passes (> 0).
        seed: which entries are sampled.
        floor: gradients smaller than this in both estimates count as equal.
        rel_floor: errors are relative to at least this fraction of the tensor's largest
            autograd gradient (0 disables).
    """
    check_positive("samples", samples)
    check_positive("step", step)
    check_positive("tol", tol)
    m = copy.deepcopy(model).double().cpu().eval().to(memory_format=torch.contiguous_format)  # flat views below
    x = inputs.detach().double().cpu() if inputs.is_floating_point() else inputs.detach().cpu()
    y = targets.detach().cpu()
    m.zero_grad(set_to_none=True)
    loss_fn(m(x), y).backward()
    g = torch.Generator().manual_seed(seed)
    report = []
    for name, p in m.named_parameters():
        if not p.requires_grad:
            continue
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        flat, gflat = p.data.view(-1), grad.view(-1)
        idx = torch.randperm(flat.numel(), generator=g)[: min(samples, flat.numel())]
        tensor_floor = max(floor, rel_floor * float(gflat.abs().max())) if gflat.numel() else floor
        worst = 0.0
        for i in idx.tolist():
            auto = float(gflat[i])
            error = _entry_error(m, loss_fn, x, y, flat, i, auto, step, floor, tensor_floor)
            if error > tol:  # a kink crossed at this step size is not crossed at all three
                error = min(error, *(_entry_error(m, loss_fn, x, y, flat, i, auto, h, floor, tensor_floor) for h in (step * 10, step / 10)))
            worst = max(worst, error)
        report.append(GradCheckLayer(name, len(idx), worst, worst <= tol))
    return report
