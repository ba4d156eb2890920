"""A run directory survives what users and machines do to it: a second run into it, two runs
at once, a resume that cannot work, a diverging run, damaged checkpoints, a full disk
(issue #9's defects 1-5 and 11, and its reliability list)."""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from tests.train.driver import run_until, train
from tests.train.helpers import StopAfterEpoch, StopAtStep, recipe, same_weights
from trickbag.doctor import diagnose, read_outcome, read_run
from trickbag.recipes import build
from trickbag.train import (
    DivergedError,
    ResumeError,
    RunDirError,
    RunWriteError,
    Trainer,
)
from trickbag.train.checkpoint import load_checkpoint
from trickbag.train.rundir import RunLock

def files(folder):
    """{relative path: bytes} of every file under ``folder`` (TensorBoard events excluded)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "tensorboard" not in p.parts}


def strict_json(text):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in {text[:200]}"))


# --- defect 1: a second run into an existing --out -----------------------------------------


def test_training_again_into_a_run_is_refused_and_the_old_run_stays_whole(tmp_path, small_data):
    out = tmp_path / "run"
    Trainer(recipe(), out=out, quiet=True, data=small_data).fit()
    before = files(out)
    with pytest.raises(RunDirError, match="already holds a run .*--resume.*--overwrite"):
        Trainer(recipe("train.epochs=2"), out=out, quiet=True, data=small_data).fit()
    assert files(out) == before  # nothing written, nothing pruned
    # the old run still resumes as itself: 3 epochs were done, none is redone
    resumed = Trainer(recipe(), out=out, quiet=True, data=small_data)
    summary = resumed.fit(resume=True)
    assert summary["resumed"] and summary["epochs"] == 3 and summary["resumed_from"] == "epoch_0003.pt"


def test_overwrite_replaces_the_old_run_and_a_later_resume_continues_the_new_one(tmp_path, small_data):
    out = tmp_path / "run"
    Trainer(recipe(), out=out, quiet=True, data=small_data).fit()
    (out / "notes.txt").write_text("mine")  # not a run file: left alone
    new = Trainer(recipe("train.epochs=2"), out=out, quiet=True, data=small_data, callbacks=[StopAfterEpoch(1)])
    new.fit(overwrite=True)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "epoch_0001.pt"]
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    assert (out / "notes.txt").read_text() == "mine"
    cont = Trainer(recipe("train.epochs=2"), out=out, quiet=True, data=small_data)
    summary = cont.fit(resume=True)
    assert summary["epochs"] == 2 and summary["resumed_from"] == "epoch_0001.pt"
    reference = Trainer(recipe("train.epochs=2"), out=tmp_path / "ref", quiet=True, data=small_data)
    reference.fit()
    assert same_weights(cont, reference)


# --- defect 2: two runs on one --out at once ------------------------------------------------


def test_a_locked_run_directory_is_refused_naming_the_owner(tmp_path, small_data):
    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out):
        with pytest.raises(RunDirError, match=f"in use by another trickbag run \\(pid {os.getpid()} "):
            Trainer(recipe(), out=out, quiet=True, data=small_data).fit()
    assert not (out / "config.yaml").exists()
    # released: the same directory trains now, and the lock is gone afterwards
    Trainer(recipe("train.epochs=1"), out=out, quiet=True, data=small_data).fit()
    assert not (out / ".lock").exists()


def test_a_stale_lock_left_by_a_killed_run_is_taken_over(tmp_path, small_data):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / ".lock").write_text(f"pid {dead.stdout.strip()} on this host\n")  # its process is gone; no flock held
    summary = Trainer(recipe("train.epochs=1"), out=out, quiet=True, data=small_data).fit()
    assert summary["stopped"] == "completed"


def test_two_cli_runs_at_once_the_second_refuses(tmp_path):
    out = tmp_path / "run"
    first = run_until(tmp_path, out, "step", 15)  # parked mid-epoch 2, holding the run directory
    try:
        second = train(out)
        assert second.returncode == 2 and f"in use by another trickbag run (pid {first.pid} " in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    # the kernel dropped the dead run's lock: the run resumes and ends whole, its log unmixed
    resumed = train(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


# --- defect 3: a resume that cannot work writes nothing -------------------------------------


def test_an_incompatible_resume_is_a_clear_error_and_changes_nothing(tmp_path, small_data):
    out = tmp_path / "run"
    Trainer(recipe(), out=out, quiet=True, data=small_data, callbacks=[StopAfterEpoch(1)]).fit()
    before = files(out)
    bigger = recipe("model.params={widths: [8, 16, 32], depth: 1}")
    with pytest.raises(ResumeError, match=r"does not fit this recipe \(model\.params: .*\[8, 16\].*\[8, 16, 32\]"):
        Trainer(bigger, out=out, quiet=True, data=small_data).fit(resume=True)
    assert files(out) == before  # config.yaml included
    summary = Trainer(recipe(), out=out, quiet=True, data=small_data).fit(resume=True)
    assert summary["epochs"] == 3


# --- defect 4: divergence stops the run -----------------------------------------------------


def test_a_diverging_run_stops_with_an_error_and_strict_json_and_the_doctor_reports_it(tmp_path, small_data):
    out = tmp_path / "run"
    with pytest.raises(DivergedError) as err:
        Trainer(recipe("optim.lr=1000"), out=out, quiet=True, data=small_data).fit()
    summary = strict_json((out / "summary.json").read_text())
    assert summary["diverged"] is True and summary["stopped"].startswith("diverged: ")
    assert err.value.summary["stopped"] == summary["stopped"]
    for line in (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []:
        strict_json(line)
    records, epochs, _ = read_run(out)
    findings = diagnose(records, epochs, outcome=read_outcome(out))
    assert findings[0].code == "diverged" and findings[0].severity == "error"


class AddToLoss:
    """The parts' loss plus a constant from step ``at`` on: the gradient is unchanged, so the
    weights stay finite while the loss is far above its start."""

    def __init__(self, loss_fn, trainer_ref, at, amount):
        self.loss_fn, self.trainer_ref, self.at, self.amount = loss_fn, trainer_ref, at, amount

    def __call__(self, logits, y):
        loss = self.loss_fn(logits, y)
        return loss + self.amount if self.trainer_ref[0].step >= self.at else loss


def test_a_finite_loss_far_above_its_start_is_divergence_after_patience_steps(tmp_path, small_data):
    parts = build(recipe("train.nan_patience=4", "train.diverge_factor=100", "loss.label_smoothing=0"), data=small_data)
    ref = []
    parts.loss_fn = AddToLoss(parts.loss_fn, ref, at=15, amount=1e6)
    trainer = Trainer(parts, out=tmp_path / "run", quiet=True)
    ref.append(trainer)
    with pytest.raises(DivergedError, match=r"rose from .* to 1e\+06 .*> 100x.* for 4 steps"):
        trainer.fit()
    # steps 15, 16, 17 are taken with the loss above the bound; the 4th such step (18) stops before updating
    assert trainer.step == 18
    assert strict_json((tmp_path / "run" / "summary.json").read_text())["steps"] == 18


def test_a_healthy_run_is_not_called_diverged(tmp_path, small_data):
    summary = Trainer(recipe(), out=tmp_path / "run", quiet=True, data=small_data).fit()
    assert summary["diverged"] is False and summary["stopped"] == "completed"


# --- defect 5: damaged checkpoints ----------------------------------------------------------


def test_a_damaged_newest_checkpoint_is_skipped_with_a_message(tmp_path, small_data, capfd):
    out = tmp_path / "run"
    Trainer(recipe(), out=out, quiet=True, data=small_data, callbacks=[StopAfterEpoch(2)]).fit()
    newest = out / "checkpoints" / "epoch_0002.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # torn
    capfd.readouterr()
    trainer = Trainer(recipe(), out=out, quiet=True, data=small_data)
    summary = trainer.fit(resume=True)
    err = capfd.readouterr().err
    assert "skipped checkpoint" in err and "epoch_0002.pt" in err
    assert summary["resumed_from"] == "epoch_0001.pt"
    assert [s["checkpoint"] for s in summary["skipped_checkpoints"]] == ["epoch_0002.pt"]
    reference = Trainer(recipe(), out=tmp_path / "ref", quiet=True, data=small_data)
    reference.fit()
    assert same_weights(trainer, reference)  # epoch 2 redone exactly


def test_resume_with_no_loadable_checkpoint_refuses_and_keeps_the_logs(tmp_path, small_data):
    out = tmp_path / "run"
    Trainer(recipe(), out=out, quiet=True, data=small_data, callbacks=[StopAfterEpoch(2)]).fit()
    for ckpt in (out / "checkpoints").glob("*.pt"):
        ckpt.write_bytes(b"not a checkpoint")
    before = files(out)
    with pytest.raises(ResumeError, match="no checkpoint in .* loads .*epoch_0002.pt.*epoch_0001.pt.*--overwrite"):
        Trainer(recipe(), out=out, quiet=True, data=small_data).fit(resume=True)
    assert files(out) == before


def test_resume_without_any_checkpoint_refuses(tmp_path, small_data):
    out = tmp_path / "run"
    Trainer(recipe("train.checkpoint=false", "train.epochs=1"), out=out, quiet=True, data=small_data).fit()
    with pytest.raises(ResumeError, match="has no checkpoint to continue from"):
        Trainer(recipe(), out=out, quiet=True, data=small_data).fit(resume=True)


# --- defect 11: leftovers of a kill, the epoch loss across a resume ---------------------------


def test_the_epoch_train_loss_after_a_mid_epoch_resume_averages_the_whole_epoch(tmp_path, small_data):
    full = Trainer(recipe(), out=tmp_path / "full", quiet=True, data=small_data)
    full.fit()
    steps = full.steps_per_epoch
    Trainer(recipe(), out=tmp_path / "part", quiet=True, data=small_data, callbacks=[StopAtStep(steps + 4)]).fit()
    Trainer(recipe(), out=tmp_path / "part", quiet=True, data=small_data).fit(resume=True)

    def losses(run):
        return [json.loads(x)["train_loss"] for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    assert losses("part") == losses("full")  # the same sum, in the same order: equal to the bit


def test_unfinished_checkpoint_writes_are_removed(tmp_path, small_data, capfd):
    out = tmp_path / "run"
    Trainer(recipe(), out=out, quiet=True, data=small_data, callbacks=[StopAfterEpoch(1)]).fit()
    leftover = out / "checkpoints" / "epoch_0002.pt.k3j4.tmp"
    leftover.write_bytes(b"half a checkpoint")
    capfd.readouterr()
    Trainer(recipe(), out=out, quiet=True, data=small_data).fit(resume=True)
    assert not leftover.exists() and "removed unfinished writes epoch_0002.pt.k3j4.tmp" in capfd.readouterr().err
    assert not list((out / "checkpoints").glob("*.tmp"))


# --- a full disk, an unwritable place ---------------------------------------------------------


def test_a_full_disk_is_a_clear_error_and_the_previous_checkpoint_is_intact(tmp_path, small_data, monkeypatch):
    import trickbag.train.checkpoint as checkpoint

    real_save = torch.save

    def full_disk_save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == 2:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(checkpoint.torch, "save", full_disk_save)
    with pytest.raises(RunWriteError, match="No space left on device; the previous checkpoint epoch_0001.pt is intact"):
        Trainer(recipe(), out=out, quiet=True, data=small_data).fit()
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert load_checkpoint(out / "checkpoints" / "epoch_0001.pt")["epoch"] == 1
    assert not list((out / "checkpoints").glob("*.tmp"))
    assert not (out / ".lock").exists()
    summary = Trainer(recipe(), out=out, quiet=True, data=small_data).fit(resume=True)  # space freed: it continues
    assert summary["epochs"] == 3 and summary["resumed_from"] == "epoch_0001.pt"


def test_an_out_that_cannot_be_created_is_a_clear_error(tmp_path, small_data):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(RunDirError, match="cannot create the run directory"):
        Trainer(recipe(), out=blocker / "run", quiet=True, data=small_data).fit()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions; the full-disk test covers refused writes")
def test_a_read_only_out_is_a_clear_error(tmp_path, small_data):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        with pytest.raises(RunDirError, match="cannot write to the run directory"):
            Trainer(recipe(), out=out, quiet=True, data=small_data).fit()
    finally:
        out.chmod(0o700)


def test_summary_and_metrics_are_strict_json(tmp_path, small_data):
    out = tmp_path / "run"
    Trainer(recipe("train.epochs=1"), out=out, quiet=True, data=small_data).fit()
    summary = strict_json((out / "summary.json").read_text())
    assert summary["data"]["source"] and math.isfinite(summary["test_acc"])
    for line in (out / "metrics.jsonl").read_text().splitlines():
        strict_json(line)


# --- review findings: early stop across a resume, torn log lines, a user's files -------------


def test_an_early_stopped_run_resumed_after_a_kill_does_not_train_on(tmp_path, small_data):
    out = tmp_path / "run"
    settings = ("optim.lr=0", "train.early_stopping=1", "train.ema_decay=0", "train.epochs=5")
    first = Trainer(recipe(*settings), out=out, quiet=True, data=small_data).fit()
    assert first["epochs"] == 2 and first["stopped"].startswith("early stopping")
    (out / "summary.json").unlink()  # as if killed during the final test evaluation
    again = Trainer(recipe(*settings), out=out, quiet=True, data=small_data).fit(resume=True)
    assert again["epochs"] == 2 and again["stopped"] == first["stopped"]


def test_a_torn_last_log_line_does_not_stop_a_resume(tmp_path, small_data):
    out = tmp_path / "run"
    Trainer(recipe(), out=out, quiet=True, data=small_data, callbacks=[StopAfterEpoch(1)]).fit()
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "step": 24, "lr": 0.1')  # a full disk or a kill cut it off
    summary = Trainer(recipe(), out=out, quiet=True, data=small_data).fit(resume=True)
    assert summary["epochs"] == 3
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_a_users_tmp_files_in_out_are_left_alone(tmp_path, small_data):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.tmp").write_text("mine")
    Trainer(recipe("train.epochs=1"), out=out, quiet=True, data=small_data).fit()
    with pytest.raises(RunDirError):
        Trainer(recipe("train.epochs=1"), out=out, quiet=True, data=small_data).fit()
    assert (out / "notes.tmp").read_text() == "mine"
