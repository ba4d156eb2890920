"""Losses: one soft-target cross-entropy (indices or probabilities, label smoothing,
class weights, ignore_index), mixup / cutmix, and knowledge distillation.

Augmentation that mixes labels (mixup, cutmix) returns *soft targets*; the loss only
needs to accept them (torchvision PR#4907: keep augmentation separate from the loss).
"""

from trickbag.losses.distill import distillation_loss
from trickbag.losses.mix import MixUpCutMix, cutmix, mixup
from trickbag.losses.soft_ce import (
    SoftTargetCrossEntropy,
    smooth_targets,
    soft_target_cross_entropy,
)

__all__ = [
    "soft_target_cross_entropy",
    "smooth_targets",
    "SoftTargetCrossEntropy",
    "mixup",
    "cutmix",
    "MixUpCutMix",
    "distillation_loss",
]
