"""Data-parallel training under torchrun (gloo, 2 processes on this CPU): the same losses as one
process with the same global batch, one writer, evaluation reduced across ranks (checked against
a one-process evaluation of the saved weights), a bit-exact resume, and a failing rank that ends
the whole job within seconds. Generated images (``data.name: synthetic``): these tests are
about the mechanics, not accuracy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trickbag.recipes import load, save
from trickbag.train import Trainer
from trickbag.train.checkpoint import load_checkpoint
from trickbag.train.distributed import Distributed

SCRIPT = Path(__file__).with_name("ddp_script.py")
TINY = ["data.name=synthetic", "data.val_size=200", "data.batch_size=100", "data.augment=[]", "model.name=small_cnn",
        "model.params={widths: [4, 8], depth: 1}", "optim.name=nesterov", "train.epochs=2", "train.threads=1",
        "train.tta_flip=false", "train.tta_translate=0", "train.precision=fp32"]


def torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def tiny_recipe(tmp_path: Path, *extra: str) -> Path:
    path = tmp_path / "tiny.yaml"
    save(load("fashion-mnist", TINY + list(extra)), path)
    return path


@pytest.mark.parametrize("n, world", [(100, 2), (10, 4), (7, 3), (2, 4), (0, 2)])
def test_shards_are_contiguous_disjoint_and_cover_the_batch(n, world):
    batch = torch.arange(n)
    shards = [Distributed(r, world, r, "gloo").shard(batch) for r in range(world)]
    assert torch.equal(torch.cat(shards), batch)
    sizes = [len(s) for s in shards]
    assert max(sizes) <= -(-n // world) and (n % world or len(set(sizes)) == 1)


def test_each_rank_and_step_draws_its_own_augmentation():
    seeds = {Distributed(r, 4, r, "gloo").augmentation_seed(7, step) for r in range(4) for step in range(1000)}
    assert len(seeds) == 4000
    assert Distributed(1, 4, 1, "gloo").augmentation_seed(7, 5) == Distributed(1, 2, 0, "gloo").augmentation_seed(7, 5)


def test_two_processes_give_one_process_losses_with_the_same_global_batch(tmp_path):
    # no BatchNorm (each rank would normalize its own half), no augmentation, fp32: the same
    # global batches, gradients averaged by DDP -> the same steps up to summation order
    recipe = tiny_recipe(tmp_path, "model.params={widths: [4, 8], depth: 1, bn: false}")
    one = tmp_path / "one"
    subprocess.run([sys.executable, str(SCRIPT), str(recipe), str(one)], check=True, capture_output=True, timeout=300)
    two = tmp_path / "two"
    run = torchrun(str(SCRIPT), str(recipe), str(two))
    assert run.returncode == 0, run.stderr[-3000:]
    a = json.loads((one / "losses.json").read_text())
    b = json.loads((two / "losses.json").read_text())
    assert a["world_size"] == 1 and b["world_size"] == 2
    assert len(a["losses"]) == len(b["losses"]) == 36  # 2 epochs of 1800 // 100 steps
    assert b["losses"] == pytest.approx(a["losses"], rel=1e-4, abs=1e-5)
    # and they moved: a run that trained nothing would match too
    assert a["losses"][-1] < a["losses"][0] - 0.05
    # each rank accumulating two micro-batches (gradients averaged across ranks once, on the last)
    accumulated = tiny_recipe(tmp_path, "model.params={widths: [4, 8], depth: 1, bn: false}", "train.accumulate=2")
    run = torchrun(str(SCRIPT), str(accumulated), str(tmp_path / "acc"))
    assert run.returncode == 0, run.stderr[-3000:]
    c = json.loads((tmp_path / "acc" / "losses.json").read_text())
    assert c["losses"] == pytest.approx(a["losses"], rel=1e-4, abs=1e-5)


def test_torchrun_train_writes_once_and_reduces_evaluation_over_ranks(tmp_path):
    recipe = tiny_recipe(tmp_path, "data.augment=[{name: flip}, {name: pad_crop, pad: 2}]")
    out = tmp_path / "run"
    run = torchrun("-m", "trickbag", "train", "--recipe", str(recipe), "--out", str(out), "--json", "--quiet")
    assert run.returncode == 0, run.stderr[-3000:]
    printed = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1  # rank 0 reports for the job
    summary = json.loads(printed[0])
    assert summary["world_size"] == 2 and summary == json.loads((out / "summary.json").read_text())
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    # the reduced test accuracy and loss are those of the final weights evaluated whole, in one process
    trainer = Trainer(load(str(recipe)), out=tmp_path / "eval", quiet=True, tensorboard=False)
    state = load_checkpoint(out / "checkpoints" / "epoch_0002.pt")
    trainer.model.load_state_dict(state["model"])
    whole = trainer.evaluate(trainer.data.test_x, trainer.data.test_y)
    assert summary["test_acc"] == whole["acc"] and summary["test_loss"] == pytest.approx(whole["loss"], rel=1e-6)


def test_a_torchrun_run_resumes_bit_exactly(tmp_path):
    recipe = tiny_recipe(tmp_path, "model.params={widths: [4, 8], depth: 1, bn: false}")
    full, cut = tmp_path / "full", tmp_path / "cut"
    for out in (full, cut):
        run = torchrun("-m", "trickbag", "train", "--recipe", str(recipe), "--out", str(out), "--quiet")
        assert run.returncode == 0, run.stderr[-3000:]
    # as if killed during epoch 2: its checkpoint and the summary never written
    (cut / "checkpoints" / "epoch_0002.pt").unlink()
    (cut / "checkpoints" / "best.pt").unlink(missing_ok=True)
    (cut / "summary.json").unlink()
    run = torchrun("-m", "trickbag", "train", "--recipe", str(cut / "config.yaml"), "--out", str(cut), "--resume", "--json", "--quiet")
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["resumed_from"] == "epoch_0001.pt" and summary["epochs"] == 2
    a = load_checkpoint(full / "checkpoints" / "epoch_0002.pt")["model"]
    b = load_checkpoint(cut / "checkpoints" / "epoch_0002.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_rank_that_raises_ends_the_job_within_seconds(tmp_path):
    recipe = tiny_recipe(tmp_path, "train.epochs=50")
    start = time.monotonic()
    run = torchrun(str(SCRIPT), str(recipe), str(tmp_path / "x"), "--fail-rank", "1", "--fail-step", "3", timeout=120)
    took = time.monotonic() - start
    assert run.returncode != 0 and "injected failure in rank 1 at step 3" in run.stderr
    assert took < 60, f"the job took {took:.0f} s to stop"  # 50 epochs would take far longer; the other rank did not hang


def test_bad_distributed_settings_are_clear_errors(tmp_path):
    run = torchrun("-m", "trickbag", "train", "--recipe", str(tiny_recipe(tmp_path, "data.batch_size=99")), "--out",
                   str(tmp_path / "a"), "--quiet", timeout=120)
    assert run.returncode != 0 and "data.batch_size (99) is the global batch and must be divisible by the 2 processes" in run.stderr
    run = torchrun("-m", "trickbag", "train", "--recipe", str(tiny_recipe(tmp_path, "train.sync_bn=true")), "--out",
                   str(tmp_path / "b"), "--quiet", timeout=120)
    assert run.returncode != 0 and "train.sync_bn needs CUDA" in run.stderr


def test_one_process_ignores_sync_bn_and_records_world_size_one(tmp_path, small_data):
    trainer = Trainer(load("fashion-mnist", TINY + ["train.sync_bn=true", "train.epochs=1"]), out=tmp_path / "r", quiet=True,
                      data=small_data, tensorboard=False)
    summary = trainer.fit()
    assert summary["world_size"] == 1 and trainer.dist is None and trainer.is_main
    shutil.rmtree(tmp_path / "r")


def test_accumulated_micro_batches_train_like_the_whole_batch(tmp_path, small_data):
    # no BatchNorm (micro-batches would be normalized alone), no augmentation, fp32
    common = TINY + ["model.params={widths: [4, 8], depth: 1, bn: false}", "data.name=fashion-mnist", "train.epochs=2"]
    runs = {}
    for k in (1, 4):
        trainer = Trainer(load("fashion-mnist", common + [f"train.accumulate={k}"]), out=tmp_path / f"k{k}", quiet=True,
                          data=small_data, tensorboard=False)
        summary = trainer.fit()
        runs[k] = (trainer.model.state_dict(), json.loads((tmp_path / f"k{k}" / "metrics.jsonl").read_text().splitlines()[-1]))
        assert summary["steps"] == 2 * (len(small_data.train_y) // 100)  # one step per batch of 100, whatever k
    (w1, m1), (w4, m4) = runs[1], runs[4]
    assert m4["train_loss"] == pytest.approx(m1["train_loss"], rel=1e-4)
    for key in w1:
        assert torch.allclose(w1[key], w4[key], rtol=1e-4, atol=1e-5), key
    moved = Trainer(load("fashion-mnist", common), out=tmp_path / "init", quiet=True, data=small_data, tensorboard=False).model.state_dict()
    assert any(not torch.allclose(moved[k], w1[k], atol=1e-3) for k in w1)  # training changed the weights


def test_accumulation_needs_equal_micro_batches(small_data):
    from trickbag.recipes import RecipeError, build

    with pytest.raises(RecipeError, match=r"data.batch_size \(100 per process\) must be divisible by train.accumulate \(3\)"):
        build(load("fashion-mnist", TINY + ["train.accumulate=3"]), data=small_data)
    with pytest.raises(RecipeError, match="train.accumulate must be > 0"):
        load("fashion-mnist", TINY + ["train.accumulate=0"])
