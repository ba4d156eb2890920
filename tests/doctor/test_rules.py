"""The doctor's rules on hand-made records (torch-free): each rule fires on the pattern it
names, names the layer, and stays quiet on healthy numbers."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from trickbag.doctor.rules import (
    SEVERITIES,
    Thresholds,
    diagnose,
    loss_series,
    worst_severity,
)


def record(step, ratios, lr=0.1, loss=1.0, losses=None, acts=None, grads=None, grad_norm=1.0, nonfinite=()):
    params = {}
    for name, r in ratios.items():
        params[name] = {"ratio": r, "weight": 1.0, "update": r, "grad": (grads or {}).get(name, 0.5), "ndim": 2, "numel": 100}
    params["fc.bias"] = {"ratio": 0.5, "weight": 1.0, "update": 0.5, "grad": 0.1, "ndim": 1, "numel": 10}  # biases never count
    return {"step": step, "lr": lr, "loss": loss, "losses": losses if losses is not None else [loss] * 5,
            "params": params, "acts": acts or {}, "grad_norm": grad_norm, "nonfinite": list(nonfinite)}


def act(std, dead=0.0, after="conv", finite=True):
    return {"mean": std / 2, "std": std, "dead": dead, "after": after, "kind": "ReLU", "finite": finite}


def healthy(n=20, **kw):
    acts = {"relu1": act(0.6, after="conv1"), "relu2": act(0.7, after="conv2")}
    return [record(5 * i, {"conv1.weight": 3e-3, "conv2.weight": 5e-3}, loss=2.0 - 0.05 * i,
                   losses=[2.0 - 0.05 * i - 0.01 * j for j in range(5)], acts=acts, **kw) for i in range(n)]


def codes(findings, at_least="info"):
    return {f.code for f in findings if SEVERITIES.index(f.severity) >= SEVERITIES.index(at_least)}


def test_healthy_records_give_no_findings():
    assert diagnose(healthy()) == []
    assert worst_severity([]) is None


def test_high_update_ratio_names_the_layer_and_a_factor():
    recs = healthy()
    for r in recs:
        r["params"]["conv2.weight"]["ratio"] = 0.5
    (f,) = diagnose(recs)
    assert (f.code, f.severity, f.layer, f.value, f.threshold) == ("lr_too_high", "warning", "conv2", 0.5, 0.1)
    # 0.5 / 1e-2 = 50x brings the ratio to the top of the healthy band; peak lr 0.1 -> 0.002
    assert "about 50x" in f.prescription and "optim.lr=0.002" in f.prescription


def test_low_update_ratio_is_lr_too_low():
    recs = healthy()
    for r in recs:
        r["params"]["conv1.weight"]["ratio"] = 2e-6
        r["params"]["conv2.weight"]["ratio"] = 4e-6
    (f,) = diagnose(recs)
    assert (f.code, f.layer, f.value) == ("lr_too_low", "conv1", 2e-6)
    # median over layers 3e-6; the target 1e-3 is ~333x away -> rounded to 300x
    assert "about 300x" in f.prescription


def test_warmup_steps_do_not_count_for_the_ratio():
    recs = healthy()
    for r in recs[:10]:  # warmup: lr far below its peak, tiny ratios
        r["lr"] = 1e-4
        r["params"]["conv1.weight"]["ratio"] = r["params"]["conv2.weight"]["ratio"] = 1e-7
    assert diagnose(recs) == []


def test_diverging_loss_is_an_lr_error():
    recs = healthy()
    for i, r in enumerate(recs[10:]):
        r["losses"] = [2.0 * (1.5 ** i)] * 5
    fs = diagnose(recs)
    assert fs[0].code == "lr_too_high" and fs[0].severity == "error"
    assert "rose from" in fs[0].evidence


def test_non_finite_loss_names_the_first_bad_activation():
    recs = healthy()
    recs[12]["nonfinite"] = ["loss", "activation:relu2"]
    recs[12]["losses"] = [float("nan")] * 5
    fs = diagnose(recs)
    nf = next(f for f in fs if f.code == "non_finite")
    assert nf.severity == "error" and nf.layer == "relu2" and nf.step == 60
    assert any(f.code == "lr_too_high" and f.severity == "error" for f in fs)


def test_exploding_activations_at_init_point_to_the_first_layer_over_threshold():
    recs = healthy()
    recs[0]["acts"] = {"relu1": act(3.0, after="fc1"), "relu2": act(500.0, after="fc2"), "relu3": act(9e4, after="fc3")}
    f = next(f for f in diagnose(recs) if f.code == "activations_exploding")
    assert (f.severity, f.layer, f.value, f.step) == ("error", "fc2", 500.0, 0)


def test_vanishing_activations_at_init():
    recs = healthy()
    recs[0]["acts"] = {"relu1": act(1.0, after="fc1"), "relu2": act(1e-2, after="fc2"), "relu3": act(1e-5, after="fc3")}
    (f,) = diagnose(recs)
    assert (f.code, f.layer) == ("activations_vanishing", "fc3")


def test_activations_growing_during_training():
    recs = healthy()
    recs[-1]["acts"] = {"relu1": act(0.6, after="conv1"), "relu2": act(1e4, after="conv2")}
    (f,) = diagnose(recs)
    assert (f.code, f.severity, f.layer) == ("activations_growing", "warning", "conv2")


@pytest.mark.parametrize("dead, severity", [(0.05, None), (0.2, "info"), (0.75, "warning")])
def test_dead_units_severity_by_fraction(dead, severity):
    recs = healthy()
    for r in recs:
        r["acts"] = {"relu1": act(0.6, after="conv1"), "relu2": act(0.3, dead=dead, after="conv2")}
    fs = diagnose(recs)
    if severity is None:
        assert fs == []
    else:
        (f,) = fs
        assert (f.code, f.severity, f.layer, f.value) == ("dead_units", severity, "conv2", dead)
        assert "already at initialization" in f.evidence and "bias" in f.prescription


def test_units_dying_during_training_point_to_the_lr():
    recs = healthy()
    recs[-1]["acts"] = {"relu1": act(0.6, after="conv1"), "relu2": act(0.3, dead=0.9, after="conv2")}
    (f,) = diagnose(recs)
    assert (f.code, f.layer) == ("units_dying", "conv2")
    assert "lower the lr" in f.prescription


def test_gradient_spikes_suggest_clipping_at_twice_the_median():
    recs = healthy()
    recs[15]["grad_norm"] = 50.0  # median 1.0
    (f,) = diagnose(recs)
    assert (f.code, f.step, f.value) == ("gradient_spikes", 75, 50.0)
    assert "optim.clip_norm=2" in f.prescription


def test_layers_without_gradient():
    recs = healthy()
    for r in recs:
        r["params"]["conv1.weight"].update(grad=0.0, ratio=0.0)
    (f,) = diagnose(recs)
    assert (f.code, f.layer) == ("no_gradient", "conv1")


def test_a_single_loss_spike_is_found_at_its_index():
    recs = healthy()
    series = loss_series(recs)
    recs[14]["losses"][2] = 5.0  # point 14 * 5 + 2
    (f,) = diagnose(recs)
    assert (f.code, f.step, f.value) == ("loss_spikes", 72, 5.0)
    assert len(series) == 100


def test_plateau_while_the_lr_is_high_and_converged_when_it_is_low():
    flat = [record(5 * i, {"conv1.weight": 3e-3}, loss=0.8, losses=[0.8 + 0.001 * (j % 2) for j in range(5)]) for i in range(20)]
    (f,) = diagnose(flat)
    assert (f.code, f.severity) == ("plateau", "warning") and "divide the lr" in f.prescription
    for i, r in enumerate(flat):
        r["lr"] = 0.1 if i < 5 else 0.001
        r["params"]["conv1.weight"]["ratio"] = 3e-3  # keep the ratio healthy: only the schedule changed
    fs = diagnose(flat)
    assert [(f.code, f.severity) for f in fs] == [("converged", "info")]


def test_overfitting_from_epoch_metrics():
    epochs = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": v} for e, v in zip(range(1, 7), [0.9, 0.6, 0.5, 0.52, 0.58, 0.66])]
    (f,) = diagnose([], epochs)
    assert (f.code, f.severity, f.value) == ("overfitting", "warning", 0.66)
    assert "label smoothing" in f.prescription and "epoch 3" in f.evidence
    assert diagnose([], [dict(e, val_loss=1.0 / e["epoch"] + 0.05) for e in epochs]) == []


def test_symptoms_with_a_cause_become_info():
    recs = healthy()
    for r in recs:
        r["params"]["conv1.weight"]["ratio"] = r["params"]["conv2.weight"]["ratio"] = 2e-6
        r["losses"] = [1.0 + 0.0001 * (j % 2) for j in range(5)]
    fs = diagnose(recs)
    assert [(f.code, f.severity) for f in fs] == [("lr_too_low", "warning"), ("plateau", "info")]
    assert "symptom of: learning rate too low" in fs[1].evidence


def test_thresholds_are_parameters():
    recs = healthy()
    assert codes(diagnose(recs, thresholds=Thresholds(ratio_high=1e-3))) == {"lr_too_high"}


@pytest.mark.parametrize("bad, message", [({"ratio_high": 0}, "thresholds.ratio_high"), ({"dead_warn": 1.5}, "thresholds.dead_warn"),
                                          ({"spike_window": -3}, "thresholds.spike_window")])
def test_bad_thresholds_name_the_field(bad, message):
    with pytest.raises(ValueError, match=message):
        Thresholds(**bad)


def test_rules_do_not_import_torch():
    code = "import sys, trickbag.doctor.rules; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_findings_serialize():
    recs = healthy()
    recs[0]["acts"] = {"relu1": act(float("inf"), after="fc1", finite=False)}
    f = next(f for f in diagnose(recs) if f.code == "activations_exploding")
    assert f.to_dict()["layer"] == "fc1" and math.isinf(f.to_dict()["value"])
