"""The ``trickbag`` command line, run as a user runs it (a subprocess on the console script)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest

TRICKBAG = [shutil.which("trickbag")] if shutil.which("trickbag") else [sys.executable, "-m", "trickbag.cli"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([*TRICKBAG, *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"trickbag {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out


def test_schedule_json_values_follow_the_formula():
    out = run("schedule", "exponential_decay", "-p", "learning_rate=0.1", "-p", "decay_steps=10",
              "-p", "decay_rate=0.5", "-p", "staircase=true", "--steps", "35", "--json")
    data = json.loads(out.stdout)
    assert data["values"] == pytest.approx([0.1 * 0.5 ** (t // 10) for t in range(35)])
    assert data["config"] == {"name": "exponential_decay", "learning_rate": 0.1, "decay_steps": 10,
                              "decay_rate": 0.5, "staircase": True}
    assert data["final"] == pytest.approx(0.1 * 0.5**3)


def test_schedule_table_and_plot(tmp_path):
    png = tmp_path / "lr.png"
    out = run("schedule", "cosine", "-p", "learning_rate=0.1", "-p", "total_steps=100", "-p", "warmup_steps=10",
              "--steps", "120", "--plot", str(png), "--log-y")
    assert "CosineAnneal" in out.stdout and "plot written" in out.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_schedule_tuple_parameters():
    out = run("schedule", "piecewise_constant", "-p", "boundaries=2,4", "-p", "values=1,0.5,0.25", "--steps", "6", "--json")
    assert json.loads(out.stdout)["values"] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]


@pytest.mark.parametrize(
    "args,message",
    [
        (("schedule", "cosin"), "unknown schedule 'cosin' (did you mean 'cosine'?)"),
        (("schedule", "cosine", "-p", "learning_rat=0.1"), "no parameter 'learning_rat' (did you mean 'learning_rate'?)"),
        (("schedule", "exponential_decay", "-p", "learning_rate=0.1", "-p", "decay_steps=0", "-p", "decay_rate=0.5"),
         "decay_steps must be > 0, got 0"),
        (("schedule", "cosine_decay", "-p", "learning_rate=abc", "-p", "decay_steps=10"), "learning_rate must be a number"),
        (("schedule", "cosine_decay", "-p", "learning_rate=0.1"), "missing 1 required positional argument: 'decay_steps'"),
        (("schedule", "cosine_decay", "-p", "learning_rate"), "parameters are written key=value"),
        (("inspect-init", "--init", "he_norml"), "unknown initializer 'he_norml' (did you mean 'he_normal'?)"),
        (("inspect-init", "--init", "random_normal:std=0.1"), "no parameter 'std' (did you mean 'stddev'?)"),
    ],
)
def test_bad_input_is_one_clear_line_and_status_2(args, message):
    out = run(*args, check=False)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_inspect_init_shows_vanishing_and_healthy_signals(tmp_path):
    png = tmp_path / "init.png"
    out = run("inspect-init", "--init", "random_normal:stddev=0.01", "--init", "he_normal", "--init", "lsuv",
              "--depth", "20", "--width", "128", "--plot", str(png), "--json")
    data = json.loads(out.stdout)
    inits = data["inits"]
    assert set(inits) == {"random_normal(stddev=0.01)", "he_normal", "lsuv"}
    assert inits["random_normal(stddev=0.01)"]["verdict"].startswith("vanishing")
    assert inits["he_normal"]["verdict"].startswith("healthy")
    lsuv_layers = inits["lsuv"]["layers"]
    assert len(lsuv_layers) == 20 and all(abs(l["act_std"] ** 2 - 1) < 0.1 for l in lsuv_layers)
    assert inits["lsuv"]["lsuv"][1]["iterations"] >= 1
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert math.isclose(inits["he_normal"]["layers"][0]["weight_std"], (2 / 784) ** 0.5, rel_tol=0.05)


def test_tricks_listing():
    from trickbag.experiments.tricks import trick_names

    data = json.loads(run("tricks", "--json").stdout, parse_constant=lambda c: pytest.fail(c))["tricks"]
    assert [row["name"] for row in data] == trick_names()
    zero_gamma = next(row for row in data if row["name"] == "zero_gamma")
    assert zero_gamma["needs"] == "a ResNet" and "BN" in zero_gamma["changes"]
    assert "label_smoothing" in run("tricks").stdout


def test_schedules_listing():
    data = json.loads(run("schedules", "--json").stdout)["schedules"]
    for name in ("exponential_decay", "cosine_decay_restarts", "one_cycle", "cifar_200_epochs"):
        assert name in data
    assert data["polynomial_decay"]["parameters"] == ["learning_rate", "decay_steps", "end_learning_rate", "power", "cycle"]
