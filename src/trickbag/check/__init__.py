"""Checks before a long run: a whole-model gradient check and overfit-one-batch (seed 001:
check gradients numerically; seed 002: overfit a small subset first)."""

from trickbag.check.gradcheck import GradCheckLayer, gradient_check
from trickbag.check.overfit import OverfitResult, overfit_batch
from trickbag.check.recipe import RecipeCheck, check_parts

__all__ = ["gradient_check", "GradCheckLayer", "overfit_batch", "OverfitResult", "check_parts", "RecipeCheck"]
