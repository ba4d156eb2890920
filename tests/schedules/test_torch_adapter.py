from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from trickbag import schedules as S
from trickbag.schedules.torch import attach


def make_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    groups = [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr_mult": 0.1}]
    return model, torch.optim.SGD(groups, lr=123.0, momentum=0.9)


def train_steps(model, opt, sched, n, start=0):
    lrs = []
    g = torch.Generator().manual_seed(1)
    for i in range(start + n):
        x = torch.randn(16, 4, generator=g)
        if i < start:
            continue
        lrs.append(sched.get_last_lr())
        model(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    return lrs


def test_writes_schedule_times_group_multiplier_from_step_zero():
    model, opt = make_optimizer()
    sched = attach(opt, S.cosine(0.1, 10, warmup_steps=2))
    assert sched.get_last_lr() == [0.0, 0.0]  # built: lr of step 0 is in place
    lrs = train_steps(model, opt, sched, 6)
    expected = [S.cosine(0.1, 10, warmup_steps=2)(t) for t in range(6)]
    assert [g0 for g0, _ in lrs] == pytest.approx(expected)
    assert [g1 for _, g1 in lrs] == pytest.approx([0.1 * e for e in expected])


def test_explicit_multipliers_and_validation():
    _, opt = make_optimizer()
    sched = attach(opt, S.constant(1.0), multipliers=[2.0, 0.5])
    assert sched.get_last_lr() == [2.0, 0.5]
    with pytest.raises(ValueError, match="one value per param group \\(2\\), got 1"):
        attach(opt, S.constant(1.0), multipliers=[1.0])
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        attach("sgd", S.constant(1.0))


def test_resume_from_state_dict_is_bit_exact():
    sched_fn = S.one_cycle(0.5, 40)
    model, opt = make_optimizer()
    full = attach(opt, sched_fn)
    train_steps(model, opt, full, 30)
    ref_weights = [p.detach().clone() for p in model.parameters()]

    model, opt = make_optimizer()
    first = attach(opt, sched_fn)
    train_steps(model, opt, first, 12)
    saved = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": first.state_dict()}
    model, opt = make_optimizer()
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    resumed = attach(opt, sched_fn)
    resumed.load_state_dict(saved["sched"])
    assert resumed.last_step == 12
    assert resumed.get_last_lr()[0] == sched_fn(12)
    train_steps(model, opt, resumed, 18, start=12)
    for a, b in zip(ref_weights, model.parameters()):
        assert torch.equal(a, b)


def test_skipped_step_leaves_the_lr():
    _, opt = make_optimizer()
    sched = attach(opt, S.Linear(0.0, 1.0, 10))
    sched.step()
    sched.step(taken=False)
    assert sched.last_step == 1 and sched.skipped_steps == 1
    assert sched.get_last_lr()[0] == pytest.approx(0.1)


def test_plateau_composes_with_a_schedule():
    _, opt = make_optimizer()
    plateau = S.PlateauController(1.0, factor=10, patience=0)
    sched = attach(opt, S.linear_warmup(0.2, 4), plateau=plateau)
    for _ in range(4):
        sched.step()
    sched.report(1.0)
    decision = sched.report(1.5)
    assert decision.reduced
    assert sched.get_last_lr()[0] == pytest.approx(0.02)
    state = sched.state_dict()
    _, opt2 = make_optimizer()
    again = attach(opt2, S.linear_warmup(0.2, 4), plateau=S.PlateauController(1.0, factor=10, patience=0))
    again.load_state_dict(state)
    assert again.get_last_lr() == pytest.approx(sched.get_last_lr())


def test_report_without_plateau_is_a_clear_error():
    _, opt = make_optimizer()
    with pytest.raises(RuntimeError, match="needs a plateau controller"):
        attach(opt, S.constant(0.1)).report(1.0)


def test_schedule_core_imports_neither_torch_nor_matplotlib():
    code = (
        "import sys, trickbag.schedules as s; s.cosine(0.1, 100)(5); "
        "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_set_step_jumps_and_writes_that_steps_lr():
    _, opt = make_optimizer()
    sched = attach(opt, S.Linear(0.0, 1.0, 10))
    sched.set_step(7)
    assert sched.last_step == 7 and sched.lr == pytest.approx(0.7)
    assert sched.get_last_lr() == pytest.approx([0.7, 0.07])
    with pytest.raises(ValueError, match="step must be >= 0"):
        sched.set_step(-1)
