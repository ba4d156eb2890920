"""Modern schedules against closed forms written here and against PyTorch's own
schedulers (an independent implementation of the same laws)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from trickbag import schedules as S


def torch_lrs(make_scheduler, steps: int, lr: float = 1.0) -> list[float]:
    """The lr PyTorch uses at each of ``steps`` optimizer steps."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)
    sched = make_scheduler(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_constant():
    s = S.constant(0.3)
    assert {s(t) for t in (0, 1, 10**9)} == {0.3}


def test_linear_warmup_is_goyal_t_over_m():
    s = S.linear_warmup(0.4, 8)
    assert [s(t) for t in range(10)] == pytest.approx([0.4 * t / 8 for t in range(8)] + [0.4, 0.4])


def test_cosine_with_warmup_closed_form():
    lr, T, m, final = 0.1, 1000, 100, 1e-3
    s = S.cosine(lr, T, warmup_steps=m, final_lr=final)
    for t in [0, 1, 50, 99, 100, 101, 500, 999, 1000, 5000]:
        if t < m:
            expected = lr * t / m
        else:
            u = min(t - m, T - m) / (T - m)
            expected = final + (lr - final) * 0.5 * (1 + math.cos(math.pi * u))
        assert s(t) == pytest.approx(expected, rel=1e-12, abs=1e-15), t
    assert s(T) == final and s(m) == lr  # the lr reaches both ends exactly


def test_cosine_without_warmup_matches_torch():
    got = [S.cosine(1.0, 50, final_lr=0.01)(t) for t in range(50)]
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=50, eta_min=0.01), 50)
    np.testing.assert_allclose(got, ref, rtol=1e-9)


def test_linear_decay_with_warmup_closed_form():
    lr, T, m, final = 0.2, 1000, 40, 1e-3
    s = S.linear_decay(lr, T, warmup_steps=m, final_lr=final)
    for t in [0, 1, 20, 39, 40, 41, 520, 999, 1000, 4000]:
        expected = lr * t / m if t < m else lr + (final - lr) * min(t - m, T - m) / (T - m)
        assert s(t) == pytest.approx(expected, rel=1e-12, abs=1e-15), t
    assert s(T) == final and s(m) == lr
    # no warmup: torch's LinearLR from 1 to 0 over T steps is the same line
    got = [S.linear_decay(0.5, 60)(t) for t in range(60)]
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=60), 60, lr=0.5)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="warmup_steps"):
        S.linear_decay(0.1, 100, warmup_steps=100)


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_matches_torch(anneal, three_phase):
    total = 200
    ours = S.one_cycle(0.5, total, pct_start=0.25, anneal=anneal, div_factor=20, final_div_factor=100, three_phase=three_phase)
    ref = torch_lrs(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=0.5, total_steps=total, pct_start=0.25, anneal_strategy=anneal,
            div_factor=20, final_div_factor=100, three_phase=three_phase, cycle_momentum=False,
        ),
        total,
    )
    np.testing.assert_allclose([ours(t) for t in range(total)], ref, rtol=1e-9, atol=1e-15)


def test_one_cycle_holds_its_floor_after_the_end():
    s = S.one_cycle(1.0, 100)
    assert s(99) == pytest.approx(1.0 / 25 / 1e4)
    assert s(100) == s(99) == s(10**6)


@pytest.mark.parametrize("mode,gamma", [("triangular", 1.0), ("triangular2", 1.0), ("exp_range", 0.995)])
def test_cyclic_matches_torch(mode, gamma):
    ours = S.cyclic(0.01, 0.1, 20, 30, mode=mode, gamma=gamma)
    ref = torch_lrs(
        lambda o: torch.optim.lr_scheduler.CyclicLR(
            o, base_lr=0.01, max_lr=0.1, step_size_up=20, step_size_down=30, mode=mode, gamma=gamma, cycle_momentum=False
        ),
        260,
    )
    np.testing.assert_allclose([ours(t) for t in range(260)], ref, rtol=1e-9)


def test_triangular_shape():
    s = S.triangular(0.0, 1.0, 10)
    assert (s(0), s(5), s(10), s(15), s(20), s(30)) == (0.0, 0.5, 1.0, 0.5, 0.0, 1.0)


def test_step_decay_and_multistep_match_torch():
    got = [S.step_decay(1.0, 7, 0.5)(t) for t in range(40)]
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5), 40)
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    got = [S.multistep(1.0, (5, 12, 30), 0.1)(t) for t in range(40)]
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[5, 12, 30], gamma=0.1), 40)
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_multistep_with_warmup_keeps_its_milestones_steps_of_the_run():
    """lr * t / m for t < m, then MultiStepLR's value: the milestones do not move with the warmup."""
    s = S.multistep(0.4, (10, 20, 30), 0.1, warmup_steps=4)
    expected = [0.4 * t / 4 if t < 4 else 0.4 * 0.1 ** sum(t >= m for m in (10, 20, 30)) for t in range(40)]
    np.testing.assert_allclose([s(t) for t in range(40)], expected, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="milestones must be > warmup_steps"):
        S.multistep(0.4, (3, 20), warmup_steps=4)


def test_cifar_presets_follow_the_seed_tables():
    spe = 391  # ceil(50_000 / 128)
    s = S.cifar_200_epochs(spe)
    for epoch, lr in [(0, 0.1), (59, 0.1), (60, 0.02), (119, 0.02), (120, 0.004), (159, 0.004), (160, 0.0008), (199, 0.0008)]:
        assert s(epoch * spe) == lr and s(epoch * spe + spe - 1) == lr, epoch
    s = S.cifar_300_epochs(spe)
    for epoch, lr in [(0, 0.1), (149, 0.1), (150, 0.01), (224, 0.01), (225, 0.001), (299, 0.001)]:
        assert s(epoch * spe) == lr, epoch


BAD = [
    (lambda: S.cosine(0.1, 100, warmup_steps=100), "warmup_steps must be in [0.0, 100)"),
    (lambda: S.cosine(0.1, 100, warmup_steps=150), "warmup_steps must be in [0.0, 100)"),
    (lambda: S.cosine(0.1, 0), "total_steps must be > 0"),
    (lambda: S.cosine(-0.1, 100), "start_lr must be >= 0"),
    (lambda: S.linear_warmup(0.1, 0), "steps must be > 0"),
    (lambda: S.one_cycle(0.1, 100, pct_start=1.2), "pct_start must be in (0.0, 1.0)"),
    (lambda: S.one_cycle(0.1, 100, anneal="cosine"), "anneal must be one of 'cos', 'linear', got 'cosine' (did you mean 'cos'?)"),
    (lambda: S.one_cycle(0.1, 3, pct_start=0.3), "pct_start * total_steps must be > 1 step"),
    (lambda: S.cyclic(0.1, 1.0, 0), "step_size_up must be > 0"),
    (lambda: S.cyclic(0.1, 1.0, 10, mode="tri"), "mode must be one of"),
    (lambda: S.multistep(0.1, (30, 10)), "milestones must be strictly increasing"),
    (lambda: S.multistep(0.1, (10,), gamma=2), "gamma must be in (0.0, 1.0]"),
    (lambda: S.cifar_200_epochs(0), "steps_per_epoch must be > 0"),
]


@pytest.mark.parametrize("make,message", BAD, ids=[b[1] for b in BAD])
def test_bad_arguments(make, message):
    with pytest.raises(ValueError) as err:
        make()
    assert message in str(err.value)


@pytest.mark.parametrize(
    "sched",
    [S.cosine(0.1, 100, 10, 0.001), S.one_cycle(1.0, 100, three_phase=True), S.cyclic(0.1, 1.0, 10, mode="exp_range", gamma=0.99), S.multistep(0.1, (3, 5))],
    ids=repr,
)
def test_composites_round_trip_through_config_and_pickle(sched):
    assert S.from_config(sched.get_config()) == sched
    assert pickle.loads(pickle.dumps(sched)) == sched
    assert S.from_config(sched.get_config())(42.5) == sched(42.5)
