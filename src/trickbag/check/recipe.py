"""``check_parts``: both checks on a recipe's own model and data (``trickbag check``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from trickbag._checks import check_range
from trickbag.check.gradcheck import GradCheckLayer, gradient_check
from trickbag.check.overfit import OverfitResult, overfit_batch

__all__ = ["RecipeCheck", "check_parts"]


@dataclass
class RecipeCheck:
    """The gradient check per parameter tensor and the overfit-one-batch result."""

    gradients: list[GradCheckLayer]
    overfit: OverfitResult
    batch: int

    @property
    def passed(self) -> bool:
        return all(layer.passed for layer in self.gradients) and self.overfit.passed

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "batch": self.batch, "gradient_check": [asdict(g) for g in self.gradients],
                "overfit": {k: v for k, v in asdict(self.overfit).items() if k != "losses"}}


def check_parts(parts: Any, batch: int = 16, steps: int = 300) -> RecipeCheck:
    """Gradient check and overfit-one-batch on the first ``batch`` training images of a
    recipe's ``Parts`` (``recipes.build``), standardized as in training, not augmented.
    The parts' model is not changed (both checks work on copies)."""
    check_range("batch", batch, 2, len(parts.data.train_y))
    x = parts.inputs(parts.data.train_x[:batch], train=False).contiguous()
    y = parts.data.train_y[:batch].to(parts.device)
    return RecipeCheck(gradient_check(parts.model, x, y), overfit_batch(parts.model, x, y, steps=steps), batch)
