"""The distillation teacher (``distill.teacher``): a trained net, frozen, whose softened
predictions the student also learns from (Hinton et al. 2015; Bag of Tricks sec. 5.3).

The teacher is a run directory or a checkpoint file (loaded as an ensemble member is: its
final weights, or their EMA), or a recipe name / YAML file: that recipe is trained first
into ``<cache>/teacher-<recipe key>`` (beside the student's run) and reused by every later
run that names it, so an ablation's seeds share one teacher. It sees the student's inputs,
so it must have been trained on the same data set with the same input scaling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from trickbag.recipes.config import Recipe, RecipeError, available, load, recipe_key

__all__ = ["resolve_teacher", "teacher_dir"]


def _is_recipe(spec: str) -> bool:
    return spec in available() or spec.endswith((".yaml", ".yml"))


def teacher_dir(spec: str, cache: str | Path) -> Path:
    """Where the teacher recipe ``spec`` is trained and kept."""
    return Path(cache) / f"teacher-{recipe_key(load(spec))}"


def _train_teacher(spec: str, cache: Path, data: Any) -> Path:
    from trickbag.train.rundir import finished_summary
    from trickbag.train.trainer import Trainer

    out = teacher_dir(spec, cache)
    if finished_summary(out) is not None:
        return out
    Trainer(load(spec).member(), out=out, quiet=True, data=data, tensorboard=False).fit_or_continue()  # one net
    return out


def resolve_teacher(student: Recipe, data: Any, device, channels_last: bool, cache: str | Path | None) -> nn.Module:
    """The frozen teacher module for ``student`` (eval mode, no gradients, on ``device``)."""
    from trickbag.train.ensemble import load_member

    spec = student.distill.teacher
    if not spec:
        raise RecipeError("recipe distill.alpha > 0 needs distill.teacher: a run directory, a checkpoint file or a recipe")
    source: str | Path = spec
    if _is_recipe(spec) and not Path(spec).is_dir():
        source = _train_teacher(spec, Path(cache) if cache is not None else Path("runs"), data)
    elif not Path(spec).exists():
        raise RecipeError(f"recipe distill.teacher {spec!r}: no such run directory, checkpoint file or recipe")
    member = load_member(source, data)
    mine, theirs = student.data, member.recipe.data
    for key in ("name", "standardize", "log1p"):
        if getattr(mine, key) != getattr(theirs, key):
            raise RecipeError(f"recipe distill.teacher {spec!r} was trained with data.{key} {getattr(theirs, key)!r}; the "
                              f"student has {getattr(mine, key)!r}: the teacher must see inputs as it was trained on them")
    module = member.eval_model
    module.eval().requires_grad_(False)
    import torch

    return module.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
