"""``trickbag tune``: a study that resumes with the trials it had, two workers on the embedded
journal that finish exactly the asked trials, a worker killed with kill -9 whose trial is failed
and retried (resuming its run) by a rerun, pruning of an obviously bad trial, the best trial
written as a recipe and tested once, PostgreSQL with two workers, strict JSON.

Trials train a tiny net on generated images (``data.name: synthetic``): these tests are about
the study's bookkeeping, not about accuracy; every worker is a real process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="trickbag tune needs optuna (pip install -e '.[dev]')")

from trickbag._json import dumps  # noqa: E402
from trickbag.experiments import tune as T  # noqa: E402
from trickbag.recipes import RecipeError, load, save  # noqa: E402
from trickbag.recipes.config import to_dict  # noqa: E402

STRICT = {"parse_constant": lambda c: pytest.fail(f"{c} in JSON")}
TINY = ["data.name=synthetic", "data.val_size=200", "data.batch_size=100", "data.augment=[]",
        "model.name=small_cnn", "model.params={widths: [4, 8], depth: 1}", "optim.name=nesterov",
        "train.epochs=2", "train.threads=1", "train.tta_flip=false", "train.tta_translate=0",
        "search={optim.lr: {log_uniform: [0.01, 0.5]}, loss.label_smoothing: {uniform: [0.0, 0.2]}}"]


def tiny(*extra: str):
    return load("fashion-mnist", TINY + list(extra))


def config(tmp_path: Path, trials: int, workers: int = 1, *extra: str, **kw) -> T.TuneConfig:
    return T.TuneConfig(to_dict(tiny(*extra)), trials, str(tmp_path / "tune"), "tiny", workers=workers, threads=1,
                        final=kw.pop("final", False), **kw)


def trials_of(cfg: T.TuneConfig):
    storage = T.open_storage(cfg.storage, cfg.out)
    return optuna.load_study(study_name=cfg.study, storage=storage).get_trials()


def test_apply_params_switches_tricks_then_sets_keys():
    base = tiny("loss.mixup_alpha=0")
    on = T.apply_params(base, {"trick.mixup": True, "optim.lr": 0.3})
    assert on.loss.mixup_alpha > 0 and on.optim.lr == 0.3 and base.loss.mixup_alpha == 0
    assert T.apply_params(base, {"trick.mixup": False}).loss.mixup_alpha == 0
    # a searched key wins over what a trick sets
    assert T.apply_params(base, {"trick.mixup": True, "loss.mixup_alpha": 0.7}).loss.mixup_alpha == 0.7


def test_the_space_is_checked_before_any_trial():
    with pytest.raises(RecipeError, match="no trick 'mixpu'.*did you mean 'mixup'"):
        T.check_space(tiny("search={trick.mixpu: {choice: [true, false]}}"))
    with pytest.raises(RecipeError, match="optim.momentum.*must be"):
        T.check_space(tiny("search={optim.momentum: {uniform: [0.5, 1.5]}}"))
    with pytest.raises(RecipeError, match="data.val_size' must be > 0"):
        T.check_space(tiny("data.val_size=0"))
    with pytest.raises(RecipeError, match="no search section"):
        T.check_space(tiny("search={}"))
    with pytest.raises(ValueError, match="sampler must be one of"):
        T.TuneConfig({}, 3, "x", "s", sampler="grid").validate()


def test_a_study_resumes_with_the_trials_it_had_and_writes_the_best_recipe(tmp_path):
    cfg = config(tmp_path, 3, pruner="none")
    first = T.tune(cfg)
    assert first["trials"] == {"complete": 3, "pruned": 0, "fail": 0, "running": 0}
    before = {t.number: (t.params, t.value) for t in trials_of(cfg)}
    base = tiny()
    assert before[0][0] == {"optim.lr": base.optim.lr, "loss.label_smoothing": base.loss.label_smoothing}  # the recipe as it is, first
    cfg.trials, cfg.final = 5, True
    second = T.tune(cfg)
    after = {t.number: (t.params, t.value) for t in trials_of(cfg)}
    assert second["trials"]["complete"] == 5 and sorted(after) == [0, 1, 2, 3, 4]
    assert {n: after[n] for n in before} == before  # the first three kept as they were
    best_value = max(v for _, v in after.values())
    assert second["best"]["value"] == best_value and after[second["best"]["trial"]][1] == best_value
    # each trial's value is the validation accuracy of its own run's last epoch
    for t in trials_of(cfg):
        records = [json.loads(line) for line in Path(t.user_attrs["run_dir"], "metrics.jsonl").read_text().splitlines()]
        assert t.value == records[-1]["val_acc"] and len(records) == 2
    # the written recipe is the base with the best parameters, and trains as it is
    written = load(second["recipe"])
    for key, value in second["best"]["params"].items():
        section, name = key.split(".")
        assert getattr(getattr(written, section), name) == pytest.approx(value)
    final = json.loads(Path(second["final_run"], "summary.json").read_text())
    assert second["test_acc"] == final["test_acc"] and final["config"] == to_dict(written)
    assert set(second["plots"]) >= {"history", "importances"} and all(Path(p).stat().st_size > 0 for p in second["plots"].values())
    json.loads(dumps(second), **STRICT)
    json.loads(Path(cfg.out, "tune.json").read_text(), **STRICT)


def test_two_workers_on_the_journal_finish_exactly_the_trials_with_none_lost(tmp_path):
    cfg = config(tmp_path, 4, workers=2, pruner="none")
    result = T.tune(cfg)
    trials = trials_of(cfg)
    assert result["trials"] == {"complete": 4, "pruned": 0, "fail": 0, "running": 0}
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    run_dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(run_dirs)) == 4 and all(Path(d, "summary.json").is_file() for d in run_dirs)
    assert all(t.system_attrs["heartbeat"]["pid"] != os.getpid() for t in trials)  # trained in the worker processes
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4


def test_pruning_stops_an_obviously_bad_trial(tmp_path):
    cfg = config(tmp_path, 4, 1, "train.epochs=4", pruner="median")
    Path(cfg.out).mkdir(parents=True)
    study = optuna.create_study(study_name=cfg.study, storage=T.open_storage(None, cfg.out), direction="maximize")
    for lr in (0.2, 0.2, 0.2, 1e-6):  # three sound trials, then one that cannot learn
        study.enqueue_trial({"optim.lr": lr, "loss.label_smoothing": 0.0})
    result = T.tune(cfg)
    trials = sorted(trials_of(cfg), key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3 + ["PRUNED"]
    assert result["trials"]["pruned"] == 1
    bad = trials[3]
    assert bad.last_step < 4 and bad.intermediate_values[bad.last_step] < min(t.value for t in trials[:3])
    summary = json.loads(Path(bad.user_attrs["run_dir"], "summary.json").read_text())
    assert summary["stopped"].startswith("pruned by the tuner") and summary["epochs"] == bad.last_step


def _wait(predicate, seconds: float, what: str):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {seconds} s waiting for {what}")


def test_a_worker_killed_mid_trial_leaves_a_study_a_rerun_completes(tmp_path):
    recipe = tmp_path / "slow.yaml"
    save(tiny("train.epochs=40"), recipe)
    out = tmp_path / "tune"
    cmd = [sys.executable, "-m", "trickbag.cli", "tune", "--recipe", str(recipe), "--trials", "2", "--out", str(out),
           "--study", "kill", "--pruner", "none", "--no-final", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    storage = lambda: T.open_storage(None, out)  # noqa: E731

    def running_with_a_checkpoint():
        if not (out / "study.journal").exists():
            return None
        try:
            trials = optuna.load_study(study_name="kill", storage=storage()).get_trials()
        except KeyError:
            return None
        for t in trials:
            if t.state.name == "RUNNING" and "heartbeat" in t.system_attrs and list(Path(out, "trials", f"{t.number:04d}", "checkpoints").glob("epoch_*.pt")):
                return t
        return None

    victim = _wait(running_with_a_checkpoint, 120, "a running trial with a checkpoint")
    os.killpg(proc.pid, signal.SIGKILL)  # the main process and its worker, at once
    proc.wait()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    result = json.loads(rerun.stdout, **STRICT)
    assert result["trials"]["running"] == 0 and result["trials"]["complete"] == 2
    trials = {t.number: t for t in optuna.load_study(study_name="kill", storage=storage()).get_trials()}
    assert trials[victim.number].state.name == "FAIL"
    retry = [t for t in trials.values() if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == victim.params
    # the retry trained in the killed trial's run directory, resuming its checkpoint
    summary = json.loads(Path(retry[0].user_attrs["run_dir"], "summary.json").read_text())
    assert retry[0].user_attrs["run_dir"].endswith(f"{victim.number:04d}") and summary["resumed"] and summary["epochs"] == 40


def test_cli_json_and_errors(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    save(tiny(), recipe)
    out = tmp_path / "cli"
    run = subprocess.run([sys.executable, "-m", "trickbag.cli", "tune", "--recipe", str(recipe), "--trials", "2", "--out", str(out),
                          "--json"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout, **STRICT)
    assert set(result) >= {"study", "storage", "direction", "best", "test_acc", "recipe", "trials"}
    assert result["study"] == "tiny" and result["storage"] == f"journal:{out / 'study.journal'}" and result["direction"] == "maximize"
    assert set(result["best"]) == {"value", "params", "trial"} and 0 <= result["test_acc"] <= 1
    assert set(result["trials"]) == {"complete", "pruned", "fail", "running"}
    # the written recipe runs directly
    train = subprocess.run([sys.executable, "-m", "trickbag.cli", "train", "--recipe", result["recipe"], "--out", str(tmp_path / "again"),
                            "--json", "--quiet"], capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr
    assert json.loads(train.stdout)["test_acc"] == pytest.approx(result["test_acc"])  # same recipe, same seed: same run
    for args, message in [(["--sampler", "grid"], "sampler must be one of 'tpe', 'random', 'cmaes'"),
                          (["--trials", "0"], "trials must be > 0"),
                          (["--set", "search={optim.lrr: {uniform: [0.1, 1]}}"], "did you mean 'optim.lr'"),
                          (["--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot open it"),
                          (["--storage", str(tmp_path / "no" / "such" / "study.journal")], "does not exist")]:
        bad = subprocess.run([sys.executable, "-m", "trickbag.cli", "tune", "--recipe", str(recipe), "--out", str(tmp_path / "bad"),
                              *args], capture_output=True, text=True, timeout=120)
        assert bad.returncode in (1, 2) and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


# --- PostgreSQL: workers of several machines share a study through a real server --------------------


def _pg_bin() -> Path | None:
    for found in sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True):
        return found.parent
    which = shutil.which("pg_ctl")
    return Path(which).parent if which else None


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL cluster (initdb + pg_ctl in a temporary folder, trust auth on
    127.0.0.1 and a free port), run as the postgres user when the tests run as root."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does): the shared-storage test needs a real server")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver psycopg is not installed (pip install 'psycopg[binary]')")
    folder = Path(tempfile.mkdtemp(prefix="trickbag-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "start",
                    "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"], check=True, capture_output=True)
    try:
        subprocess.run([*as_user, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "trickbag"],
                       check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/trickbag"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_one_study_on_postgresql(tmp_path, postgres_url):
    cfg = config(tmp_path, 4, workers=2, storage=postgres_url, pruner="none")
    result = T.tune(cfg)
    assert result["storage"] == postgres_url and result["trials"]["running"] == 0
    trials = optuna.load_study(study_name="tiny", storage=postgres_url).get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    # without a shared lock each worker may finish one more at the very end (module docstring)
    assert 4 <= len(complete) <= 5 and sorted(t.number for t in trials) == list(range(len(trials)))
    assert len({t.user_attrs["run_dir"] for t in complete}) == len(complete)
    # a second command (another machine's worker) continues the same study
    cfg.trials, cfg.workers = len(complete) + 1, 1
    assert T.tune(cfg)["trials"]["complete"] == len(complete) + 1


@pytest.mark.parametrize("sampler", ["random", "cmaes"])
def test_each_sampler_runs_a_study_and_the_timeout_stops_new_trials(tmp_path, sampler):
    pytest.importorskip("cmaes", reason="the CMA-ES sampler needs cmaes (dev extra)") if sampler == "cmaes" else None
    cfg = config(tmp_path, 100, sampler=sampler, pruner="none", timeout=1.0)
    started = time.monotonic()
    result = T.tune(cfg)
    # the first trial starts before the second of the timeout is over; no trial starts after it
    assert 1 <= result["trials"]["complete"] < 100 and result["trials"]["running"] == 0
    assert time.monotonic() - started < 120
    values = [t.params["optim.lr"] for t in trials_of(cfg)]
    assert all(0.01 <= v <= 0.5 for v in values)


def test_a_best_recipe_that_diverges_when_retrained_still_leaves_the_studys_result(tmp_path, monkeypatch):
    from trickbag.train import Trainer
    from trickbag.train.errors import DivergedError

    cfg = config(tmp_path, 1, pruner="none", final=True)

    def diverge(self):
        raise DivergedError("the loss rose (injected)")

    monkeypatch.setattr(Trainer, "fit_or_continue", diverge)  # only the final run trains in this process
    result = T.tune(cfg)
    assert result["trials"]["complete"] == 1 and result["best"] is not None and result["test_acc"] is None
    assert "injected" in result["final_error"]
    assert json.loads(Path(cfg.out, "tune.json").read_text(), **STRICT)["final_error"] == result["final_error"]
