"""Layer-sequential unit-variance initialization (Mishkin & Matas, ICLR 2016).

Algorithm (the paper's): orthonormal init of every conv/linear weight; then, layer by
layer in forward order, run the batch, measure the variance ``v`` of the layer's
output and divide its weight by ``sqrt(v)``, until ``|v - 1| < tol`` or ``max_iter``.
Earlier layers are final before a later one is scaled, so at the end every layer's
output variance on the batch is within ``tol`` of 1 (unless it hit ``max_iter``, which
the report says). Works through forward hooks, so any model that runs the batch
works (keras#3608).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
from torch import nn

from trickbag._checks import check_positive
from trickbag.hooks import forward_hooks
from trickbag.init.apply import WEIGHTED_LAYERS, initialize

__all__ = ["lsuv", "LSUVLayer", "forward_order"]


@dataclass(frozen=True)
class LSUVLayer:
    """One layer's outcome: iterations used, the output variance before and after."""

    name: str
    iterations: int
    initial_variance: float
    variance: float
    converged: bool

    def to_dict(self) -> dict:
        return asdict(self)


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted layer has run."""


def forward_order(model: nn.Module, batch, kinds: tuple[type, ...]) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the modules of ``kinds`` in the order the forward pass first runs them."""
    names = {id(m): n for n, m in model.named_modules()}
    order: dict[int, tuple[str, nn.Module]] = {}
    with forward_hooks([m for m in model.modules() if isinstance(m, kinds)],
                       lambda m, _i, _o: order.setdefault(id(m), (names[id(m)], m))):
        model(batch)
    return list(order.values())


def _run_until(model: nn.Module, batch, stop: nn.Module) -> torch.Tensor:
    """Run the batch and return ``stop``'s output (the pass ends early at that layer)."""
    captured: list[torch.Tensor] = []

    def hook(_m, _i, out):
        captured.append(out.detach())
        raise _Stop

    with contextlib.suppress(_Stop), forward_hooks([stop], hook):
        model(batch)
    if not captured:
        raise RuntimeError(f"layer {stop} did not run in the forward pass")
    return captured[0]


@torch.no_grad()
def lsuv(
    model: nn.Module,
    batch: torch.Tensor,
    tol: float = 0.1,
    max_iter: int = 10,
    orthonormal: bool = True,
    seed: int | None = None,
) -> list[LSUVLayer]:
    """LSUV-initialize ``model`` on ``batch``; returns one ``LSUVLayer`` per conv/linear layer.

    Args:
        model: the model (its train/eval mode is restored afterwards; it is run in train
            mode's BatchNorm statistics only if it is in train mode, so pass an
            ``eval()`` model to keep BN running stats untouched).
        batch: an input batch, e.g. 256 training examples.
        tol: allowed ``|variance - 1|`` (> 0).
        max_iter: scaling iterations per layer (>= 1).
        orthonormal: start from ``orthogonal`` init (the paper); False keeps current weights.
        seed: seed of the orthonormal init.

    Reference: arXiv:1511.06422, Algorithm 1.
    """
    check_positive("tol", tol)
    check_positive("max_iter", max_iter)
    if orthonormal:
        initialize(model, "orthogonal", seed=seed)
    report = []
    for name, layer in forward_order(model, batch, WEIGHTED_LAYERS):
        var = float(_run_until(model, batch, layer).float().var())
        initial, iterations = var, 0
        while abs(var - 1.0) >= tol and iterations < max_iter and var > 0:
            layer.weight.div_(var**0.5)
            iterations += 1
            var = float(_run_until(model, batch, layer).float().var())
        report.append(LSUVLayer(name, iterations, initial, var, abs(var - 1.0) < tol))
    return report
