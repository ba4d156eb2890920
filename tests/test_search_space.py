"""Search spaces (``recipes.search``): parsing with errors that name the key, recipe keys
checked with did-you-mean, the corner points, sampling through a trial's suggest methods, and
the default space every shipped Fashion-MNIST recipe carries."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trickbag.recipes import RecipeError, available, load, override
from trickbag.recipes.config import recipe_key, to_dict
from trickbag.recipes.search import Dimension, SearchError, corners, parse_space, suggest


def test_each_kind_parses_to_its_dimension():
    space = parse_space({
        "optim.lr": {"log_uniform": [0.01, 1]},
        "loss.label_smoothing": {"uniform": [0, 0.3]},
        "train.epochs": {"int": [2, 10], "step": 2},
        "data.batch_size": {"int": [64, 512], "log": True},
        "model.name": {"choice": ["vgg7", "small_cnn"]},
        "trick.mixup": {"choice": [True, False]},
    })
    assert space == (
        Dimension("optim.lr", "log_uniform", 0.01, 1.0),
        Dimension("loss.label_smoothing", "uniform", 0.0, 0.3),
        Dimension("train.epochs", "int", 2, 10, step=2),
        Dimension("data.batch_size", "int", 64, 512, log=True),
        Dimension("model.name", "choice", choices=("vgg7", "small_cnn")),
        Dimension("trick.mixup", "choice", choices=(True, False)),
    )
    assert space[-1].is_trick and space[-1].trick == "mixup" and not space[0].is_trick


@pytest.mark.parametrize("spec, message", [
    ({"log_uniform": [0, 1]}, "log_uniform needs 0 < low"),
    ({"uniform": [0.3, 0.1]}, "needs low < high"),
    ({"uniform": [0.1]}, r"takes \[low, high\]"),
    ({"uniform": [0, float("nan")]}, "high must be a finite number"),
    ({"int": [1.5, 4]}, "int bounds must be integers"),
    ({"int": [1, 4], "step": 0}, "step must be an integer >= 1"),
    ({"uniform": [0, 1], "step": 2}, "step and log go with int only"),
    ({"choice": []}, "non-empty list"),
    ({"choice": [1, 1]}, "lists a value twice"),
    ({"choice": [[1, 2]]}, "numbers, strings, booleans or null"),
    ({"log_unifrom": [0.1, 1]}, "did you mean 'log_uniform'"),
    ({"uniform": [0, 1], "choice": [1]}, "exactly one of"),
    (0.1, "must map to one of"),
])
def test_bad_specs_name_the_key_and_the_rule(spec, message):
    with pytest.raises(SearchError, match=message) as info:
        parse_space({"optim.lr": spec})
    assert "'optim.lr'" in str(info.value)


def test_a_trick_is_switched_by_a_boolean_choice_only():
    with pytest.raises(SearchError, match="on or off"):
        parse_space({"trick.mixup": {"choice": [0.1, 0.2]}})
    with pytest.raises(SearchError, match="on or off"):
        parse_space({"trick.mixup": {"uniform": [0, 1]}})


def test_recipe_keys_are_checked_with_did_you_mean():
    base = load("fashion-mnist-quick")
    with pytest.raises(RecipeError, match="'optim.lrr' is not a recipe key.*did you mean 'optim.lr'"):
        override(base, {"search": {"optim.lrr": {"uniform": [0.1, 1]}}})
    with pytest.raises(RecipeError, match="is not a recipe key"):
        override(base, {"search": {"cuda.optim.lr": {"uniform": [0.1, 1]}}})
    # keys inside free-form mappings (a model's own parameters) are the model builder's to check
    tuned = override(base, {"search": {"model.params.widths": {"choice": ["[8, 16]", "[16, 32]"]}}})
    assert [d.key for d in tuned.search_space()] == ["model.params.widths"]


def test_corners_reach_every_bound_and_choice():
    space = parse_space({"a.x": {"uniform": [0, 1]}, "a.y": {"choice": ["p", "q", "r"]}, "a.z": {"int": [3, 9]}})
    points = corners(space)
    for d in space:
        seen = {p[d.key] for p in points}
        assert seen == ({0.0, 1.0} if d.key == "a.x" else {"p", "q", "r"} if d.key == "a.y" else {3, 9})
    assert len(points) == 1 + 1 + 2 + 1


class RecordingTrial:
    """Stands in for an Optuna trial: records the calls, answers the lower bound / first choice."""

    def __init__(self):
        self.calls = []

    def suggest_float(self, name, low, high, log=False):
        self.calls.append(("float", name, low, high, log))
        return low

    def suggest_int(self, name, low, high, step=1, log=False):
        self.calls.append(("int", name, low, high, step, log))
        return low

    def suggest_categorical(self, name, choices):
        self.calls.append(("categorical", name, choices))
        return choices[0]


def test_suggest_asks_the_trial_with_each_dimensions_distribution():
    space = parse_space({"optim.lr": {"log_uniform": [0.01, 1]}, "loss.label_smoothing": {"uniform": [0, 0.3]},
                         "train.epochs": {"int": [2, 10], "step": 2}, "trick.mixup": {"choice": [True, False]}})
    trial = RecordingTrial()
    values = suggest(trial, space)
    assert trial.calls == [("float", "optim.lr", 0.01, 1.0, True), ("float", "loss.label_smoothing", 0.0, 0.3, False),
                           ("int", "train.epochs", 2, 10, 2, False), ("categorical", "trick.mixup", [True, False])]
    assert values == {"optim.lr": 0.01, "loss.label_smoothing": 0.0, "train.epochs": 2, "trick.mixup": True}


def test_values_drawn_by_optuna_stay_inside_the_space():
    optuna = pytest.importorskip("optuna", reason="optuna is in the dev extra")
    space = parse_space({"optim.lr": {"log_uniform": [0.01, 1]}, "train.epochs": {"int": [2, 10], "step": 2},
                         "data.batch_size": {"choice": [128, 256]}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(50):
        v = suggest(study.ask(), space)
        assert 0.01 <= v["optim.lr"] <= 1 and v["train.epochs"] in (2, 4, 6, 8, 10) and v["data.batch_size"] in (128, 256)


FASHION = [name for name in available() if name.startswith("fashion-mnist")]


@pytest.mark.parametrize("name", FASHION)
def test_every_shipped_fashion_mnist_recipe_has_a_sensible_space(name):
    from trickbag.experiments.tune import check_space

    r = load(name)
    keys = {d.key for d in check_space(r)}  # every bound and choice builds a valid recipe
    assert {"optim.lr", "optim.weight_decay", "loss.label_smoothing"} <= keys
    lr = next(d for d in r.search_space() if d.key == "optim.lr")
    assert lr.kind == "log_uniform" and lr.low < r.optim.lr < lr.high  # the shipped value lies inside


def test_the_search_section_changes_no_run_key():
    base = load("fashion-mnist")
    bare = override(base, {"search": {}})
    assert recipe_key(base) == recipe_key(bare)
    assert to_dict(base)["search"] and not to_dict(bare)["search"]


def test_recipes_config_and_search_stay_free_of_torch_and_optuna():
    code = ("import sys, trickbag.recipes.config as c, trickbag.recipes.search; c.load('fashion-mnist').search_space(); "
            "print(sorted(m for m in ('torch', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_the_starting_point_is_the_recipes_own_values_where_the_space_holds_them():
    from trickbag.recipes.config import flat_values
    from trickbag.recipes.search import starting_point

    r = load("fashion-mnist")
    point = starting_point(r.search_space(), flat_values(r))
    assert point == {"optim.lr": r.optim.lr, "optim.muon_lr": r.optim.muon_lr, "optim.weight_decay": r.optim.weight_decay,
                     "loss.label_smoothing": r.loss.label_smoothing, "schedule.params.warmup_steps": "0.02dur"}
    narrow = override(r, {"search": {"optim.lr": {"uniform": [0.5, 0.9]}, "train.epochs": {"int": [2, 10], "step": 4},
                                     "model.params.width": {"choice": [16, 32]}, "trick.mixup": {"choice": [True, False]}}})
    # lr 0.2 lies outside; epochs 6 lies on the step grid 2, 6, 10; width 16 is a choice; tricks are left to the sampler
    assert starting_point(narrow.search_space(), flat_values(narrow)) == {"train.epochs": 6, "model.params.width": 16}
