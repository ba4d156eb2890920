"""Inspect an initialization: weight statistics per layer and how a forward pass's
signal propagates through depth (seed 000's ``find_initializer`` histograms, plus the
activation statistics that show vanishing or exploding signals).

``compare_inits(build, specs, batch)`` runs several inits on fresh copies of one model
and returns one ``InitReport`` each; its ``verdict`` uses the doctor's thresholds
(``trickbag.doctor.rules.activation_explodes``), so ``inspect-init`` and ``doctor``
call the same net exploding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from trickbag._params import parse_params, parse_spec
from trickbag.hooks import forward_hooks
from trickbag.init.apply import WEIGHTED_LAYERS, initialize
from trickbag.init.initializers import INITIALIZERS
from trickbag.init.lsuv import LSUVLayer, forward_order, lsuv

__all__ = ["LayerStats", "InitReport", "inspect_init", "apply_init", "compare_inits", "probe_batch"]


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

    @property
    def label(self) -> str:
        """``he_normal`` or ``random_normal(stddev=0.01)``."""
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.init}({args})" if args else self.init

    @property
    def act_stds(self) -> list[float]:
        return [layer.act_std for layer in self.layers]

    @property
    def verdict(self) -> str:
        """``exploding``/``vanishing`` at the first layer that is (non-finite counts as
        exploding), else ``healthy``; thresholds are the doctor's."""
        from trickbag.doctor.rules import activation_explodes, activation_vanishes

        stds = self.act_stds
        for i, std in enumerate(stds):
            if activation_explodes(std):
                value = f"{std:.3g}" if math.isfinite(std) else f"{std} (overflow)"
                return f"exploding: output std {value} at layer {i + 1} ({self.layers[i].name})"
        for i, std in enumerate(stds[1:], 1):
            if activation_vanishes(std, stds[0]):
                return f"vanishing: output std {std:.2g} at layer {i + 1} ({self.layers[i].name})"
        return f"healthy: output std {stds[-1]:.3g} at layer {len(stds)}" if stds else "healthy: no weighted layers"

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "verdict": self.verdict, **asdict(self)}


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
    layers = forward_order(model, batch, WEIGHTED_LAYERS)
    with forward_hooks([m for _, m in layers], lambda m, _i, out: outputs.setdefault(id(m), out.detach().float())):
        model(batch)
    stats = []
    for name, module in layers:
        # float64 statistics: a float32 sum of large but finite values overflows (weights of std 1e37,
        # outputs of std 1e36), and a finite layer would read as non-finite
        w = module.weight.detach().double()
        out = outputs[id(module)].double()
        finite = w[torch.isfinite(w)].flatten().cpu()
        counts, edges = torch.histogram(finite if finite.numel() else torch.zeros(1), bins=bins)
        stats.append(LayerStats(
            name=name, kind=type(module).__name__, shape=tuple(w.shape),
            weight_mean=float(w.mean()), weight_std=float(w.std()), act_mean=float(out.mean()), act_std=float(out.std()),
            hist_counts=[int(c) for c in counts], hist_edges=[float(e) for e in edges],
        ))
    return stats


def probe_batch(model: nn.Module, batch_size: int, seed: int = 0, image_size: int = 28) -> torch.Tensor:
    """Standard-normal inputs ("standardized data") shaped for ``model``'s first weighted
    layer: ``(B, in_features)`` for a linear one, ``(B, C, image_size, image_size)`` for a
    conv; drawn with a seed distinct from the init's."""
    first = next((m for m in model.modules() if isinstance(m, WEIGHTED_LAYERS)), None)
    if isinstance(first, nn.Linear):
        shape: tuple[int, ...] = (batch_size, first.in_features)
    elif isinstance(first, nn.Conv2d):
        shape = (batch_size, first.in_channels, image_size, image_size)
    else:
        raise ValueError(f"cannot shape a probe batch for a model whose first weighted layer is {type(first).__name__}")
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1_000_003))


def compare_inits(build: Callable[[], nn.Module], specs: Iterable[str], batch: torch.Tensor | None = None,
                  seed: int = 0, batch_size: int = 256) -> list[InitReport]:
    """One ``InitReport`` per init spec (``NAME`` or ``NAME:k=v,k=v``; ``lsuv`` runs LSUV),
    each on a fresh model from ``build()`` and the same ``batch`` (default: a
    ``probe_batch`` of ``batch_size``)."""
    reports = []
    for spec in specs:
        name, pairs = parse_spec(spec)
        target = lsuv if name == "lsuv" else INITIALIZERS.get(name)
        params = parse_params(target, pairs, skip=("tensor", "generator", "model", "batch", "seed"), what=f"init {name!r}")
        model = build()
        if batch is None:
            batch = probe_batch(model, batch_size, seed)
        lsuv_report = apply_init(model, name, batch, seed=seed, **params)
        reports.append(InitReport(name, params, inspect_init(model, batch), lsuv_report))
    return reports
