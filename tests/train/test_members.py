"""``train.members``: one ``trickbag train`` trains several seeds and reports their ensemble.
Each member must be the very run ``--set train.seed=...`` gives, the ensemble's figure must
be what ``trickbag ensemble`` computes from the saved members, and a killed or stopped
ensemble must resume to the same result."""

from __future__ import annotations

import json
import signal

import pytest

from tests.train.driver import run_until, train
from tests.train.helpers import recipe
from trickbag.recipes import RecipeError, override
from trickbag.train import RunDirError, Trainer
from trickbag.train.ensemble import ensemble_accuracy, fit_members, member_dirs

TWO = ("train.epochs=2", "train.members=2", "train.seed=5")


def test_members_are_the_seeds_runs_and_the_ensemble_is_their_mean(tmp_path, small_data):
    summary = fit_members(recipe(*TWO, "train.eval_test=true"), tmp_path / "ens", quiet=True, data=small_data,
                          tensorboard=False)
    folders = member_dirs(tmp_path / "ens")
    assert [f.name for f in folders] == ["member0", "member1"]
    assert [m["seed"] for m in summary["members"]] == [5, 6]
    # member 1 is exactly the single run of seed 6 (runs on one CPU thread are deterministic)
    alone = Trainer(override(recipe(*TWO, "train.eval_test=true"), {"train.members": 1, "train.seed": 6}), out=tmp_path / "alone", quiet=True,
                    data=small_data, tensorboard=False).fit()
    assert summary["members"][1]["test_acc"] == alone["test_acc"]
    # the ensemble equals trickbag ensemble over the saved members (reloaded from their checkpoints)
    reloaded = ensemble_accuracy(folders, data=small_data)
    assert summary["test_acc"] == reloaded["ensemble_test_acc"]
    assert summary["test_acc_by_tta"]["none"] == reloaded["ensemble_test_acc_no_tta"]
    assert summary["member_test_acc_mean"] == pytest.approx(sum(m["test_acc"] for m in summary["members"]) / 2)
    assert summary["train_time_s"] == pytest.approx(sum(m["train_time_s"] for m in summary["members"]))
    # the curve runs on the ensemble's clock: member 1's epochs come after member 0's training, then the ensemble
    own = [json.loads((f / "summary.json").read_text())["test_acc_by_train_time"] for f in folders]
    shift = summary["members"][0]["train_time_s"]
    expected = [tuple(p) for p in own[0]] + [(t + shift, acc) for t, acc in own[1]] + [(summary["train_time_s"], summary["test_acc"])]
    assert len(own[0]) == len(own[1]) == 2
    assert [tuple(p) for p in summary["test_acc_by_train_time"]] == pytest.approx(expected)
    on_disk = json.loads((tmp_path / "ens" / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert on_disk["test_acc"] == summary["test_acc"] and on_disk["config"]["train"]["members"] == 2


def test_a_stopped_member_resumes_and_finished_ones_are_kept(tmp_path, small_data):
    full = fit_members(recipe(*TWO), tmp_path / "full", quiet=True, data=small_data, tensorboard=False)
    out = tmp_path / "cut"
    fit_members(recipe(*TWO), out, quiet=True, data=small_data, tensorboard=False)
    # as if killed in member 1 after its first epoch's checkpoint: no summaries, no epoch-2 checkpoint
    (out / "summary.json").unlink()
    (out / "member1" / "summary.json").unlink()
    (out / "member1" / "checkpoints" / "epoch_0002.pt").unlink()
    kept = (out / "member0" / "summary.json").stat().st_mtime_ns
    with pytest.raises(RunDirError, match="already holds a run"):
        fit_members(recipe(*TWO), out, quiet=True, data=small_data, tensorboard=False)
    resumed = fit_members(recipe(*TWO), out, resume=True, quiet=True, data=small_data, tensorboard=False)
    assert (out / "member0" / "summary.json").stat().st_mtime_ns == kept  # not trained again
    assert json.loads((out / "member1" / "summary.json").read_text())["resumed_from"] == "epoch_0001.pt"
    assert [m["test_acc"] for m in resumed["members"]] == [m["test_acc"] for m in full["members"]]
    assert resumed["test_acc"] == full["test_acc"]
    # --overwrite starts again and removes the old members
    (out / "member7").mkdir()
    again = fit_members(recipe("train.epochs=1", "train.members=2"), out, overwrite=True, quiet=True, data=small_data,
                        tensorboard=False)
    assert [f.name for f in member_dirs(out)] == ["member0", "member1"] and again["epochs"] == 1


def test_members_bad_values_and_a_plain_trainer_are_refused(tmp_path, small_data):
    with pytest.raises(RecipeError, match="train.members"):
        recipe("train.members=0")
    with pytest.raises(RecipeError, match="train.members=2: a Trainer trains one net"):
        Trainer(recipe(*TWO), out=tmp_path / "t", quiet=True, data=small_data, tensorboard=False).fit()
    out = tmp_path / "few"
    fit_members(recipe("train.epochs=1", "train.members=2"), out, quiet=True, data=small_data, tensorboard=False)
    (out / "member2").mkdir()
    with pytest.raises(RunDirError, match="member2 beyond the recipe's train.members=2"):
        fit_members(recipe("train.epochs=1", "train.members=2"), out, resume=True, quiet=True, data=small_data,
                    tensorboard=False)


def test_cli_trains_an_ensemble_resumes_it_after_a_kill_and_prints_strict_json(tmp_path):
    members = ("--set", "train.members=2")
    full = train(tmp_path / "full", *members, "--json")
    assert full.returncode == 0, full.stderr
    expected = json.loads(full.stdout, parse_constant=lambda c: pytest.fail(c))
    assert len(expected["members"]) == 2 and 0.0 <= expected["test_acc"] <= 1.0
    out = tmp_path / "killed"
    proc = run_until(tmp_path, out, "step", 14, *members)  # member 0, mid-epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    resumed = train(out, "--resume")  # the human-readable report this time; the figures from summary.json
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads((out / "member0" / "summary.json").read_text())["resumed_from"] == "epoch_0001.pt"
    assert [m["test_acc"] for m in summary["members"]] == [m["test_acc"] for m in expected["members"]]
    assert summary["test_acc"] == expected["test_acc"]
    assert f"test accuracy {expected['test_acc']:.4f}" in resumed.stdout and "the ensemble of 2 members" in resumed.stdout


def test_tools_that_study_a_recipe_train_one_net_of_an_ensemble_recipe(tmp_path, small_data):
    from trickbag.experiments.ablate import Ablation
    from trickbag.recipes import save

    two = recipe(*TWO)
    assert two.member(1).train.seed == 6 and two.member(1).train.members == 1
    assert recipe("train.epochs=1").member() == recipe("train.epochs=1")  # one net: itself
    ablation = Ablation(two, ["label_smoothing"], "one-at-a-time", [0], tmp_path / "abl", data=small_data)
    assert {r.train.members for r in ablation.recipes} == {1}
    teacher = tmp_path / "teacher.yaml"
    save(recipe("train.epochs=1", "train.members=2"), teacher)
    student = recipe("train.epochs=1", f"distill.teacher={teacher}", "distill.alpha=0.5")
    Trainer(student, out=tmp_path / "runs" / "student", quiet=True, data=small_data, tensorboard=False).fit()
    [trained] = list((tmp_path / "runs").glob("teacher-*"))
    assert not member_dirs(trained) and json.loads((trained / "summary.json").read_text())["config"]["train"]["members"] == 1
