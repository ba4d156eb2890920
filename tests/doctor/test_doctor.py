"""The doctor on real training: the monitor's numbers against an independent computation,
induced pathologies found with the right layer, a healthy run left alone, run logs, the CLI."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tests.conftest import DATA_ARGS
from trickbag.doctor import DoctorMonitor, diagnose, read_run, worst_severity
from trickbag.recipes import load
from trickbag.train import Callback, DivergedError, Trainer

# A 4-layer MLP without normalization: the setting where lr and init pathologies show.
MLP = ["model.name=plain_mlp", "model.params={depth: 4, width: 64}", "optim.name=sgd", "optim.lr=0.05", "optim.weight_decay=0",
       "schedule.name=constant", "schedule.params={}", "data.batch_size=50", "data.augment=[]", "loss.label_smoothing=0",
       "train.epochs=4", "train.ema_decay=0", "train.tta_flip=false", "train.checkpoint=false", "train.threads=1"]


def diagnosed(small_data, tmp_path, *overrides, tweak=None, base=MLP):
    monitor = DoctorMonitor(every=2, write=False)
    trainer = Trainer(load("fashion-mnist-quick", base + list(overrides)), out=tmp_path, quiet=True, data=small_data, callbacks=[monitor])
    if tweak is not None:
        with torch.no_grad():
            tweak(trainer.model)
    try:
        trainer.fit()
    except DivergedError:  # NonFiniteLossError included
        pass  # a diverging run is what some of these tests make; its records are still there
    return diagnose(monitor.records, monitor.epochs), monitor


def median_ratios(monitor):
    """Median update/weight ratio per weight tensor over the monitored steps, from the raw records."""
    out = {}
    for r in monitor.records:
        for name, p in r.get("params", {}).items():
            if p["ndim"] >= 2 and p.get("ratio") is not None:
                out.setdefault(name, []).append(p["ratio"])
    return {name: statistics.median(v) for name, v in out.items()}


def only(findings, code):
    matches = [f for f in findings if f.code == code]
    assert len(matches) == 1, [(f.code, f.severity) for f in findings]
    return matches[0]


# --- the monitor measures what it says ------------------------------------------------------


def test_monitor_numbers_match_an_independent_computation(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        model[1].bias[:5] = -1e4  # exactly 5 of 16 units can never fire
        model[1].bias[5:] = 1.0
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    trainer = SimpleNamespace(model=model, optimizer=opt, out=tmp_path, step=0, current_lr=0.1)
    monitor = DoctorMonitor(every=2, path=tmp_path / "doctor.jsonl")
    monitor.on_fit_start(trainer)
    gen = torch.Generator().manual_seed(1)
    expected = {}
    for step in range(5):
        x, y = torch.randn(32, 20, generator=gen), torch.randint(0, 4, (32,), generator=gen)
        hidden = torch.relu(x @ model[1].weight.T + model[1].bias).detach()  # what the ReLU outputs, by hand
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        grads = {n: float(p.grad.norm()) for n, p in model.named_parameters()}
        opt.step()
        ratios = {n: float((p.detach() - before[n]).norm() / before[n].norm()) for n, p in model.named_parameters()}
        expected[step] = (grads, ratios, hidden)
        trainer.step += 1
        monitor.on_step_end(trainer, float(loss.detach()))
        if step % 2 == 0:  # the monitored step's hooks are gone once it ends
            assert all(not m._forward_hooks for m in model.modules())
    monitor.on_fit_end(trainer, {})
    records = [r for r in monitor.records if "params" in r]
    assert [r["step"] for r in records] == [0, 2, 4]
    for r in records:
        grads, ratios, hidden = expected[r["step"]]
        for name, p in r["params"].items():
            assert p["grad"] == pytest.approx(grads[name], rel=1e-5)
            assert p["ratio"] == pytest.approx(ratios[name], rel=1e-4)
        assert r["grad_norm"] == pytest.approx(sum(g ** 2 for g in grads.values()) ** 0.5, rel=1e-5)
        relu = r["acts"]["2"]
        assert relu["dead"] == pytest.approx(5 / 16) and relu["after"] == "1"
        assert relu["mean"] == pytest.approx(float(hidden.mean()), rel=1e-5)
        assert relu["std"] == pytest.approx(float(hidden.std()), rel=1e-5)
    # every loss is kept, in order, and the file holds the same records
    assert [x for r in monitor.records for x in r["losses"]] == pytest.approx(
        [x for r in map(json.loads, (tmp_path / "doctor.jsonl").read_text().splitlines()) for x in r["losses"]])
    assert len([x for r in monitor.records for x in r["losses"]]) == 5
    n = len(monitor.records)
    opt.step()  # the optimizer hooks are gone after the fit
    assert len(monitor.records) == n


def test_every_must_be_positive():
    with pytest.raises(ValueError, match="every"):
        DoctorMonitor(every=0)


# --- induced pathologies ----------------------------------------------------------------------


def test_healthy_runs_have_nothing_above_info(small_data, tmp_path):
    findings, _ = diagnosed(small_data, tmp_path / "mlp", "model.init=he_normal")
    assert worst_severity(findings) in (None, "info"), findings
    cnn = ["data.batch_size=50", "model.params={widths: [8, 16], pool: avg}", "optim.lr=0.1", "train.epochs=4", "train.threads=1",
           "schedule.params={total_steps: 1dur, warmup_steps: 0.5ep}", "train.checkpoint=false"]  # BN, nesterov, EMA, augmentation
    findings, _ = diagnosed(small_data, tmp_path / "cnn", base=cnn)
    assert worst_severity(findings) in (None, "info"), findings


def test_lr_times_100_is_lr_too_high_at_the_fastest_moving_layer(small_data, tmp_path):
    findings, monitor = diagnosed(small_data, tmp_path, "model.init=he_normal", "optim.lr=5")
    f = only(findings, "lr_too_high")
    ratios = median_ratios(monitor)
    fastest = max(ratios, key=ratios.get)
    assert f.severity == "error" and f.layer == fastest.rsplit(".", 1)[0] and f.value == ratios[fastest] > 0.1
    assert "lower the lr" in f.prescription and "optim.lr=" in f.prescription


def test_lr_times_1e_minus_4_is_lr_too_low_at_the_slowest_layer(small_data, tmp_path):
    findings, monitor = diagnosed(small_data, tmp_path, "model.init=he_normal", "optim.lr=5e-6")
    assert worst_severity(findings) == "warning"
    f = only(findings, "lr_too_low")
    ratios = median_ratios(monitor)
    slowest = min(ratios, key=ratios.get)
    assert f.layer == slowest.rsplit(".", 1)[0] and f.value == ratios[slowest] < 1e-4
    assert statistics.median(ratios.values()) < 1e-4 and "raise the lr" in f.prescription


def test_random_normal_stddev_10_explodes_from_the_first_layer(small_data, tmp_path):
    # standardized 784-pixel inputs through N(0, 10^2) weights: std ~ 10 * sqrt(784) ~ 280 > 100 at once
    findings, _ = diagnosed(small_data, tmp_path, "model.init=random_normal", "model.init_params={stddev: 10}")
    f = only(findings, "activations_exploding")
    assert f.severity == "error" and f.layer == "1" and f.value > 100 and f.step == 0
    assert "he_normal" in f.prescription
    assert only(findings, "lr_too_high").severity == "info"  # the huge updates are the init's doing


def test_one_badly_scaled_layer_is_named(small_data, tmp_path):
    findings, _ = diagnosed(small_data, tmp_path, "model.init=he_normal", tweak=lambda m: m[3].weight.mul_(1000))
    assert only(findings, "activations_exploding").layer == "3"


def test_a_large_negative_bias_kills_that_layers_units(small_data, tmp_path):
    findings, _ = diagnosed(small_data, tmp_path, tweak=lambda m: m[3].bias.fill_(-10.0))
    f = only(findings, "dead_units")
    assert (f.severity, f.layer, f.value) == ("warning", "3", 1.0)
    assert "already at initialization" in f.evidence and "bias" in f.prescription


# --- run logs, resume, the probe, the CLI --------------------------------------------------------


class StopAfterEpoch(Callback):
    def on_epoch_end(self, trainer, metrics):
        trainer.should_stop = trainer.epoch == 1


class StopAtStep(Callback):
    def __init__(self, step):
        self.at = step

    def on_step_end(self, trainer, loss):
        trainer.should_stop = trainer.step == self.at


@pytest.mark.parametrize("stop", [StopAfterEpoch(), StopAtStep(11), StopAtStep(16)], ids=["epoch", "step-11", "step-16"])
def test_trainer_writes_doctor_jsonl_and_resume_keeps_it_consistent(small_data, tmp_path, stop):
    recipe = load("fashion-mnist", MLP + ["model.init=he_normal", "train.doctor_every=5", "train.checkpoint=true", "train.epochs=2"])
    Trainer(recipe, out=tmp_path, quiet=True, data=small_data, callbacks=[stop]).fit()
    first = [json.loads(x) for x in (tmp_path / "doctor.jsonl").read_text().splitlines()]
    # a run killed after its last checkpoint: the newest checkpoint is older than the log
    for extra in first:
        (tmp_path / "doctor.jsonl").open("a").write(json.dumps(dict(extra, end=extra["end"] + 100)) + "\n")
    Trainer(recipe, out=tmp_path, quiet=True, data=small_data).fit(resume=True)
    records, epochs, notes = read_run(tmp_path)
    steps = [r["step"] for r in records if "params" in r]
    assert steps == list(range(0, 24, 5)) and notes == [] and [e["epoch"] for e in epochs] == [1, 2]
    assert len([x for r in records for x in r["losses"]]) == 24  # 12 steps per epoch, none lost or doubled


def test_read_run_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        read_run(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no doctor.jsonl, metrics.jsonl or summary.json"):
        read_run(tmp_path)
    (tmp_path / "doctor.jsonl").write_text('{"step": 0}\n{"step": 5, "los')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_run(tmp_path)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "trickbag.cli", "doctor", *args], capture_output=True, text=True, timeout=600, check=False)


def test_doctor_cli_probe_finds_a_too_high_lr_and_writes_the_report(tmp_path):
    out = cli("--recipe", "fashion-mnist", "--steps", "40", "--every", "4", "--set", "data.train_subset=2048",
              "--set", "data.batch_size=64", "--set", "model.name=plain_mlp",
              "--set", "model.params={depth: 3, width: 32}", "--set", "optim.lr=50", "--set", "optim.name=sgd",
              "--set", "schedule.params={total_steps: 1dur, warmup_steps: 0}", "--report", str(tmp_path),
              "--fail-on", "error", "--json", *DATA_ARGS)
    assert out.returncode == 1, out.stderr  # --fail-on error and an error was found
    res = json.loads(out.stdout)
    assert res["findings"][0]["severity"] == "error"
    assert "lr_too_high" in {f["code"] for f in res["findings"]}
    report = (tmp_path / "report.md").read_text()
    assert "learning rate too high" in report and "![update/weight ratio per layer](ratios.png)" in report
    assert (tmp_path / "ratios.png").read_bytes()[:4] == b"\x89PNG"


def test_doctor_cli_reads_a_run_without_monitors(tmp_path, small_data):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": v} for e, v in zip(range(1, 6), [0.9, 0.6, 0.55, 0.62, 0.7])]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = cli(str(run))
    assert out.returncode == 0, out.stderr
    assert "train/validation gap growing" in out.stdout and "train.doctor_every" in out.stdout
    assert (run / "doctor" / "report.md").is_file()


@pytest.mark.parametrize("args, message", [
    ((), "give RUN_DIR"),
    (("somewhere", "--recipe", "fashion-mnist"), "not both"),
    (("--recipe", "fashion-mnist", "--fail-on", "bad"), "--fail-on must be warning or error"),
    (("/nonexistent/run",), "is not a directory"),
    (("--recipe", "fashion-mnist", "--set", "optim.lr=-1"), "optim.lr"),
])
def test_doctor_cli_bad_input_is_one_line(args, message):
    out = cli(*args)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_a_probe_never_runs_the_cuda_graph_that_would_hide_layers_from_its_monitor(small_data, tmp_path):
    """A CUDA graph replays the forward without the monitor's hooks, so the probe turns the
    recipe's cuda-section graph off (the rest of the section stays for a GPU)."""
    import yaml

    from trickbag.doctor import probe

    recipe = load("fashion-mnist-quick", ["data.batch_size=50", "model.params={widths: [8, 16], depth: 1}", "train.threads=1",
                                          "cuda={train.cuda_graph: true, optim.lr: 0.3}"])
    result = probe(recipe, steps=4, every=2, out=tmp_path / "probe", data=small_data)
    saved = yaml.safe_load((result.out / "config.yaml").read_text())
    assert saved["train"]["cuda_graph"] is False and saved["train"]["doctor_every"] == 0
    assert saved["cuda"] == {"optim.lr": 0.3}
    assert load(str(result.out / "config.yaml")).for_device("cuda")[0].train.cuda_graph is False
    assert result.records  # the monitor saw the layers
