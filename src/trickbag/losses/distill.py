"""Knowledge distillation (Hinton et al. 2015; Bag of Tricks sec. 5.3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trickbag._checks import check_positive, check_range
from trickbag.losses.soft_ce import soft_target_cross_entropy

__all__ = ["distillation_loss", "DistillationLoss"]


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.5,
    temperature: float = 4.0,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``(1 - alpha) CE(student, target) + alpha T^2 KL(p_T^teacher || p_T^student)``.

    ``p_T = softmax(z / T)``; the KL is averaged over the batch (``batchmean``: the true
    KL per example, not per element); ``T^2`` keeps the soft term's gradients on the scale
    of the hard term's as T changes (Hinton et al. 2015, sec. 2).

    Args:
        student_logits, teacher_logits: (N, K); the teacher's are detached.
        target: (N,) indices or (N, K) probabilities for the hard term.
        alpha: weight of the soft term, in [0, 1].
        temperature: T > 0 (Bag of Tricks uses 20).
        label_smoothing: eps of the hard term.

    Bag of Tricks (sec. 5.3) writes the loss as ``CE(p, softmax(z)) + T^2 CE(softmax(r/T),
    softmax(z/T))``: equal weights, and cross-entropy where we write KL (they differ by the
    teacher's entropy, a constant: same gradients). That is twice this loss at alpha = 0.5.
    """
    check_range("alpha", alpha, 0.0, 1.0)
    check_positive("temperature", temperature)
    t = float(temperature)
    log_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_teacher = F.log_softmax(teacher_logits.detach().float() / t, dim=1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    hard = soft_target_cross_entropy(student_logits, target, label_smoothing)
    return (1.0 - alpha) * hard + alpha * t * t * kl


@dataclass(frozen=True)
class DistillationLoss:
    """The recipe's loss when distilling: ``loss(student_logits, target, teacher_logits)``."""

    alpha: float
    temperature: float
    label_smoothing: float = 0.0

    def __call__(self, student_logits: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        return distillation_loss(student_logits, teacher_logits, target, self.alpha, self.temperature, self.label_smoothing)
