"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) on a batch, as functions
``(x, y) -> (x_mixed, soft_targets)``.

Each example is mixed with the example a random permutation assigns to it, so any
batch size works, odd ones included (timm#1304 needs an even batch). Randomness comes
from an explicit ``torch.Generator``. CutMix's lambda is corrected to the area actually
pasted after clipping the box to the image.
"""

from __future__ import annotations

import math

import torch

from trickbag._checks import check_positive, check_range
from trickbag.losses.soft_ce import smooth_targets

__all__ = ["mixup", "cutmix", "MixUpCutMix"]


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    """One draw of Beta(alpha, alpha) from two Gamma draws on ``generator``."""
    a = torch._standard_gamma(torch.tensor([alpha, alpha], dtype=torch.float64), generator=generator)
    return float(a[0] / a.sum())


def mixup(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float = 0.2, label_smoothing: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``x' = lam x + (1 - lam) x[perm]``, ``y' = lam q + (1 - lam) q[perm]``, ``lam ~ Beta(alpha, alpha)``.

    Returns ``(x', y', lam)``; ``q`` are the (smoothed) one-hot targets.
    """
    check_positive("alpha", alpha)
    lam = _beta(alpha, generator)
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device, non_blocking=True)  # no stream sync on CUDA
    q = smooth_targets(y, num_classes, label_smoothing)
    return x * lam + x[perm] * (1.0 - lam), q * lam + q[perm] * (1.0 - lam), lam


def cutmix(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float = 1.0, label_smoothing: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Paste a box of area ``(1 - lam) H W`` from ``x[perm]``; targets mixed by the pasted area.

    Returns ``(x', y', lam)`` with ``lam`` the fraction of each image that is its own.
    """
    check_positive("alpha", alpha)
    lam = _beta(alpha, generator)
    h, w = x.shape[-2:]
    cut_h, cut_w = int(h * math.sqrt(1.0 - lam)), int(w * math.sqrt(1.0 - lam))
    cy, cx = (int(v) for v in torch.randint(0, 10**9, (2,), generator=generator))
    cy, cx = cy % h, cx % w
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device, non_blocking=True)  # no stream sync on CUDA
    out = x.clone()
    out[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    q = smooth_targets(y, num_classes, label_smoothing)
    return out, q * lam + q[perm] * (1.0 - lam), lam


class MixUpCutMix:
    """Apply mixup or cutmix to a batch with probability ``prob``; ``(x, y) -> (x, soft_y)``.

    Args:
        num_classes: K.
        mixup_alpha, cutmix_alpha: Beta parameters (0 disables that method).
        prob: probability of mixing a batch at all, in [0, 1].
        switch_prob: probability of cutmix when both are enabled, in [0, 1].
        label_smoothing: eps applied to the targets.
        seed: seed of the private generator.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.2, cutmix_alpha: float = 0.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.0, seed: int = 0) -> None:
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError("at least one of mixup_alpha, cutmix_alpha must be > 0")
        check_range("prob", prob, 0.0, 1.0)
        check_range("switch_prob", switch_prob, 0.0, 1.0)
        self.num_classes, self.mixup_alpha, self.cutmix_alpha = num_classes, mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob, self.label_smoothing = prob, switch_prob, label_smoothing
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.generator
        if float(torch.rand((), generator=g)) >= self.prob:
            return x, smooth_targets(y, self.num_classes, self.label_smoothing).to(x.device)
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or float(torch.rand((), generator=g)) < self.switch_prob)
        fn, alpha = (cutmix, self.cutmix_alpha) if use_cutmix else (mixup, self.mixup_alpha)
        x, q, _ = fn(x, y, self.num_classes, alpha, self.label_smoothing, g)
        return x, q

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
