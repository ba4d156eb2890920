"""kill -9 for real: ``trickbag train`` in a subprocess, SIGKILLed at several points, then
``--resume``; the result must equal an uninterrupted run with the same seed, bit for bit, and
no damaged checkpoint may ever be chosen.

The kill points are reached through ``tests/train/driver.py``, which wraps
``trickbag.cli.main`` and parks the process at a chosen step or halfway through a chosen
checkpoint write; nothing in trickbag knows about it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.train.driver import run_until, train
from trickbag.train.checkpoint import load_checkpoint

def killed_run(tmp_path: Path, out: Path, mode: str, at: int) -> None:
    proc = run_until(tmp_path, out, mode, at)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def metrics(out: Path) -> list[dict]:
    timing = ("time_s", "train_time_s", "images_per_s")
    return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in (out / "metrics.jsonl").read_text().splitlines()]


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(out / "checkpoints" / "epoch_0003.pt")
    return {**state["model"], **{f"ema.{k}": v for k, v in state["ema"].items()}}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("kill") / "full"
    result = train(out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("mode,at", [("step", 14), ("save", 2), ("step", 20)],
                         ids=["mid-epoch-2", "while-writing-epoch-2-checkpoint", "first-step-of-epoch-3"])
def test_a_killed_run_resumes_to_the_same_result(tmp_path, uninterrupted, mode, at):
    out = tmp_path / "run"
    killed_run(tmp_path, out, mode, at)
    leftovers = list((out / "checkpoints").glob("*.tmp"))
    if mode == "save":
        assert leftovers, "the kill was meant to leave a partial checkpoint write"
    resumed = train(out, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    newest_whole = {14: "epoch_0001.pt", 2: "epoch_0001.pt", 20: "epoch_0002.pt"}[at]
    assert summary["resumed_from"] == newest_whole and summary["epochs"] == 3
    assert not list((out / "checkpoints").glob("*.tmp"))
    if leftovers:
        assert "removed unfinished writes" in resumed.stderr
    full, mine = final_weights(uninterrupted), final_weights(out)
    assert full.keys() == mine.keys()
    for key in full:
        assert torch.equal(full[key], mine[key]), key
    assert metrics(out) == metrics(uninterrupted)


def test_a_run_killed_before_its_first_checkpoint_cannot_resume_and_says_how_to_restart(tmp_path):
    out = tmp_path / "run"
    killed_run(tmp_path, out, "step", 3)
    resumed = train(out, "--resume")
    assert resumed.returncode == 2 and "no checkpoint to continue from" in resumed.stderr and "--overwrite" in resumed.stderr
    again = train(out, "--overwrite", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["epochs"] == 3


def test_ctrl_c_exits_130_with_a_summary_and_resumes_to_the_same_result(tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = run_until(tmp_path, out, "slow", 13, "--json")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    summary = json.loads(stdout)
    assert summary["stopped"].startswith("interrupted (Ctrl-C)") and 13 <= summary["steps"] < 20
    assert (out / "checkpoints" / "interrupt.pt").is_file()
    resumed = train(out, "--resume", "--json")
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["resumed_from"] == "interrupt.pt"
    full, mine = final_weights(uninterrupted), final_weights(out)
    assert all(torch.equal(full[k], mine[k]) for k in full)
    assert metrics(out) == metrics(uninterrupted)


def test_a_second_ctrl_c_stops_at_once_with_130(tmp_path):
    out = tmp_path / "run"
    proc = run_until(tmp_path, out, "slow", 13)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted twice" in stderr and "Traceback" not in stderr, stderr
    assert not (out / ".lock").exists()
    resumed = train(out, "--resume", "--json")
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["resumed_from"] == "epoch_0001.pt"


def test_a_diverging_run_exits_1_and_json_still_prints_the_summary(tmp_path):
    result = train(tmp_path / "run", "--set", "optim.lr=1000", "--json")
    assert result.returncode == 1 and "training diverged" in result.stderr and "Traceback" not in result.stderr
    summary = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert summary["diverged"] is True and summary["stopped"].startswith("diverged: ")
    doctor = subprocess.run([sys.executable, "-m", "trickbag.cli", "doctor", str(tmp_path / "run"), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert doctor.returncode == 0 and json.loads(doctor.stdout)["findings"][0]["code"] == "diverged"


def test_resume_and_overwrite_together_are_refused(tmp_path):
    result = subprocess.run([sys.executable, "-m", "trickbag.cli", "train", "--out", str(tmp_path), "--resume", "--overwrite"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "give one of them" in result.stderr


def test_a_data_dir_without_the_data_is_an_error_and_the_summary_records_the_source(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = train(tmp_path / "run", "--data-dir", str(empty))
    assert refused.returncode == 2 and f"data_dir {empty}" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "run").exists()
    done = train(tmp_path / "ok", "--set", "train.epochs=1", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["data"]["source"] in ("generated", "/usr/share/datasets/fashion-mnist")
