"""``trickbag ablate``: the plan of each mode, paired statistics recomputed here from the
runs' own summary files, reruns that train only what is missing, a kill -9 mid-ablation
that resumes without retraining finished runs, strict JSON."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DATA_ARGS
from tests.train.helpers import recipe
from trickbag._json import dumps
from trickbag.experiments import ablate as A
from trickbag.recipes.config import recipe_key

STRICT = {"parse_constant": lambda c: pytest.fail(f"{c} in JSON")}


def test_plans_of_the_three_modes():
    tricks = ["warmup", "label_smoothing", "mixup"]
    assert [(v.name, v.tricks) for v in A.plan(tricks, "cumulative")] == [
        ("baseline", ()), ("+warmup", ("warmup",)), ("+warmup+label_smoothing", ("warmup", "label_smoothing")),
        ("+warmup+label_smoothing+mixup", ("warmup", "label_smoothing", "mixup"))]
    assert [(v.name, v.tricks) for v in A.plan(tricks, "one-at-a-time")] == [
        ("baseline", ()), ("+warmup", ("warmup",)), ("+label_smoothing", ("label_smoothing",)), ("+mixup", ("mixup",))]
    assert [(v.name, v.tricks) for v in A.plan(tricks, "leave-one-out")] == [
        ("all", ("warmup", "label_smoothing", "mixup")), ("-warmup", ("label_smoothing", "mixup")),
        ("-label_smoothing", ("warmup", "mixup")), ("-mixup", ("warmup", "label_smoothing"))]
    with pytest.raises(ValueError, match="mode must be one of .* \\(did you mean 'cumulative'"):
        A.plan(tricks, "cumulativ")
    with pytest.raises(KeyError, match="did you mean 'mixup'"):
        A.plan(["mixpu"], "cumulative")
    with pytest.raises(ValueError, match="each trick once"):
        A.plan(["mixup", "mixup"], "cumulative")


def test_run_keys_ignore_the_seed_and_see_everything_else():
    a = recipe("train.seed=1")
    assert recipe_key(a) == recipe_key(recipe("train.seed=2"))
    assert recipe_key(a) != recipe_key(recipe("train.seed=1", "loss.label_smoothing=0.2"))


def by_hand(variant, baseline):
    d = [x - y for x, y in zip(variant, baseline)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    t = {1: 12.706204736174698, 2: 4.302652729911275}[n - 1]
    return mean, (mean - t * sd / math.sqrt(n), mean + t * sd / math.sqrt(n))


def test_an_ablation_end_to_end_and_a_rerun_trains_only_what_is_missing(tmp_path, small_data, monkeypatch):
    base = recipe("train.epochs=1", "loss.label_smoothing=0.1", "train.checkpoint=false")
    trained = []
    real = A.train_one

    def counting(recipe_dict, out, threads, data=None):
        trained.append(Path(out).name)
        return real(recipe_dict, out, threads, data)

    monkeypatch.setattr(A, "train_one", counting)
    ablation = A.Ablation(base, ["label_smoothing", "ema"], "one-at-a-time", [0, 1], tmp_path / "abl", data=small_data)
    result = ablation.run()
    assert len(trained) == 6 and len(set(trained)) == 6  # 3 variants x 2 seeds, each once
    assert [v["name"] for v in result["variants"]] == ["baseline", "+label_smoothing", "+ema"]

    # every figure recomputed from the runs' own summary.json
    def accs(variant_index):
        rec = ablation.recipes[variant_index]
        return [json.loads((ablation.run_dir(rec, s) / "summary.json").read_text())["test_acc"] for s in (0, 1)]

    baseline = accs(0)
    assert ablation.recipes[0].loss.label_smoothing == 0 and ablation.recipes[0].train.ema_decay == 0
    for i, row in enumerate(result["variants"]):
        mine = accs(i)
        assert row["seeds"] == [0, 1] and row["test_acc"] == mine
        assert row["mean"] == pytest.approx(sum(mine) / 2)
        assert row["std"] == pytest.approx(abs(mine[0] - mine[1]) / math.sqrt(2))
        if i == 0:
            assert row["delta"] == 0 and not row["resolved"]
            continue
        delta, ci = by_hand(mine, baseline)
        assert row["delta"] == pytest.approx(delta, abs=1e-12)
        assert row["ci95"] == pytest.approx(list(ci), abs=1e-9)
    json.loads(dumps(result), **STRICT)
    table = (tmp_path / "abl" / "table.md").read_text().splitlines()
    assert len(table) == 2 + 3 and "+label_smoothing" in table[3]
    assert len((tmp_path / "abl" / "table.csv").read_text().splitlines()) == 1 + 6

    # a third seed and one more trick (off in the recipe, so the old variants stay as they were): only new runs train
    trained.clear()
    assert base.loss.mixup_alpha == 0
    more = A.Ablation(base, ["label_smoothing", "ema", "mixup"], "one-at-a-time", [0, 1, 2], tmp_path / "abl",
                      data=small_data)
    result = more.run()
    assert len(trained) == 3 + 3  # seed 2 of the three old variants, three seeds of +mixup
    assert [len(v["seeds"]) for v in result["variants"]] == [3, 3, 3, 3]
    png = A.plot_deltas(result, tmp_path / "abl" / "deltas.png")
    assert Path(png).stat().st_size > 1000

    # the paper's cumulative table over the same runs: only +label_smoothing+ema is new, and each
    # row also says what its own trick adds to the row above, paired by seed
    trained.clear()
    cum = A.Ablation(base, ["label_smoothing", "ema"], "cumulative", [0, 1], tmp_path / "abl", data=small_data)
    rows = cum.run()["variants"]
    assert len(trained) == 2 and [r["name"] for r in rows] == ["baseline", "+label_smoothing", "+label_smoothing+ema"]
    acc = [[json.loads((cum.run_dir(r, s) / "summary.json").read_text())["test_acc"] for s in (0, 1)] for r in cum.recipes]
    assert "step" not in rows[0]
    for i in (1, 2):
        delta, ci = by_hand(acc[i], acc[i - 1])
        assert rows[i]["step"]["delta"] == pytest.approx(delta, abs=1e-12)
        assert rows[i]["step"]["ci95"] == pytest.approx(list(ci), abs=1e-9)
    assert rows[1]["step"]["delta"] == pytest.approx(rows[1]["delta"], abs=1e-12)  # row 1's row above is the baseline
    header = A.to_markdown(cum.result()).splitlines()[0]
    assert "this trick (vs the row above)" in header and header.count("|") == 11


def test_time_budget_gives_a_slower_variant_fewer_epochs(tmp_path, small_data, monkeypatch):
    """The epochs follow round(epochs * baseline step time / variant step time), stored for reruns."""
    fake = {}

    def probe(recipe, data=None, steps=10, warmup=3):
        return 0.02 if recipe.optim.name == "muon" else 0.01  # muon "twice as slow"

    monkeypatch.setattr(A, "probe_step_time", probe)
    base = recipe("train.epochs=4", "model.name=vgg7", "model.params={width: 4}", "optim.name=nesterov")
    ablation = A.Ablation(base, ["muon"], "one-at-a-time", [0], tmp_path / "abl", budget="time", data=small_data)
    assert [r.train.epochs for r in ablation.recipes] == [4, 2]
    stored = json.loads((tmp_path / "abl" / "budget.json").read_text(), **STRICT)
    assert sorted(v["epochs"] for v in stored.values()) == [2, 4]
    monkeypatch.setattr(A, "probe_step_time", lambda *a, **k: fake["never"])  # a rerun reads the stored plan
    again = A.Ablation(base, ["muon"], "one-at-a-time", [0], tmp_path / "abl", budget="time", data=small_data)
    assert [r.train.epochs for r in again.recipes] == [4, 2]


DRIVER = '''
import sys, time
import trickbag.train.trainer as trainer_module

marker, at = sys.argv[1], int(sys.argv[2])
calls = [0]
real = trainer_module.Trainer._save_epoch_checkpoint

def save(self, is_best):
    real(self, is_best)
    calls[0] += 1
    if calls[0] == at:  # park right after this epoch checkpoint is on disk
        open(marker, "w").close()
        time.sleep(600)

trainer_module.Trainer._save_epoch_checkpoint = save
from trickbag.cli import main
sys.argv = ["trickbag", *sys.argv[3:]]
main()
'''

# 1000 images, batches of 100, 3 epochs: ~1 s a run
TINY = [*DATA_ARGS, "--set", "data.train_subset=1000", "--set", "data.val_size=200", "--set", "data.batch_size=100",
        "--set", "model.name=small_cnn", "--set", "model.params={widths: [8, 16], depth: 1}", "--set", "train.threads=1",
        "--set", "train.epochs=3"]


def test_kill_9_mid_ablation_resumes_without_retraining_finished_runs(tmp_path):
    out = tmp_path / "abl"
    args = ["ablate", "--recipe", "fashion-mnist-quick", "--tricks", "label_smoothing,tta_flip", "--mode", "one-at-a-time",
            "--seeds", "1", "--out", str(out), *TINY]
    driver, marker = tmp_path / "driver.py", tmp_path / "parked"
    driver.write_text(DRIVER)
    # run 1 saves 3 epoch checkpoints; park after run 2's second one
    proc = subprocess.Popen([sys.executable, str(driver), str(marker), "5", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the ablation ended before the kill point: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the ablation did not reach the kill point in 240 s")
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = list(out.glob("runs/*/summary.json"))
    assert len(finished) == 1
    first_mtime = finished[0].stat().st_mtime_ns
    partial = [d for d in out.glob("runs/*") if not (d / "summary.json").exists()]
    assert len(partial) == 1 and list((partial[0] / "checkpoints").glob("*.pt"))

    done = subprocess.run([sys.executable, "-m", "trickbag.cli", *args, "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout, **STRICT)
    assert [len(v["test_acc"]) for v in result["variants"]] == [1, 1, 1]
    assert finished[0].stat().st_mtime_ns == first_mtime  # not trained again
    resumed = json.loads((partial[0] / "summary.json").read_text())
    assert resumed["resumed"] and resumed["epochs"] == 3


def test_refused_trick_pairs_fail_before_any_run_trains(tmp_path, small_data):
    """infobatch beside lookahead is refused by the trainer; an ablation says so when it is
    built, naming the variant and both keys, instead of after its earlier rows have trained."""
    from trickbag.recipes.config import RecipeError

    base = recipe("train.epochs=1")
    with pytest.raises(RecipeError, match=r"variant 'all'.*train\.prune_easy.*train\.lookahead_steps"):
        A.Ablation(base, ["lookahead", "infobatch"], "leave-one-out", [0], tmp_path / "abl", data=small_data)
    with pytest.raises(RecipeError, match=r"variant '\+lookahead\+infobatch'"):
        A.Ablation(base, ["lookahead", "infobatch"], "cumulative", [0], tmp_path / "abl", data=small_data)
    assert not (tmp_path / "abl").exists()
    A.Ablation(base, ["lookahead", "infobatch"], "one-at-a-time", [0], tmp_path / "abl", data=small_data)  # never together
