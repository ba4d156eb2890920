"""Tricks as pure recipe transformations, for ablations. Torch-free.

A trick is a pair of functions ``Recipe -> Recipe``: ``on`` turns it on (keeping the
recipe's own setting where it already has the trick, e.g. its label-smoothing epsilon;
otherwise the setting of the paper the trick comes from), ``off`` turns it off. Neither
mutates its argument (``recipes.override`` returns a validated copy). A trick that does not
fit a recipe (zero-γ on a net without residual blocks) raises ``TrickError`` naming the
trick, what it needs and what the recipe has.

``with_tricks(recipe, studied, enabled)`` is the one way variants are made: every studied
trick not in ``enabled`` is turned off, then every one in ``enabled`` on. So the baseline of
an ablation (``enabled=()``) is the recipe with all studied tricks off, whatever the recipe
itself had. ``resnet_b``, ``resnet_c`` and ``resnet_d`` are cumulative, as in the paper's
Table 5: each implies the ones before it (our ResNet takes one ``variant`` letter).

Add a trick with ``@register_trick("name", summary=..., needs=...)`` on a function
``(recipe, on: bool) -> Recipe``.

Reference for the defaults: He et al. 2019, "Bag of Tricks for Image Classification with
Convolutional Neural Networks" (arXiv:1812.01187), sections 3-5.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from trickbag.recipes.config import Recipe, RecipeError, override
from trickbag.registry import Registry

__all__ = ["Trick", "TrickError", "TRICKS", "register_trick", "with_tricks", "trick_names"]


class TrickError(RecipeError):
    """A trick cannot be applied to this recipe (it says what the trick needs)."""


@dataclass(frozen=True)
class Trick:
    """A named recipe transformation: ``trick(recipe, on=True)``."""

    name: str
    summary: str  # what it changes, for `trickbag tricks`
    needs: str  # what a recipe must have for it ("" = any recipe)
    apply: Callable[[Recipe, bool], Recipe]

    def __call__(self, recipe: Recipe, on: bool = True) -> Recipe:
        return self.apply(recipe, on)

    def on(self, recipe: Recipe) -> Recipe:
        return self.apply(recipe, True)

    def off(self, recipe: Recipe) -> Recipe:
        return self.apply(recipe, False)


TRICKS: Registry[Trick] = Registry("trick")


def register_trick(name: str, summary: str, needs: str = "") -> Callable[[Callable[[Recipe, bool], Recipe]], Trick]:
    """Decorator: register ``fn(recipe, on) -> Recipe`` as the trick ``name``."""

    def add(fn: Callable[[Recipe, bool], Recipe]) -> Trick:
        trick = Trick(name, summary, needs, fn)
        TRICKS.register(name)(trick)
        return trick

    return add


def trick_names() -> list[str]:
    return TRICKS.names()


def with_tricks(recipe: Recipe, studied: Sequence[str], enabled: Collection[str]) -> Recipe:
    """``recipe`` with the studied tricks in ``enabled`` on and every other studied trick off
    (offs first, then ons in the order of ``studied``: see the module docstring)."""
    unknown = [name for name in enabled if name not in studied]
    if unknown:
        raise ValueError(f"enabled tricks {unknown} are not among the studied ones {list(studied)}")
    tricks = [TRICKS.get(name) for name in studied]
    for trick in tricks:
        if trick.name not in enabled:
            recipe = trick.off(recipe)
    for trick in tricks:
        if trick.name in enabled:
            recipe = trick.on(recipe)
    return recipe


# --- helpers --------------------------------------------------------------------------------


def _need(condition: bool, trick: str, needs: str, has: str) -> None:
    if not condition:
        raise TrickError(f"trick {trick!r} needs {needs}; the recipe has {has}")


def _number(recipe: Recipe, on: bool, key: str, default: float) -> Recipe:
    """A number that is 0 when off; on keeps the recipe's own non-zero value, else ``default``."""
    section, field = key.split(".")
    current = getattr(getattr(recipe, section), field)
    return override(recipe, {key: (current or default) if on else 0})


def _flag(recipe: Recipe, on: bool, key: str) -> Recipe:
    return override(recipe, {key: bool(on)})


# --- the tricks ---------------------------------------------------------------------------------

#: tricks that are one number, 0 when off: (name, recipe key, value when the recipe has none, what it does)
NUMBER_TRICKS = [
    ("label_smoothing", "loss.label_smoothing", 0.1, "label smoothing, eps 0.1 unless the recipe sets one (Szegedy et al.; He et al. sec. 5.2)"),
    ("mixup", "loss.mixup_alpha", 0.2, "mixup, alpha 0.2 unless the recipe sets one (Zhang et al.; He et al. sec. 5.4)"),
    ("cutmix", "loss.cutmix_alpha", 1.0, "CutMix, alpha 1.0 unless the recipe sets one (Yun et al. 2019)"),
    ("ema", "train.ema_decay", 0.99, "exponential moving average of the weights, decay 0.99 unless the recipe sets one (airbench, timm)"),
    ("lookahead", "train.lookahead_steps", 5, "Lookahead: every 5 optimizer steps (unless the recipe sets k) the slow weights move "
     "train.lookahead_alpha of the way to the fast ones, which restart there (Zhang et al. 2019; airbench)"),
    ("infobatch", "train.prune_easy", 0.5, "InfoBatch dynamic data pruning: each epoch leaves out half (unless the recipe sets r) of "
     "the samples whose last loss is below the mean and upweights the rest, for fewer steps (Qin et al. 2024)"),
    ("tta_translate", "train.tta_translate", 1, "test-time augmentation: also the image shifted 1 px each way diagonally (airbench)"),
]
#: tricks that are one switch: (name, recipe key, what it does)
FLAG_TRICKS = [
    ("no_bias_decay", "optim.no_bias_decay", "no weight decay on biases and BN parameters (He et al. sec. 3.1)"),
    ("tta_flip", "train.tta_flip", "test-time augmentation: average with the mirrored image"),
    ("channels_last", "train.channels_last", "channels_last memory format for conv nets"),
]
for _name, _key, _default, _summary in NUMBER_TRICKS:
    register_trick(_name, _summary)(partial(_number, key=_key, default=_default))
for _name, _key, _summary in FLAG_TRICKS:
    register_trick(_name, _summary)(partial(_flag, key=_key))


def _warmup_steps(recipe: Recipe, trick: str) -> Any:
    """The recipe's warmup, for the tricks that need a schedule taking one (cosine, multistep)."""
    _need(recipe.schedule.name in ("cosine", "multistep"), trick, "a cosine or multistep schedule",
          f"schedule {recipe.schedule.name!r}")
    return recipe.schedule.params.get("warmup_steps", 0)


@register_trick("warmup", "linear lr warmup: 4% of the run when the recipe has none (5 of 120 epochs, He et al. sec. 3.1)",
                needs="a cosine or multistep schedule")
def _warmup(recipe: Recipe, on: bool) -> Recipe:
    current = _warmup_steps(recipe, "warmup")
    warm = (current if current not in (0, "0", None) else "0.04dur") if on else 0
    return override(recipe, {"schedule.params": {**recipe.schedule.params, "warmup_steps": warm}})


#: the step decay that cosine replaces in the paper: lr / 10 at epochs 30, 60, 90 of 120
STEP_MILESTONES = ["0.25dur", "0.5dur", "0.75dur"]


@register_trick("cosine", "cosine lr decay to 0 instead of step decay (/10 at 1/4, 1/2, 3/4 of the run; He et al. sec. 5.1)",
                needs="a cosine or multistep schedule")
def _cosine(recipe: Recipe, on: bool) -> Recipe:
    warm = _warmup_steps(recipe, "cosine")
    if on:
        params: dict[str, Any] = {"total_steps": "1dur", "warmup_steps": warm}
        return override(recipe, {"schedule.name": "cosine", "schedule.params": params})
    params = {"milestones": list(STEP_MILESTONES), "gamma": 0.1, "warmup_steps": warm}
    return override(recipe, {"schedule.name": "multistep", "schedule.params": params})






def _resnet(recipe: Recipe, trick: str) -> None:
    _need(recipe.model.name == "resnet", trick, "a ResNet (model.name: resnet)", f"model {recipe.model.name!r}")


@register_trick("zero_gamma", "the last BN scale of every residual block starts at 0 (He et al. sec. 3.1)", needs="a ResNet")
def _zero_gamma(recipe: Recipe, on: bool) -> Recipe:
    _resnet(recipe, "zero_gamma")
    return override(recipe, {"model.zero_gamma": bool(on)})


_VARIANTS = "ABCD"


def _resnet_variant(letter: str) -> Callable[[Recipe, bool], Recipe]:
    name = f"resnet_{letter.lower()}"

    def apply(recipe: Recipe, on: bool) -> Recipe:
        _resnet(recipe, name)
        current = str(recipe.model.params.get("variant", "D")).upper()
        rank = _VARIANTS.index(letter)
        if on:
            variant = _VARIANTS[max(_VARIANTS.index(current), rank)]
        else:
            variant = _VARIANTS[min(_VARIANTS.index(current), rank - 1)]
        return override(recipe, {"model.params": {**recipe.model.params, "variant": variant}})

    return apply


register_trick("resnet_b", "ResNet-B: the bottleneck's stride moves from the first 1x1 to the 3x3 (He et al. sec. 4.1)",
               needs="a ResNet")(_resnet_variant("B"))
register_trick("resnet_c", "ResNet-C: three 3x3 convs replace the 7x7 stem (implies B; He et al. sec. 4.2)",
               needs="a ResNet")(_resnet_variant("C"))
register_trick("resnet_d", "ResNet-D: avg-pool before the 1x1 of downsampling shortcuts (implies B, C; He et al. sec. 4.2)",
               needs="a ResNet")(_resnet_variant("D"))





@register_trick("linear_scaling", "4x the batch with the lr scaled linearly (lr x batch / 256-style base; Goyal et al. 2017, He et al. sec. 3.1)")
def _linear_scaling(recipe: Recipe, on: bool) -> Recipe:
    batch, base = recipe.data.batch_size, recipe.optim.base_batch_size
    if on:
        return recipe if base else override(recipe, {"data.batch_size": 4 * batch, "optim.base_batch_size": batch})
    return override(recipe, {"data.batch_size": base, "optim.base_batch_size": 0}) if base else recipe


@register_trick("he_init", "He (MSRA) normal initialization instead of the model's default (He et al. 2015)")
def _he_init(recipe: Recipe, on: bool) -> Recipe:
    return override(recipe, {"model.init": "he_normal" if on else None, "model.init_params": {}})


@register_trick("lsuv", "LSUV init on a training batch instead of the model's default (Mishkin & Matas 2016)")
def _lsuv(recipe: Recipe, on: bool) -> Recipe:
    return override(recipe, {"model.init": "lsuv" if on else None, "model.init_params": {}})


@register_trick("bf16", "bf16 autocast instead of fp32 (on CPUs without native bf16 it is far slower)")
def _bf16(recipe: Recipe, on: bool) -> Recipe:
    return override(recipe, {"train.precision": "bf16" if on else "fp32"})


@register_trick("fp16", "fp16 autocast with a GradScaler instead of fp32 (He et al. sec. 3.2; CUDA)")
def _fp16(recipe: Recipe, on: bool) -> Recipe:
    return override(recipe, {"train.precision": "fp16" if on else "fp32"})



@register_trick("muon", "Muon on the conv filters, Nesterov SGD on the rest (vs Nesterov SGD for all; airbench94_muon)")
def _muon(recipe: Recipe, on: bool) -> Recipe:
    _need(recipe.optim.name in ("muon", "nesterov"), "muon", "optim.name muon or nesterov", f"{recipe.optim.name!r}")
    return override(recipe, {"optim.name": "muon" if on else "nesterov"})


@register_trick("pool_first", "conv -> max-pool -> BN -> ReLU where a stage ends (airbench's order)", needs="vgg7")
def _pool_first(recipe: Recipe, on: bool) -> Recipe:
    _need(recipe.model.name == "vgg7", "pool_first", "model vgg7", f"model {recipe.model.name!r}")
    return override(recipe, {"model.params": {**recipe.model.params, "pool_first": bool(on)}})


def _vgg7_option(recipe: Recipe, on: bool, key: str, default: int, companions: tuple[str, ...]) -> Recipe:
    """The trick named ``key``, ``vgg7``'s ``model.params[key]``: on keeps the recipe's own
    non-zero value (and its ``companions``), else sets ``default``; off removes the key and its
    companions."""
    _need(recipe.model.name == "vgg7", key, "model vgg7", f"model {recipe.model.name!r}")
    params = dict(recipe.model.params)
    if on:
        params[key] = params.get(key) or default
    else:
        for name in (key, *companions):
            params.pop(name, None)
    return override(recipe, {"model.params": params})


@register_trick("whiten", "a frozen 2x2 patch-whitening first conv set from the training images, no BN after it (airbench)",
                needs="vgg7")
def _whiten(recipe: Recipe, on: bool) -> Recipe:
    return _vgg7_option(recipe, on, "whiten", 2, ("whiten_eps",))


@register_trick("se", "a squeeze-and-excitation gate (reduction 4) after every conv layer (Hu et al. 2018)", needs="vgg7")
def _se(recipe: Recipe, on: bool) -> Recipe:
    return _vgg7_option(recipe, on, "se", 4, ("se_layers",))


@register_trick("alt_flip", "alternating flip instead of random flips (airbench)", needs="a flip in data.augment")
def _alt_flip(recipe: Recipe, on: bool) -> Recipe:
    names = [a.get("name") for a in recipe.data.augment]
    _need("flip" in names or "alt_flip" in names, "alt_flip", "a flip in data.augment", f"augment {names}")
    src, dst = ("flip", "alt_flip") if on else ("alt_flip", "flip")
    augment = [{**a, "name": dst} if a.get("name") == src else dict(a) for a in recipe.data.augment]
    return override(recipe, {"data.augment": augment})


@register_trick("distillation", "knowledge distillation from distill.teacher, alpha 0.5 (and T 20) unless the recipe sets them "
                "(Hinton et al. 2015; He et al. sec. 5.3)", needs="distill.teacher")
def _distillation(recipe: Recipe, on: bool) -> Recipe:
    _need(bool(recipe.distill.teacher), "distillation", "distill.teacher (a run directory, checkpoint file or recipe)",
          "none")
    return _number(recipe, on, "distill.alpha", 0.5)
