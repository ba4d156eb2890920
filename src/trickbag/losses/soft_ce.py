"""Soft-target cross-entropy with label smoothing, class weights and ignore_index.

For logits ``z`` (N, K), ``log p = log_softmax(z)`` and a target distribution ``q``:

    loss_i = - sum_k w_k q_ik log p_ik

* class-index targets ``y``: ``q = (1 - eps) onehot(y) + eps / K`` (Szegedy et al. 2016;
  seed 000: ``p' = p (1 - eps) + eps / K``); ``mean`` divides by ``sum_i w_{y_i}`` over the
  non-ignored samples, as PyTorch's ``cross_entropy`` does; samples with
  ``y == ignore_index`` contribute nothing, smoothing term included (pytorch#73205);
* probability targets ``q`` (N, K) (mixup, cutmix, distillation): smoothed the same way
  if ``label_smoothing > 0``; ``mean`` divides by N.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trickbag._checks import check_choice, check_range

__all__ = ["soft_target_cross_entropy", "smooth_targets", "SoftTargetCrossEntropy"]


def smooth_targets(target: torch.Tensor, num_classes: int, eps: float = 0.0) -> torch.Tensor:
    """Class indices (N,) or probabilities (N, K) -> smoothed probabilities (N, K)."""
    check_range("label_smoothing", eps, 0.0, 1.0)
    q = F.one_hot(target.long(), num_classes).float() if target.dim() == 1 else target.float()
    return q * (1.0 - eps) + eps / num_classes if eps else q


def soft_target_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    label_smoothing: float = 0.0,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy against class indices or a target distribution; see the module docstring.

    Args:
        logits: (N, K) unnormalized scores.
        target: (N,) class indices or (N, K) probabilities (rows summing to 1).
        label_smoothing: eps in [0, 1].
        weight: (K,) class weights.
        ignore_index: index targets equal to it are left out (index targets only).
        reduction: ``mean``, ``sum`` or ``none``.
    """
    check_range("label_smoothing", label_smoothing, 0.0, 1.0)
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, K), got shape {tuple(logits.shape)}")
    n, k = logits.shape
    logp = F.log_softmax(logits.float(), dim=1)
    w = torch.ones(k, device=logits.device) if weight is None else weight.to(logits.device, torch.float32)
    if target.dim() == 1:
        if target.shape[0] != n:
            raise ValueError(f"target must have {n} entries, got {target.shape[0]}")
        keep = target != ignore_index
        safe = torch.where(keep, target, torch.zeros_like(target))
        if bool(((safe < 0) | (safe >= k)).any()):
            raise ValueError(f"target class indices must be in [0, {k}) or ignore_index={ignore_index}")
        q = smooth_targets(safe, k, label_smoothing)
        per_sample = -(q * w * logp).sum(dim=1) * keep
        denom = (w[safe] * keep).sum()
    else:
        if target.shape != logits.shape:
            raise ValueError(f"probability targets must have the logits' shape {tuple(logits.shape)}, got {tuple(target.shape)}")
        q = smooth_targets(target, k, label_smoothing)
        per_sample = -(q * w * logp).sum(dim=1)
        denom = torch.tensor(float(n), device=logits.device)
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.sum() / denom.clamp_min(torch.finfo(torch.float32).tiny)


class SoftTargetCrossEntropy(nn.Module):
    """``nn.Module`` wrapper of ``soft_target_cross_entropy``."""

    def __init__(self, label_smoothing: float = 0.0, weight: torch.Tensor | None = None, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__()
        check_range("label_smoothing", label_smoothing, 0.0, 1.0)
        check_choice("reduction", reduction, ("mean", "sum", "none"))
        self.label_smoothing, self.ignore_index, self.reduction = label_smoothing, ignore_index, reduction
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_target_cross_entropy(logits, target, self.label_smoothing, self.weight, self.ignore_index, self.reduction)
