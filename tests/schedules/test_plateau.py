from __future__ import annotations

import json
import pickle

import pytest
import torch

from trickbag.schedules import PlateauController


def torch_plateau_lrs(metrics, *, lr, factor, patience, mode, threshold, threshold_mode, cooldown, min_lr):
    """PyTorch's ReduceLROnPlateau (multiplier = 1 / our divisor) on the same metrics."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode=mode, factor=1 / factor, patience=patience, threshold=threshold,
        threshold_mode=threshold_mode, cooldown=cooldown, min_lr=min_lr, eps=0.0,
    )
    out = []
    for m in metrics:
        sched.step(m)
        out.append(opt.param_groups[0]["lr"])
    return out


METRICS = [1.0, 0.9, 0.85, 0.86, 0.87, 0.85, 0.84999, 0.9, 0.8, 0.81, 0.82, 0.83, 0.84, 0.85, 0.79, 0.8, 0.8, 0.8, 0.8, 0.8] * 3


@pytest.mark.parametrize("patience,cooldown,threshold_mode,threshold", [(2, 0, "rel", 1e-4), (1, 2, "abs", 0.01), (0, 0, "rel", 0.0), (3, 1, "rel", 0.05)])
def test_decisions_match_torch_reduce_on_plateau(patience, cooldown, threshold_mode, threshold):
    kw = dict(factor=5.0, patience=patience, mode="min", threshold=threshold, threshold_mode=threshold_mode, cooldown=cooldown, min_lr=1e-6)
    ctl = PlateauController(0.1, **kw)
    ours = [ctl.update(m).lr for m in METRICS]
    ref = torch_plateau_lrs(METRICS, lr=0.1, **kw)
    assert ours == pytest.approx(ref, rel=1e-12)


def test_max_mode_matches_torch():
    accs = [0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.7, 0.71]
    ctl = PlateauController(1.0, factor=2, patience=1, mode="max")
    ours = [ctl.update(a).lr for a in accs]
    ref = torch_plateau_lrs(accs, lr=1.0, factor=2, patience=1, mode="max", threshold=1e-4, threshold_mode="rel", cooldown=0, min_lr=1e-6)
    assert ours == pytest.approx(ref)


def test_reports_each_decision_and_stops_at_the_floor():
    ctl = PlateauController(1e-3, factor=10, patience=0, min_lr=1e-6)
    first = ctl.update(1.0)
    assert first.improved and not first.reduced and "improved" in first.reason
    d = ctl.update(1.0)
    assert d.reduced and d.lr == pytest.approx(1e-4) and "1e-4" in d.reason.replace("0.0001", "1e-4")
    ctl.update(1.0)
    d = ctl.update(1.0)
    assert d.lr == pytest.approx(1e-6) and ctl.at_floor
    d = ctl.update(1.0)
    assert not d.reduced and d.lr == pytest.approx(1e-6) and "floor" in d.reason
    assert ctl.scale == pytest.approx(1e-3)


def test_non_finite_metric_never_improves():
    ctl = PlateauController(0.1, factor=2, patience=0)
    ctl.update(1.0)
    d = ctl.update(float("nan"))
    assert not d.improved and d.reduced and ctl.best == 1.0


def test_state_dict_round_trip_continues_identically():
    a = PlateauController(0.1, factor=2, patience=1, cooldown=1)
    for m in METRICS[:9]:
        a.update(m)
    state = json.loads(json.dumps(a.state_dict()))  # plain data
    b = PlateauController(0.1, factor=2, patience=1, cooldown=1)
    b.load_state_dict(state)
    assert [a.update(m) for m in METRICS[9:]] == [b.update(m) for m in METRICS[9:]]
    assert pickle.loads(pickle.dumps(a)).lr == a.lr


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(factor=1.0), "factor must be in (1.0"),
        (dict(factor=0.5), "factor must be in (1.0"),
        (dict(patience=-1), "patience must be >= 0"),
        (dict(mode="minimum"), "mode must be one of 'min', 'max'"),
        (dict(min_lr=0.0), "min_lr must be > 0"),
        (dict(min_lr=1.0), "min_lr must be <= learning_rate"),
        (dict(threshold_mode="relative"), "threshold_mode must be one of"),
    ],
)
def test_bad_arguments(kw, message):
    with pytest.raises(ValueError) as err:
        PlateauController(0.1, **kw)
    assert message in str(err.value)
