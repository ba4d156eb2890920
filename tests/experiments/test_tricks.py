"""Every registered trick changes the recipe exactly as declared here, turns off cleanly, and
refuses recipes it cannot apply to; variants are built the one documented way."""

from __future__ import annotations

import pytest

from trickbag.experiments.tricks import TRICKS, TrickError, trick_names, with_tricks
from trickbag.recipes import load
from trickbag.recipes.config import changed_keys, to_dict
from trickbag.recipes.parts import resolve_schedule

DEFAULT = "fashion-mnist"          # vgg7 + Muon, cosine with warmup, ls 0.1, flip + shift TTA
RESNET = "fashion-mnist-resnet"    # ResNet-D with zero-gamma, EMA


def keys(before, after):
    return {k: (a, b) for k, a, b in changed_keys(to_dict(before), to_dict(after))}


# trick -> (recipe it applies to, overrides making the trick absent there, {key: value when on})
EXPECTED = {
    "warmup": (DEFAULT, ["schedule.params={total_steps: 1dur, warmup_steps: 0}"],
               {"schedule.params": {"total_steps": "1dur", "warmup_steps": "0.04dur"}}),
    "cosine": (DEFAULT, ["schedule.name=multistep", "schedule.params={milestones: [0.5dur], warmup_steps: 0.02dur}"],
               {"schedule.name": "cosine", "schedule.params": {"total_steps": "1dur", "warmup_steps": "0.02dur"}}),
    "label_smoothing": (DEFAULT, ["loss.label_smoothing=0"], {"loss.label_smoothing": 0.1}),
    "mixup": (DEFAULT, [], {"loss.mixup_alpha": 0.2}),
    "cutmix": (DEFAULT, [], {"loss.cutmix_alpha": 1.0}),
    "no_bias_decay": (DEFAULT, ["optim.no_bias_decay=false"], {"optim.no_bias_decay": True}),
    "zero_gamma": (RESNET, ["model.zero_gamma=false"], {"model.zero_gamma": True}),
    "resnet_b": (RESNET, ["model.params={layers: [2, 2, 2], width: 32, stem: mnist, stem_pool: true, variant: A}"],
                 {"model.params": {"layers": [2, 2, 2], "width": 32, "stem": "mnist", "stem_pool": True, "variant": "B"}}),
    "resnet_c": (RESNET, ["model.params={layers: [2, 2, 2], width: 32, stem: mnist, stem_pool: true, variant: B}"],
                 {"model.params": {"layers": [2, 2, 2], "width": 32, "stem": "mnist", "stem_pool": True, "variant": "C"}}),
    "resnet_d": (RESNET, ["model.params={layers: [2, 2, 2], width: 32, stem: mnist, stem_pool: true, variant: C}"],
                 {"model.params": {"layers": [2, 2, 2], "width": 32, "stem": "mnist", "stem_pool": True, "variant": "D"}}),
    "ema": (DEFAULT, [], {"train.ema_decay": 0.99}),
    "lookahead": (DEFAULT, [], {"train.lookahead_steps": 5}),
    "infobatch": (DEFAULT, [], {"train.prune_easy": 0.5}),
    "tta_flip": (DEFAULT, ["train.tta_flip=false"], {"train.tta_flip": True}),
    "tta_translate": (DEFAULT, ["train.tta_translate=0"], {"train.tta_translate": 1}),
    # (the batch set by hand, so the recipe's cuda section does not name it: a trick's keys win over that section)
    "linear_scaling": (DEFAULT, ["data.batch_size=256"], {"data.batch_size": 1024, "optim.base_batch_size": 256}),
    "he_init": (DEFAULT, [], {"model.init": "he_normal"}),
    "lsuv": (DEFAULT, [], {"model.init": "lsuv"}),
    "bf16": (DEFAULT, ["train.precision=fp32"], {"train.precision": "bf16"}),
    "fp16": (DEFAULT, ["train.precision=fp32"], {"train.precision": "fp16"}),
    "channels_last": (DEFAULT, ["train.channels_last=false"], {"train.channels_last": True}),
    "muon": (DEFAULT, ["optim.name=nesterov"], {"optim.name": "muon"}),
    "pool_first": (DEFAULT, ["model.params={width: 16, pool_first: false}"], {"model.params": {"width": 16, "pool_first": True}}),
    "whiten": (DEFAULT, [], {"model.params": {"width": 16, "pool_first": True, "whiten": 2}}),
    "se": (DEFAULT, [], {"model.params": {"width": 16, "pool_first": True, "se": 4}}),
    "alt_flip": (DEFAULT, [], {"data.augment": [{"name": "alt_flip"}, {"name": "pad_crop", "pad": 2}]}),
    "distillation": (DEFAULT, ["distill.teacher=fashion-mnist-quick"], {"distill.alpha": 0.5}),
}


def test_every_registered_trick_is_declared_here():
    assert set(EXPECTED) == set(trick_names())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_trick_changes_exactly_what_it_declares_and_turns_off_again(name):
    recipe_name, absent, on_values = EXPECTED[name]
    trick = TRICKS.get(name)
    without = load(recipe_name, absent)
    with_it = trick.on(without)
    changed = keys(without, with_it)
    assert {k: after for k, (_, after) in changed.items()} == on_values
    assert to_dict(trick.on(with_it)) == to_dict(with_it)  # on is idempotent
    off = trick.off(with_it)
    assert to_dict(trick.off(off)) == to_dict(off)  # so is off
    if name not in ("cosine",):  # cosine's off is step decay, not the recipe it started from
        assert to_dict(off) == to_dict(without)
    assert to_dict(without) == to_dict(load(recipe_name, absent))  # the argument is never mutated


def test_on_keeps_the_recipes_own_setting():
    recipe = load(DEFAULT, ["loss.label_smoothing=0.2", "train.ema_decay=0.999"])
    assert TRICKS.get("label_smoothing").on(recipe).loss.label_smoothing == 0.2
    assert TRICKS.get("ema").on(recipe).train.ema_decay == 0.999
    big = load(DEFAULT, ["data.batch_size=1024", "optim.base_batch_size=256"])
    assert TRICKS.get("linear_scaling").on(big).data.batch_size == 1024
    whitened = load(DEFAULT, ["model.params={width: 16, pool_first: true, whiten: 3, whiten_eps: 0.01}"])
    assert TRICKS.get("whiten").on(whitened).model.params == whitened.model.params
    assert TRICKS.get("whiten").off(whitened).model.params == {"width": 16, "pool_first": True}
    gated = load(DEFAULT, ["model.params={width: 16, pool_first: true, se: 8, se_layers: 4}"])
    assert TRICKS.get("se").on(gated).model.params == gated.model.params
    assert TRICKS.get("se").off(gated).model.params == {"width": 16, "pool_first": True}
    small = TRICKS.get("linear_scaling").off(big)
    assert (small.data.batch_size, small.optim.base_batch_size) == (256, 0)


@pytest.mark.parametrize("name,recipe_name,message", [
    ("zero_gamma", DEFAULT, "trick 'zero_gamma' needs a ResNet (model.name: resnet); the recipe has model 'vgg7'"),
    ("resnet_d", DEFAULT, "trick 'resnet_d' needs a ResNet"),
    ("pool_first", RESNET, "trick 'pool_first' needs model vgg7; the recipe has model 'resnet'"),
    ("whiten", RESNET, "trick 'whiten' needs model vgg7; the recipe has model 'resnet'"),
    ("se", RESNET, "trick 'se' needs model vgg7; the recipe has model 'resnet'"),
    ("warmup", "cifar100-200ep", "trick 'warmup' needs a cosine or multistep schedule; the recipe has schedule 'cifar_200_epochs'"),
    ("cosine", "cifar100-200ep", "trick 'cosine' needs a cosine or multistep schedule"),
    ("muon", "fashion-mnist-lstm", "trick 'muon' needs optim.name muon or nesterov"),
    ("distillation", DEFAULT, "trick 'distillation' needs distill.teacher (a run directory, checkpoint file or recipe); the recipe has none"),
])
def test_a_trick_refuses_a_recipe_it_cannot_apply_to(name, recipe_name, message):
    with pytest.raises(TrickError, match=message.replace("(", "\\(").replace(")", "\\)")):
        TRICKS.get(name).on(load(recipe_name))


def test_alt_flip_needs_a_flip():
    with pytest.raises(TrickError, match="needs a flip in data.augment"):
        TRICKS.get("alt_flip").on(load(DEFAULT, ["data.augment=[{name: pad_crop, pad: 2}]"]))


def test_step_decay_from_the_cosine_trick_is_the_papers_schedule():
    """Off: /10 at a quarter, half and three quarters of the run, the warmup kept."""
    step = TRICKS.get("cosine").off(load(DEFAULT))
    assert step.schedule.name == "multistep"
    lr, spe, total = 0.2, 10, 400
    schedule = resolve_schedule(step.schedule.name, step.schedule.params, lr, spe, total)
    warm = 0.02 * total
    for t in (0, 4, 8, 50, 99, 100, 199, 200, 299, 300, 399):
        expected = lr * t / warm if t < warm else lr * 0.1 ** sum(t >= m for m in (100, 200, 300))
        assert schedule(t) == pytest.approx(expected, rel=1e-12, abs=1e-15), t


def test_variants_turn_the_studied_tricks_off_then_the_enabled_ones_on():
    studied = ["label_smoothing", "tta_translate", "muon"]
    base = with_tricks(load(DEFAULT), studied, [])
    assert (base.loss.label_smoothing, base.train.tta_translate, base.optim.name) == (0.0, 0, "nesterov")
    one = with_tricks(load(DEFAULT), studied, ["muon"])
    assert (one.loss.label_smoothing, one.train.tta_translate, one.optim.name) == (0.0, 0, "muon")
    assert to_dict(with_tricks(load(DEFAULT), studied, studied)) == to_dict(load(DEFAULT))
    # the ResNet tweaks are cumulative (paper, Table 5): D alone still means B, C and D
    tweaks = ["resnet_b", "resnet_c", "resnet_d"]
    letters = [with_tricks(load(RESNET), tweaks, tweaks[:i]).model.params["variant"] for i in range(4)]
    assert letters == ["A", "B", "C", "D"]
    assert with_tricks(load(RESNET), tweaks, ["resnet_d"]).model.params["variant"] == "D"
    with pytest.raises(ValueError, match="not among the studied"):
        with_tricks(load(DEFAULT), studied, ["mixup"])
