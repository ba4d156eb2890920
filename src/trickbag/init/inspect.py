"""Inspect an initialization: weight statistics per layer and how a forward pass's
signal propagates through depth (seed 000's ``find_initializer`` histograms, plus the
activation statistics that show vanishing or exploding signals)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from trickbag.init.apply import WEIGHTED_LAYERS, initialize
from trickbag.init.lsuv import LSUVLayer, forward_order, lsuv

__all__ = ["LayerStats", "InitReport", "inspect_init", "apply_init"]


@dataclass(frozen=True)
class LayerStats:
    """Statistics of one conv/linear layer: its weight, and its output on the batch."""

    name: str
    kind: str
    shape: tuple[int, ...]
    weight_mean: float
    weight_std: float
    act_mean: float
    act_std: float
    hist_counts: list[int] = field(repr=False)
    hist_edges: list[float] = field(repr=False)


@dataclass(frozen=True)
class InitReport:
    """Per-layer statistics in forward order, with the init that produced them."""

    init: str
    params: dict[str, Any]
    layers: list[LayerStats]
    lsuv: list[LSUVLayer] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def act_stds(self) -> list[float]:
        return [layer.act_std for layer in self.layers]


def apply_init(
    model: nn.Module, name: str, batch: torch.Tensor | None = None, seed: int | None = 0, **params: Any
) -> list[LSUVLayer] | None:
    """Initialize ``model`` with ``name``; ``"lsuv"`` runs LSUV on ``batch`` (its params:
    ``tol``, ``max_iter``) and returns its report."""
    if name == "lsuv":
        if batch is None:
            raise ValueError("init 'lsuv' needs a batch of inputs")
        return lsuv(model, batch, seed=seed, **params)
    initialize(model, name, seed=seed, **params)
    return None


@torch.no_grad()
def inspect_init(model: nn.Module, batch: torch.Tensor, bins: int = 40) -> list[LayerStats]:
    """Weight and output statistics of every conv/linear layer, in forward order.

    Args:
        model: an initialized model.
        batch: inputs to run (e.g. 256 standardized training images).
        bins: histogram bins of each weight.
    """
    outputs: dict[int, torch.Tensor] = {}

    def keep(module, _inputs, output):
        outputs.setdefault(id(module), output.detach().float())

    layers = forward_order(model, batch, WEIGHTED_LAYERS)
    handles = [m.register_forward_hook(keep) for _, m in layers]
    try:
        model(batch)
    finally:
        for h in handles:
            h.remove()
    stats = []
    for name, module in layers:
        w = module.weight.detach().float()
        out = outputs[id(module)]
        counts, edges = torch.histogram(w.flatten().cpu(), bins=bins)
        stats.append(
            LayerStats(
                name=name,
                kind=type(module).__name__,
                shape=tuple(w.shape),
                weight_mean=float(w.mean()),
                weight_std=float(w.std()),
                act_mean=float(out.mean()),
                act_std=float(out.std()),
                hist_counts=[int(c) for c in counts],
                hist_edges=[float(e) for e in edges],
            )
        )
    return stats
