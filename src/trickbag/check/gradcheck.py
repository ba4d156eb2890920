"""Whole-model gradient check: autograd vs central finite differences, in float64.

On a float64 copy of the model in eval mode (no dropout, fixed BatchNorm statistics),
for ``samples`` randomly chosen entries of every parameter tensor:
``g_num = (L(w + h) - L(w - h)) / 2h`` and the relative error
``|g_auto - g_num| / max(|g_auto|, |g_num|, floor)``. A layer fails when its largest
error exceeds ``tol``. Errors near 1e-10..1e-7 are normal in float64; a wrong backward
gives errors near 1. A ReLU or max-pool kink crossed by ``h`` can give a single
large error: rerun with another ``seed`` before believing one outlier.
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
        worst = 0.0
        for i in idx.tolist():
            orig = float(flat[i])
            flat[i] = orig + step
            up = _loss(m, loss_fn, x, y)
            flat[i] = orig - step
            down = _loss(m, loss_fn, x, y)
            flat[i] = orig
            numeric, auto = (up - down) / (2 * step), float(gflat[i])
            scale = max(abs(numeric), abs(auto), floor)
            worst = max(worst, abs(numeric - auto) / scale if scale > floor else 0.0)
        report.append(GradCheckLayer(name, len(idx), worst, worst <= tol))
    return report
