"""Distillation inside the loop (teacher from a run directory or from a recipe, trained once
and cached) and ensembles of trained runs, each checked against a computation done here."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tests.train.helpers import FAST, recipe
from trickbag.recipes import RecipeError, save
from trickbag.train import Trainer
from trickbag.train.ensemble import ensemble_accuracy, load_member


def fit(r, out, data):
    return Trainer(r, out=out, quiet=True, data=data, tensorboard=False).fit()


def test_the_loop_distils_from_a_run_directory(tmp_path, small_data):
    teacher_run = tmp_path / "teacher"
    fit(recipe("train.epochs=1"), teacher_run, small_data)
    student = recipe("train.epochs=1", f"distill.teacher={teacher_run}", "distill.alpha=0.5", "distill.temperature=4",
                     "data.augment=[]", "loss.mixup_alpha=0", "loss.label_smoothing=0.1", "model.params={widths: [8, 16], dropout: 0}")
    trainer = Trainer(student, out=tmp_path / "student", quiet=True, data=small_data, tensorboard=False)
    assert not trainer.teacher.training and not any(p.requires_grad for p in trainer.teacher.parameters())
    reference = load_member(teacher_run, small_data).eval_model.eval()
    idx = torch.arange(50)
    x = trainer.prepare(small_data.train_x[idx], train=True)  # no augmentation: the batch the step will see
    y = small_data.train_y[idx]
    with torch.no_grad(), trainer.runtime.autocast():
        teacher_logits = reference(x).float()
        student_logits = trainer.model(x).float()  # train mode, as in the step (BN on batch statistics)
    with torch.no_grad(), trainer.runtime.autocast():
        torch.testing.assert_close(trainer.teacher(x).float(), teacher_logits)  # the recipe's teacher is that run's net
    T = 4.0
    p_teacher = torch.softmax(teacher_logits / T, 1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(student_logits / T, 1))).sum(1).mean()
    expected = 0.5 * F.cross_entropy(student_logits, y, label_smoothing=0.1) + 0.5 * T * T * kl
    loss = trainer.train_step(small_data.train_x[idx], y, index=idx)
    assert loss == pytest.approx(float(expected), rel=1e-4)


def test_a_recipe_teacher_is_trained_once_and_kept_beside_the_runs(tmp_path, small_data):
    teacher_yaml = tmp_path / "teacher.yaml"
    save(recipe("train.epochs=1"), teacher_yaml)
    student = [*FAST, "train.epochs=1", f"distill.teacher={teacher_yaml}", "distill.alpha=0.5"]
    first = fit(recipe(*student, "train.seed=0"), tmp_path / "runs" / "s0", small_data)
    teachers = list((tmp_path / "runs").glob("teacher-*/summary.json"))
    assert len(teachers) == 1 and first["stopped"] == "completed"
    stamp = teachers[0].stat().st_mtime_ns
    fit(recipe(*student, "train.seed=1"), tmp_path / "runs" / "s1", small_data)
    assert teachers[0].stat().st_mtime_ns == stamp  # reused, not retrained
    assert json.loads(teachers[0].read_text())["config"]["distill"]["alpha"] == 0.0


def test_a_teacher_trained_on_other_inputs_is_refused(tmp_path, small_data):
    teacher_run = tmp_path / "teacher"
    fit(recipe("train.epochs=1", "data.log1p=true"), teacher_run, small_data)
    with pytest.raises(RecipeError, match="trained with data.log1p True; the student has False"):
        Trainer(recipe(f"distill.teacher={teacher_run}", "distill.alpha=0.5"), out=tmp_path / "s", quiet=True, data=small_data)
    with pytest.raises(RecipeError, match="no such run directory, checkpoint file or recipe"):
        Trainer(recipe(f"distill.teacher={tmp_path / 'nowhere'}", "distill.alpha=0.5"), out=tmp_path / "s", quiet=True,
                data=small_data)


def test_an_ensemble_of_identical_members_equals_one_member(tmp_path, small_data):
    run = tmp_path / "a"
    summary = fit(recipe("train.epochs=1", "train.ema_decay=0.9"), run, small_data)
    one = ensemble_accuracy([run], data=small_data)
    two = ensemble_accuracy([run, run, run], data=small_data)
    assert one["ensemble_test_acc"] == two["ensemble_test_acc"] == summary["test_acc"]
    assert [m["test_acc"] for m in two["members"]] == [summary["test_acc"]] * 3


def test_an_ensemble_averages_the_members_probabilities(tmp_path, small_data):
    runs = [tmp_path / f"m{seed}" for seed in range(3)]
    for seed, run in enumerate(runs):
        fit(recipe("train.epochs=1", f"train.seed={seed}", "train.ema_decay=0"), run, small_data)
    result = ensemble_accuracy(runs, tta_flip=False, data=small_data)
    total = 0
    for run in runs:  # by hand: each member's own standardization, no test-time views
        member = load_member(run, small_data)
        model = member.model.eval()
        x = member.inputs(small_data.test_x, train=False)
        with torch.no_grad(), member.runtime.autocast():
            total = total + torch.softmax(model(x).float(), 1)
    expected = float((total.argmax(1) == small_data.test_y).float().mean())
    assert result["ensemble_test_acc"] == pytest.approx(expected, abs=1.5 / len(small_data.test_y))
    assert result["n"] == 3 and result["member_test_acc_best"] == max(m["test_acc"] for m in result["members"])


def test_bad_ensemble_members_get_clear_errors(tmp_path, small_data):
    with pytest.raises(FileNotFoundError, match="no such run directory or checkpoint file"):
        ensemble_accuracy([tmp_path / "missing"], data=small_data)
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    with pytest.raises(ValueError, match="no loadable checkpoint"):
        ensemble_accuracy([empty], data=small_data)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot load it as a checkpoint"):
        ensemble_accuracy([junk], data=small_data)


def test_ensemble_cli_prints_strict_json(tmp_path):
    import subprocess
    import sys

    from tests.train.driver import TINY

    run = tmp_path / "run"
    trained = subprocess.run([sys.executable, "-m", "trickbag.cli", "train", "--out", str(run), *TINY], capture_output=True,
                             text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr
    out = subprocess.run([sys.executable, "-m", "trickbag.cli", "ensemble", str(run), str(run), "--tta", "none", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout, parse_constant=lambda c: pytest.fail(c))
    assert result["n"] == 2 and result["ensemble_test_acc"] == result["members"][0]["test_acc"]
    bad = subprocess.run([sys.executable, "-m", "trickbag.cli", "ensemble", str(run), "--tta", "mirror"], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "--tta must be one of recipe, flip, none" in bad.stderr


def test_snapshots_at_each_warm_restart_make_an_ensemble(tmp_path, small_data):
    """600 images, batch 50: 12 steps an epoch; cycles of one epoch restart after steps 12 and 24."""
    restarts = ["schedule.name=cosine_decay_restarts", "schedule.params={first_decay_steps: 1ep, t_mul: 1.0}",
                "train.epochs=3", "train.snapshots=true", "train.ema_decay=0"]
    summary = fit(recipe(*restarts), tmp_path / "sgdr", small_data)
    snaps = sorted((tmp_path / "sgdr" / "checkpoints").glob("snapshot_*.pt"))
    assert [p.name for p in snaps] == ["snapshot_0000012.pt", "snapshot_0000024.pt"]
    assert [torch.load(p, weights_only=True)["step"] for p in snaps] == [12, 24]
    result = ensemble_accuracy([*snaps, tmp_path / "sgdr"], data=small_data)
    assert result["n"] == 3 and result["members"][2]["test_acc"] == summary["test_acc"]
    # a warmup's rising lr is no restart
    fit(recipe("train.epochs=2", "train.snapshots=true"), tmp_path / "warm", small_data)
    assert not list((tmp_path / "warm" / "checkpoints").glob("snapshot_*.pt"))
