"""Muon for convolution filters, Nesterov SGD for everything else, in one optimizer.

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers"; airbench94_muon and the
2025 CIFAR-10 speed records) replaces a weight matrix's momentum update by its nearest
semi-orthogonal matrix, computed with a few Newton–Schulz iterations: every direction of
the update moves at the same rate, so rarely-seen directions are not starved. Filters
``(out, in, kh, kw)`` are treated as ``out x (in*kh*kw)`` matrices. As in airbench, each
filter tensor is rescaled to norm ``sqrt(out)`` before its update (the BatchNorm that
follows makes the scale irrelevant, and a fixed scale keeps the effective step fixed).

``torch.optim.Muon`` (torch >= 2.9) takes 2-D parameters only, hence this class. Groups
with ``"muon": True`` get the Muon update; the others plain Nesterov SGD with coupled
weight decay, exactly ``torch.optim.SGD(nesterov=True)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from trickbag._checks import check_nonnegative, check_positive, check_range

__all__ = ["Muon", "newton_schulz"]

#: the quintic iteration's coefficients from Jordan et al. (maximise the slope at 0)
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately ``U V^T`` for ``g = U S V^T`` (the orthogonal polar factor), by the
    quintic Newton–Schulz iteration ``X <- a X + (b A + c A^2) X`` with ``A = X X^T``,
    starting from ``g / ||g||_F``; run in bfloat16 as the reference implementation does
    (the iteration tolerates it and it is several times faster). Returns ``g``'s dtype."""
    a, b, c = NS_COEFFICIENTS
    x = g.bfloat16()
    x = x / (x.norm() + eps)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """See the module docstring.

    Args:
        params: parameters or groups; a group with ``"muon": True`` holds filters (>= 2-D).
        lr: learning rate (each group may set its own, e.g. through ``lr_mult``).
        momentum: Nesterov momentum of the SGD groups, in [0, 1).
        muon_momentum: Nesterov momentum of the Muon groups (airbench: 0.6), in [0, 1).
        weight_decay: coupled L2 of the SGD groups (>= 0); Muon groups keep a fixed norm instead.
        ns_steps: Newton–Schulz iterations (>= 1).
    """

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.9, muon_momentum: float = 0.6,
                 weight_decay: float = 0.0, ns_steps: int = 5) -> None:
        check_nonnegative("lr", lr)
        check_range("momentum", momentum, 0.0, 1.0, high_open=True)
        check_range("muon_momentum", muon_momentum, 0.0, 1.0, high_open=True)
        check_nonnegative("weight_decay", weight_decay)
        check_positive("ns_steps", ns_steps)
        defaults = {"lr": lr, "momentum": momentum, "muon_momentum": muon_momentum, "weight_decay": weight_decay,
                    "ns_steps": int(ns_steps), "muon": False}
        super().__init__(params, defaults)
        for i, group in enumerate(self.param_groups):
            if group["muon"] and any(p.dim() < 2 for p in group["params"]):
                raise ValueError(f"param group {i} is a Muon group but holds a parameter with fewer than 2 dimensions")

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if group["muon"]:
                    mu = group["muon_momentum"]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    buf = state["momentum_buffer"]
                    buf.mul_(mu).add_(grad)
                    update = grad.add(buf, alpha=mu)  # Nesterov
                    p.mul_(p.size(0) ** 0.5 / p.norm().clamp_min(1e-12))
                    p.add_(newton_schulz(update.reshape(p.size(0), -1), group["ns_steps"]).view_as(p), alpha=-lr)
                else:
                    mu, wd = group["momentum"], group["weight_decay"]
                    d_p = grad.add(p, alpha=wd) if wd else grad
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d_p.clone()
                    else:
                        state["momentum_buffer"].mul_(mu).add_(d_p)
                    p.add_(d_p.add(state["momentum_buffer"], alpha=mu), alpha=-lr)
        return loss
