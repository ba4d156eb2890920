"""Regression tests for the command-line defects of issue #9, each run as a user runs it
(a subprocess on the console script): strict JSON on stdout, ``1e-5`` read as a number
everywhere, one ``error: ...`` line (status 2) instead of a traceback, ``--plot DIR``
writing into DIR, and ``find-lr --rule minimum/10``.

Expected values come from closed forms written here (float32 overflow of a ReLU MLP's
signal, ``1e300 * 10**t`` against the float range, TF's ``cosine_decay``), not from the
code under test.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import DATA_ARGS
from trickbag._params import load_yaml
from trickbag.doctor.rules import Thresholds

TRICKBAG = [shutil.which("trickbag")] if shutil.which("trickbag") else [sys.executable, "-m", "trickbag.cli"]

#: a recipe small enough to build, sweep or train in a few seconds on one CPU thread
TINY = [*DATA_ARGS, "--set", "data.train_subset=500", "--set", "data.val_size=100", "--set", "data.batch_size=50",
        "--set", "model.name=small_cnn", "--set", "model.params={widths: [8, 16], depth: 1}", "--set", "train.threads=1"]
TINY_TRAIN = [*TINY, "--set", "train.epochs=1"]
TINY_FIND = [*TINY, "--num-iter", "10"]
FLOAT32_MAX = 3.4028234663852886e38


def run(*args: str, cwd: str | Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*TRICKBAG, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, **(env or {})})


def ok(*args: str, **kwargs) -> subprocess.CompletedProcess:
    out = run(*args, **kwargs)
    assert out.returncode == 0, f"trickbag {' '.join(args)} failed ({out.returncode}): {out.stderr}"
    return out


def strict_json(text: str) -> dict:
    """Exactly one JSON object; ``NaN``/``Infinity`` (Python's extension) fail the test."""
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"stdout is not strict JSON: it holds {c}"))
    assert isinstance(data, dict)
    return data


def user_error(out: subprocess.CompletedProcess, *names: str) -> str:
    """Status 2 and a single ``error: ...`` line on stderr that names each of ``names``."""
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    for name in names:
        assert name in lines[0], f"{name!r} not named in: {lines[0]}"
    return lines[0]


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# 1. inspect-init: non-finite statistics are null, and "exploding" means what the doctor means


def _relu_mlp_std(layer: int, stddev: float, width: int) -> float:
    """Expected output std of weighted layer ``layer`` (1-based) of a ReLU MLP with
    N(0, stddev^2) weights, zero biases and N(0, 1) inputs of 784 features:
    ``stddev * sqrt(784)``, then ``* stddev * sqrt(width / 2)`` per layer (E[relu(x)^2] = var/2)."""
    return stddev * math.sqrt(784) * (stddev * math.sqrt(width / 2)) ** (layer - 1)


@pytest.mark.parametrize("stddev", [100.0, 1e4])
def test_inspect_init_overflowing_signal_is_null_and_exploding(stddev):
    # issue #9: "random_normal:stddev=100 --depth 40" printed NaN (not JSON) and the verdict "healthy: output std nan"
    out = ok("inspect-init", "--init", f"random_normal:stddev={stddev:g}", "--depth", "40", "--width", "64", "--json")
    (report,) = strict_json(out.stdout)["inits"].values()
    assert report["verdict"].startswith("exploding"), report["verdict"]
    layers = report["layers"]
    assert len(layers) == 40
    for k, layer in enumerate(layers, 1):
        expected = _relu_mlp_std(k, stddev, 64)
        assert layer["weight_std"] == pytest.approx(stddev, rel=0.05)  # the weights themselves are all finite
        if expected < FLOAT32_MAX / 50:  # even a 4.5-sigma element is far inside float32: finite
            assert layer["act_std"] is not None, f"layer {k}: output std ~{expected:.2g} is finite, JSON says null"
            assert expected / 3 < layer["act_std"] < expected * 3, (k, layer["act_std"], expected)
        elif expected > FLOAT32_MAX:  # the forward pass overflowed float32
            assert layer["act_std"] is None, (k, layer["act_std"])
    assert any(layer["act_std"] is None for layer in layers)


def test_inspect_init_overflow_in_the_first_layer():
    # stddev 1e37: the weights are finite (a float32 sum of them is not); the first layer's output overflows
    out = ok("inspect-init", "--init", "random_normal:stddev=1e37", "--depth", "2", "--width", "16", "--json")
    (report,) = strict_json(out.stdout)["inits"].values()
    first = report["layers"][0]
    assert first["weight_std"] == pytest.approx(1e37, rel=0.05)
    assert first["act_std"] is None and first["act_mean"] is None
    assert report["verdict"].startswith("exploding") and "layer 1" in report["verdict"], report["verdict"]


def test_inspect_init_exploding_threshold_is_the_doctors():
    # output std between the doctor's 1e2 and the old CLI's 1e3: was "healthy"
    out = ok("inspect-init", "--init", "random_normal:stddev=0.5", "--depth", "5", "--width", "64", "--json")
    (report,) = strict_json(out.stdout)["inits"].values()
    stds = [layer["act_std"] for layer in report["layers"]]
    assert all(s is not None for s in stds)
    assert Thresholds().act_explode < stds[-1] < 1e3, stds  # the case this test is about
    assert report["verdict"].startswith("exploding"), report["verdict"]


# 2. 1e-5 is a number everywhere


@pytest.mark.parametrize("text,expected", [
    ("1e-5", 1e-5), ("1E+3", 1000.0), (".5", 0.5), ("1e5", 1e5), ("-1e-5", -1e-5), ("+1.5e3", 1500.0),
    ("-.5", -0.5), ("2.5E-3", 2.5e-3),
])
def test_load_yaml_reads_yaml_1_2_floats(text, expected):
    value = load_yaml(text)
    assert type(value) is float and value == expected
    assert load_yaml(f"optim: {{lr: {text}}}") == {"optim": {"lr": expected}}


@pytest.mark.parametrize("text", [
    '"1e-5"', "'1e-5'", "yes", "no", "on", "10", "-3", "0x1F", "1_000", "1.0", "1:30", ".inf", "-.inf", "null", "~",
    "2024-01-02", "e5", "1e-5x", "1e", "1.2.3", ".", "._", "-", "abc", "[1, 2.5]", "{a: 1}",
])
def test_load_yaml_changes_nothing_but_floats(text):
    # everything that is not a YAML 1.2 float reads exactly as PyYAML's SafeLoader reads it
    expected = yaml.load(text, Loader=yaml.SafeLoader)  # noqa: S506 - SafeLoader
    value = load_yaml(text)
    assert value == expected and type(value) is type(expected)


def test_set_exponent_float_trains_and_is_recorded_as_a_float(tmp_path):
    run_dir = tmp_path / "run"
    out = ok("train", *TINY_TRAIN, "--set", "schedule.name=cosine", "--set", "schedule.params.final_lr=1e-5",
             "--out", str(run_dir), "--json")
    assert strict_json(out.stdout)["stopped"] == "completed"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())["schedule"]["params"]["final_lr"]
    summary = strict_json((run_dir / "summary.json").read_text())["config"]["schedule"]["params"]["final_lr"]
    for value in (saved, summary):
        assert type(value) is float and value == 1e-5


def test_recipe_file_exponent_floats(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        "data: {train_subset: 500, val_size: 100, batch_size: 50}\n"
        "model: {name: small_cnn, params: {widths: [8, 16], depth: 1}}\n"
        "optim: {name: adamw, lr: 1e-3, weight_decay: 5e-4}\n"
        "schedule: {name: cosine, params: {total_steps: 1dur, final_lr: 1e-5}}\n"
        "train: {epochs: 1, threads: 1}\n"
    )
    run_dir = tmp_path / "run"
    ok("train", "--recipe", str(recipe), *DATA_ARGS, "--out", str(run_dir), "--json")
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    for value, expected in ((saved["optim"]["lr"], 1e-3), (saved["optim"]["weight_decay"], 5e-4),
                            (saved["schedule"]["params"]["final_lr"], 1e-5)):
        assert type(value) is float and value == expected


def test_schedule_parameter_exponent_float():
    out = ok("schedule", "cosine_decay", "-p", "learning_rate=1e-3", "-p", "decay_steps=10", "-p", "alpha=1e-5",
             "--steps", "12", "--json")
    data = strict_json(out.stdout)
    assert data["config"]["alpha"] == 1e-5 and data["config"]["learning_rate"] == 1e-3
    # TF cosine_decay: lr * ((1 - alpha) * (1 + cos(pi * min(t, T) / T)) / 2 + alpha)
    expected = [1e-3 * ((1 - 1e-5) * 0.5 * (1 + math.cos(math.pi * min(t, 10) / 10)) + 1e-5) for t in range(12)]
    assert data["values"] == pytest.approx(expected, rel=1e-9)


def test_init_spec_exponent_float():
    out = ok("inspect-init", "--init", "random_normal:stddev=1e-2", "--depth", "3", "--width", "16", "--json")
    (report,) = strict_json(out.stdout)["inits"].values()
    assert report["params"] == {"stddev": 0.01} and type(report["params"]["stddev"]) is float
    assert report["layers"][0]["weight_std"] == pytest.approx(0.01, rel=0.05)  # 16 * 784 draws: ~0.6% noise


# 3. user errors are one line and status 2


#: the commands that read a recipe (--recipe NAME_OR_FILE, --set KEY=VALUE)
RECIPE_COMMANDS = ["train", "find-lr", "check", "doctor"]


@pytest.mark.parametrize("command", RECIPE_COMMANDS)
def test_malformed_yaml_recipe_file(tmp_path, command):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: [\n")
    user_error(run(command, "--recipe", str(bad), cwd=tmp_path), str(bad), "not valid YAML")


@pytest.mark.parametrize("command", RECIPE_COMMANDS)
def test_malformed_yaml_in_set(tmp_path, command):
    user_error(run(command, "--recipe", "fashion-mnist", "--set", "optim.lr=[1", cwd=tmp_path), "optim.lr", "not valid YAML")


@pytest.mark.parametrize("content", ["- 1\n- 2\n", "just a scalar\n"])
def test_recipe_file_that_is_not_a_mapping(tmp_path, content):
    recipe = tmp_path / "notmap.yaml"
    recipe.write_text(content)
    user_error(run("train", "--recipe", str(recipe), "--set", "optim.lr=0.1", cwd=tmp_path), str(recipe), "mapping")
    user_error(run("train", "--recipe", str(recipe), cwd=tmp_path), str(recipe), "mapping")


def test_set_list_item_of_the_wrong_type(tmp_path):
    user_error(run("train", "--set", "data.augment=[1]", cwd=tmp_path), "data.augment[0]")


def test_schedule_overflow_is_inf_not_a_traceback():
    # 1 * (1e10)**t leaves the float range at t = 31 (10**310); Python's float power raised OverflowError there,
    # TF's float arithmetic gives inf: the table shows inf, --json null, whatever --steps is
    table = ok("schedule", "exponential_decay", "-p", "learning_rate=1", "-p", "decay_steps=1", "-p", "decay_rate=1e10",
               "--steps", "400")
    assert "inf" in table.stdout and "Traceback" not in table.stderr
    data = strict_json(ok("schedule", "exponential_decay", "-p", "learning_rate=1", "-p", "decay_steps=1",
                          "-p", "decay_rate=1e10", "--steps", "400", "--json").stdout)
    first_inf = math.floor(math.log10(sys.float_info.max) / 10) + 1
    assert first_inf == 31
    assert data["values"][first_inf - 1] == pytest.approx(1e10 ** (first_inf - 1), rel=1e-12)
    assert data["values"][first_inf:] == [None] * (400 - first_inf)


def test_plot_with_an_unknown_ending(tmp_path):
    line = user_error(run("schedule", "cosine", "-p", "learning_rate=0.1", "-p", "total_steps=10", "--plot", "x.foo",
                          cwd=tmp_path), "--plot x.foo", ".png")
    assert "foo" in line
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_find_lr_apply_into_a_missing_folder_fails_before_the_sweep(tmp_path):
    missing = tmp_path / "missing" / "dir"
    # a sweep of a million updates would run far past the timeout: the error must come first
    out = run("find-lr", *TINY, "--num-iter", "1000000", "--apply", str(missing / "x.yaml"), timeout=60)
    user_error(out, str(missing))
    assert out.stdout == ""
    assert not missing.exists()


@pytest.mark.parametrize("relative", [False, True])
def test_directory_as_recipe(tmp_path, relative):
    folder = tmp_path / "adir"
    folder.mkdir()
    out = run("train", "--recipe", "adir" if relative else str(folder), cwd=tmp_path)
    line = user_error(out, "adir", "is a directory")
    assert "does not exist" not in line


# 4. schedule values that overflow to inf are null


@pytest.mark.parametrize("steps", [5, 12, 400])
def test_schedule_json_overflow_is_null(steps):
    out = ok("schedule", "exponential_decay", "-p", "learning_rate=1e300", "-p", "decay_steps=1", "-p", "decay_rate=10",
             "--steps", str(steps), "--json")
    data = strict_json(out.stdout)
    # lr_t = 1e300 * 10**t exceeds the largest float (~1.798e308) from t > log10(max) - 300 = 8.25 on
    first_inf = math.floor(math.log10(sys.float_info.max) - 300) + 1
    assert first_inf == 9
    values = data["values"]
    assert len(values) == steps
    for t, value in enumerate(values):
        if t < first_inf:
            assert value == pytest.approx(1e300 * 10.0**t, rel=1e-12)
        else:
            assert value is None, (t, value)
    assert data["min"] == 1e300
    if steps > first_inf:
        assert data["max"] is None and data["final"] is None
    else:
        assert data["final"] == pytest.approx(1e300 * 10.0 ** (steps - 1), rel=1e-12)


# 5. --plot DIR writes DIR/<name>.png


@pytest.mark.parametrize("args,name", [
    (("schedule", "cosine", "-p", "learning_rate=0.1", "-p", "total_steps=10", "--steps", "10"), "cosine.png"),
    (("inspect-init", "--init", "he_normal", "--depth", "3", "--width", "16"), "init.png"),
    (("find-lr", *TINY_FIND), "lr_finder.png"),
])
def test_plot_into_an_existing_folder(tmp_path, args, name):
    (tmp_path / "plots").mkdir()
    out = ok(*args, "--plot", "plots", "--json", cwd=tmp_path)
    assert is_png(tmp_path / "plots" / name)
    assert not (tmp_path / "plots.png").exists()
    assert strict_json(out.stdout)["plot"] == os.path.join("plots", name)


# 6. every --json command prints exactly one strict JSON object


@pytest.mark.parametrize("args", [
    ("schedules",),
    ("recipes",),
    ("schedule", "cosine", "-p", "learning_rate=0.1", "-p", "total_steps=10", "--steps", "10"),
    ("inspect-init", "--init", "he_normal", "--init", "random_normal:stddev=100", "--depth", "40", "--width", "64"),
    ("find-lr", *TINY_FIND),
    ("check", *TINY, "--batch", "4", "--steps", "20"),
    ("doctor", "--recipe", "fashion-mnist", *TINY, "--steps", "20", "--report", "{tmp}/doctor"),
    ("train", *TINY_TRAIN, "--out", "{tmp}/run"),
], ids=lambda args: args[0])
def test_every_json_command_prints_one_strict_object(tmp_path, args):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = ok(*args, "--json", cwd=tmp_path, env={"TMPDIR": str(tmp_path)})  # the doctor's probe run lands in TMPDIR
    strict_json(out.stdout)
    assert out.stdout.endswith("}\n") and out.stdout.count("\n") == 1


# 7. find-lr --rule minimum/10


def test_find_lr_rule_minimum_over_ten():
    data = strict_json(ok("find-lr", *TINY_FIND, "--rule", "minimum/10", "--json").stdout)
    assert data["rule"] == "minimum/10"
    lrs, losses = data["lrs"], data["losses"]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert data["lr"] == pytest.approx(lrs[best] / 10, rel=1e-12)
    assert data["suggestions"]["minimum"]["lr"] == data["lr"]

    table = ok("find-lr", *TINY_FIND, "--rule", "minimum/10").stdout
    marked = re.findall(r"\* (\w+)", table)
    assert marked == ["minimum"], table
