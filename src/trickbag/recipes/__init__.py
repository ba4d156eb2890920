"""Recipes: YAML presets validated into ``Recipe`` dataclasses (``config``), and
``build(recipe) -> Parts`` (``parts``), the one path from a recipe to a run's objects.

``trickbag.recipes.config`` is torch-free; ``build`` and ``Parts`` (``recipes.parts``) import torch when
first used, so reading, checking and transforming recipes stays light.
"""

from typing import Any

from trickbag.recipes.config import (
           DataConfig,
           LossConfig,
           ModelConfig,
           OptimConfig,
           Recipe,
           RecipeError,
           ScheduleConfig,
           TrainConfig,
           apply_overrides,
           changed_keys,
           available,
           from_dict,
           load,
           override,
           save,
           to_dict,
)

__all__ = ["Recipe", "DataConfig", "ModelConfig", "OptimConfig", "ScheduleConfig", "LossConfig", "TrainConfig",
           "load", "save", "override", "available", "RecipeError", "apply_overrides", "to_dict", "from_dict", "changed_keys",
           "build", "Parts"]

_BUILD_NAMES = ("build", "Parts", "build_model_for", "resolve_schedule", "steps_from_units")


def __getattr__(name: str) -> Any:
    if name in _BUILD_NAMES:
        from trickbag.recipes import parts as _parts

        return getattr(_parts, name)
    raise AttributeError(f"module 'trickbag.recipes' has no attribute {name!r}")
