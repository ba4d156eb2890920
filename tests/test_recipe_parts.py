"""``recipes.build(recipe) -> Parts``: the one path from a recipe to a run's objects, and the
torch-free recipe layer around it (issue #9, structure 1, 2 and 4)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from trickbag._params import coerce, load_yaml, parse_spec
from trickbag.recipes import Parts, RecipeError, build, load, override, save
from trickbag.train import Trainer

FAST = ["data.batch_size=50", "model.params={widths: [8, 16], depth: 1}", "train.epochs=2", "train.threads=1"]


def test_recipe_config_stays_torch_free():
    code = ("import sys; from trickbag.recipes import load, override; r = override(load('fashion-mnist'), {'optim.lr': 0.3}); "
            "print(r.optim.lr, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0.3", "False"]


def test_build_makes_every_part_from_the_recipe(small_data):
    recipe = load("fashion-mnist-quick", FAST + ["optim.lr=0.1", "optim.base_batch_size=100", "train.ema_decay=0.9",
                                           "loss.label_smoothing=0.1", "schedule.name=constant", "schedule.params={}",
                                           "data.train_subset=500"])
    parts = build(recipe, data=small_data)
    assert isinstance(parts, Parts) and parts.recipe is recipe
    assert len(parts.data.train_y) == 500 and len(small_data.train_y) == 600  # the caller's data is not changed
    assert parts.steps_per_epoch == 500 // 50 and parts.total_steps == 2 * 10
    assert parts.base_lr == pytest.approx(0.1 * 50 / 100)  # the linear scaling rule
    assert [g["lr"] for g in parts.optimizer.param_groups] == [pytest.approx(0.05)] * len(parts.optimizer.param_groups)
    assert parts.ema is not None and parts.mixer is None and parts.callbacks == []
    # the loss is label-smoothed cross entropy: (1 - eps) * CE + eps * mean over classes of -log p
    logits, y = torch.randn(4, 10, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 3, 9, 2])
    logp = logits.log_softmax(1)
    expected = (0.9 * -logp[range(4), y] + 0.1 * -logp.mean(1)).mean()
    assert float(parts.loss_fn(logits, y)) == pytest.approx(float(expected), rel=1e-6)
    # inputs: standardized with the training split's statistics, channels_last for a conv net
    x = parts.inputs(parts.data.train_x[:8], train=False)
    unit = parts.data.train_x.float() / 255
    manual = (parts.data.train_x[:8].float() / 255 - unit.mean()) / unit.std()
    assert torch.allclose(x, manual, atol=1e-5) and x.is_contiguous(memory_format=torch.channels_last)


def test_build_is_deterministic_and_seeded(small_data):
    a = build(load("fashion-mnist-quick", FAST + ["train.seed=3"]), data=small_data)
    b = build(load("fashion-mnist-quick", FAST + ["train.seed=3"]), data=small_data)
    c = build(load("fashion-mnist-quick", FAST + ["train.seed=4"]), data=small_data)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


def test_the_doctor_monitor_comes_from_the_recipe_not_the_loop(small_data, tmp_path):
    from trickbag.doctor import DoctorMonitor

    parts = build(load("fashion-mnist-quick", FAST + ["train.doctor_every=5", "train.epochs=1"]), data=small_data)
    assert [type(c) for c in parts.callbacks] == [DoctorMonitor]
    Trainer(parts, out=tmp_path / "run", quiet=True).fit()
    assert (tmp_path / "run" / "doctor.jsonl").read_text().count("\n") >= 600 // 50 // 5
    source = (__import__("trickbag.train.trainer", fromlist=["x"]).__file__)
    assert "doctor" not in "".join(line for line in open(source) if line.startswith(("import", "from")))


def test_parts_without_a_trainer_serve_find_and_check(small_data):
    from trickbag.check import check_parts
    from trickbag.find import parts_range_test

    parts = build(load("fashion-mnist-quick", FAST), data=small_data)
    before = {k: v.clone() for k, v in parts.model.state_dict().items()}
    result = parts_range_test(parts, num_iter=20)
    assert len(result.lrs) >= 3
    checked = check_parts(parts, batch=4, steps=30)
    assert len(checked.gradients) == len(list(parts.model.parameters()))
    after = parts.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # neither left a trace


def test_override_is_pure_and_validated():
    recipe = load("fashion-mnist")
    faster = override(recipe, {"optim.lr": 0.4, "data.batch_size": 512, "schedule.params.final_lr": "1e-5"})
    assert (faster.optim.lr, faster.data.batch_size, recipe.optim.lr) == (0.4, 512, load("fashion-mnist").optim.lr)
    assert faster.schedule.params["final_lr"] == "1e-5"  # free-form params are typed when the schedule is built
    with pytest.raises(RecipeError, match="recipe key 'optim.lrr' is unknown"):
        override(recipe, {"optim.lrr": 0.1})
    with pytest.raises(RecipeError, match="optim.momentum must be in"):
        override(recipe, {"optim.momentum": 2})


def test_save_round_trips_and_refuses_a_missing_folder(tmp_path):
    recipe = override(load("fashion-mnist"), {"optim.lr": 1e-5})
    path = save(recipe, tmp_path / "r.yaml")
    assert load(str(path)) == recipe
    with pytest.raises(RecipeError, match="folder .*missing.* does not exist"):
        save(recipe, tmp_path / "missing" / "r.yaml")


@pytest.mark.parametrize("where", ["yaml", "set"])
def test_1e_minus_5_is_a_number_in_schedule_params(tmp_path, small_data, where):
    if where == "yaml":
        path = tmp_path / "r.yaml"
        path.write_text("schedule: {name: cosine, params: {total_steps: 1dur, warmup_steps: 1ep, final_lr: 1e-5}}\n"
                        "optim: {lr: 1e-1}\n")
        recipe = load(str(path), FAST)
    else:
        recipe = load("fashion-mnist-quick", FAST + ["schedule.params.final_lr=1e-5", "optim.lr=1e-1"])
    assert recipe.schedule.params["final_lr"] == 1e-5 and recipe.optim.lr == 0.1
    parts = build(recipe, data=small_data)
    assert parts.schedule(parts.total_steps) == pytest.approx(1e-5)


@pytest.mark.parametrize("text,value", [("1e-5", 1e-5), ("1E+3", 1000.0), (".5", 0.5), ("-2.5e-3", -2.5e-3), ("3", 3),
                                        ("'1e-5'", "1e-5"), ("yes", True), ("1e5x", "1e5x"), (".inf", math.inf)])
def test_yaml_reads_numbers_the_yaml_1_2_way(text, value):
    got = load_yaml(text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("value,annotation,expected", [
    ("1e-5", float, 1e-5), ("3", int, 3), (3.0, int, 3), ("true", bool, True), ("100,200", tuple[float, ...], (100, 200)),
    ([1, 2], list[float], [1, 2]), ("none", float | None, None), ("0.5", float | None, 0.5),
])
def test_coerce_one_rule_for_every_caller(value, annotation, expected):
    assert coerce("k", value, annotation) == expected


@pytest.mark.parametrize("value,annotation,text,message", [
    ("fast", float, True, "k must be a number, got 'fast'"), (2.5, int, True, "k must be an integer, got 2.5"),
    (True, float, True, "k must be a number, got True"), ("flip", list[dict], False, "k must be a list, got 'flip'"),
    ([1], list[dict], False, "k[0] must be a mapping, got 1"), ("true", bool, False, "k must be true or false"),
])
def test_coerce_errors_name_the_key(value, annotation, text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        coerce("k", value, annotation, text=text)


def test_parse_spec():
    assert parse_spec("random_normal:stddev=1e-2,mean=0") == ("random_normal", ["stddev=1e-2", "mean=0"])
    assert parse_spec("he_normal") == ("he_normal", [])
    with pytest.raises(ValueError, match="NAME or NAME:k=v"):
        parse_spec(":stddev=1")


@pytest.mark.parametrize("overrides,message", [
    (["train.tta_translate=28"], "train.tta_translate must be < the image size 28"),
    (["model.name=tf_tutorial_cnn", "model.params={}", "data.progressive=[[16, 1]]"], "data.progressive: model 'tf_tutorial_cnn' cannot take 16x16"),
])
def test_sizes_the_model_cannot_take_fail_at_build_naming_the_key(small_data, overrides, message):
    with pytest.raises(RecipeError, match=message):
        build(load("fashion-mnist", ["data.train_subset=100", "data.batch_size=50"] + overrides), data=small_data)


def test_the_lr_finder_keeps_the_muon_filters_lr_ratio_during_the_sweep(small_data):
    from trickbag.find.sweep import group_ratios, lr_range_test

    parts = build(load("fashion-mnist", ["optim.lr=0.2", "optim.muon_lr=0.05", "data.train_subset=600", "data.batch_size=50"]),
                  data=small_data)
    assert all(g["lr"] == 0 for g in parts.optimizer.param_groups)  # step 0 of the warmup: current lrs say nothing
    assert group_ratios(parts.optimizer) == [pytest.approx(0.25), 1.0, 1.0]
    seen = []
    parts.optimizer.register_step_pre_hook(lambda opt, *_: seen.append([g["lr"] for g in opt.param_groups]))
    x, y = parts.inputs(parts.data.train_x[:50]), parts.data.train_y[:50]
    lr_range_test(parts.model, parts.loss_fn, parts.optimizer, [(x, y)], num_iter=5, start_lr=1e-3, end_lr=1e-1)
    assert all(lrs[0] == pytest.approx(0.25 * lrs[1]) and lrs[1] == lrs[2] for lrs in seen) and len(seen) >= 3


def test_changed_keys_names_dotted_keys_and_compares_free_form_params_whole():
    from trickbag.recipes import changed_keys, to_dict

    plain = load("fashion-mnist", ["cuda={}"])  # (an override also drops the cuda section's keys it sets)
    a = to_dict(plain)
    b = to_dict(override(plain, {"optim.lr": 0.4, "model.params": {"width": 32}}))
    assert changed_keys(a, b) == [("model.params", a["model"]["params"], {"width": 32}), ("optim.lr", a["optim"]["lr"], 0.4)]
    with_section = to_dict(load("fashion-mnist"))
    moved = changed_keys(with_section, to_dict(override(load("fashion-mnist"), {"optim.lr": 0.4})))
    assert moved == [("cuda.optim.lr", with_section["cuda"]["optim.lr"], None), ("optim.lr", with_section["optim"]["lr"], 0.4)]
    assert a["model"]["params"] != {"width": 32} and a["optim"]["lr"] != 0.4
    assert changed_keys(a, a) == []


def test_model_init_lsuv_gives_every_layer_unit_output_variance_on_real_training_images(small_data):
    """``model.init: lsuv`` (Mishkin & Matas 2016) from a recipe: checked with our own hooks on
    the same standardized training batch, BatchNorm statistics untouched."""
    from trickbag.data.pipeline import InputPipeline
    from trickbag.recipes.parts import LSUV_BATCH

    parts = build(load("fashion-mnist", ["model.init=lsuv", "model.init_params={tol: 0.05}", "train.device=cpu"]),
                  data=small_data)
    model = parts.model.float().eval()
    batch = InputPipeline.for_data(small_data, torch.device("cpu"))(small_data.train_x[:LSUV_BATCH])
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    outputs = {}
    handles = [m.register_forward_hook(lambda m, i, o: outputs.setdefault(m, o.detach())) for m in layers]
    with torch.no_grad():
        model(batch.contiguous())
    for h in handles:
        h.remove()
    assert len(outputs) == len(layers) >= 8
    assert all(abs(float(o.float().var()) - 1.0) < 0.05 for o in outputs.values())
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(b.running_mean, torch.zeros_like(b.running_mean)) for b in bns)
    with pytest.raises(RecipeError, match="tol must be > 0"):
        build(load("fashion-mnist", ["model.init=lsuv", "model.init_params={tol: -1}", "train.device=cpu"]), data=small_data)
