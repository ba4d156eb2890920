"""Lookahead (Zhang et al. 2019) against the paper's Algorithm 1 written out in numpy, its BN
statistics, the recipe keys' errors, and the trainer: alpha 1 is the plain run, the run ends
on the slow weights, and a resume is bit-exact (``test_trainer``'s EXTRAS)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.train.helpers import recipe, same_weights
from trickbag.recipes import RecipeError, load
from trickbag.train import Trainer
from trickbag.train.lookahead import Lookahead, alpha_at, sync_due


def lookahead_sgd_numpy(w0: np.ndarray, target: np.ndarray, lr: float, k: int, alpha: float, steps: int,
                        ramp: bool = False) -> np.ndarray:
    """Algorithm 1 on L(w) = 0.5 |w - target|^2 with plain SGD as the inner optimizer, the
    last (partial) round closed by one more outer step; with ``ramp`` airbench's alpha,
    1 - (1 - alpha) (t / steps)^3 at step t."""
    slow, fast = w0.copy(), w0.copy()
    for t in range(1, steps + 1):
        fast = fast - lr * (fast - target)
        if t % k == 0 or t == steps:
            a = 1 - (1 - alpha) * (t / steps) ** 3 if ramp else alpha
            slow = slow + a * (fast - slow)
            fast = slow.copy()
    return fast


@pytest.mark.parametrize("k, alpha, steps, ramp", [(5, 0.5, 12, False), (3, 0.8, 9, False), (1, 0.3, 4, False),
                                                   (4, 1.0, 10, False), (5, 0.226, 12, True), (2, 0.1, 7, True)])
def test_lookahead_with_sgd_follows_algorithm_1(k, alpha, steps, ramp):
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False).double()
    w0 = model.weight.detach().numpy().copy()
    target = np.array([[1.0, -2.0, 0.5]])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    lookahead = Lookahead(model, every=k, alpha=alpha, ramp=ramp)
    for step in range(1, steps + 1):
        opt.zero_grad()
        (0.5 * ((model.weight - torch.from_numpy(target)) ** 2).sum()).backward()
        opt.step()
        lookahead.after_step(model, step, total_steps=steps)
    expected = lookahead_sgd_numpy(w0, target, 0.1, k, alpha, steps, ramp)
    np.testing.assert_allclose(model.weight.detach().numpy(), expected, rtol=1e-12, atol=1e-14)
    if alpha < 1:  # the answer differs from plain SGD's: the test can tell the two apart
        plain = w0.copy()
        for _ in range(steps):
            plain = plain - 0.1 * (plain - target)
        assert not np.allclose(expected, plain, rtol=1e-6)


@pytest.mark.parametrize("step, total, alpha, expected", [(0, 100, 0.2, 1.0), (50, 100, 0.2, 0.9), (100, 100, 0.2, 0.2),
                                                         (150, 100, 0.2, 0.2)])
def test_the_ramp_falls_from_one_to_alpha_as_a_cube(step, total, alpha, expected):
    assert alpha_at(step, total, alpha, ramp=True) == pytest.approx(expected)
    assert alpha_at(step, total, alpha, ramp=False) == alpha


def test_the_bn_statistics_move_with_the_weights():
    bn = nn.BatchNorm1d(2)
    lookahead = Lookahead(bn, every=2, alpha=0.25)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([3.0, 5.0]))  # as if the optimizer had moved it from 1
        bn.running_mean.copy_(torch.tensor([4.0, -4.0]))  # and the batches these statistics (from 0)
    bn.num_batches_tracked.fill_(7)
    lookahead.synchronize(bn)
    assert torch.allclose(bn.weight, torch.tensor([1.0 + 0.25 * 2, 1.0 + 0.25 * 4]))
    assert torch.allclose(bn.running_mean, torch.tensor([1.0, -1.0]))
    assert torch.allclose(bn.running_var, torch.ones(2))
    assert int(bn.num_batches_tracked) == 7  # an integer counter is not averaged
    assert torch.equal(lookahead.slow[0], bn.weight.detach())


@pytest.mark.parametrize("step, every, total, due", [
    (1, 5, 12, False), (4, 5, 12, False), (5, 5, 12, True), (10, 5, 12, True), (11, 5, 12, False),
    (12, 5, 12, True), (3, 1, 12, True), (7, 7, 7, True)])
def test_a_sync_is_due_every_k_steps_and_at_the_last(step, every, total, due):
    assert sync_due(step, every, total) is due


@pytest.mark.parametrize("every, alpha, name", [(0, 0.5, "lookahead_steps"), (2.5, 0.5, "lookahead_steps"), (5, 0.0, "lookahead_alpha"),
                                                (5, 1.5, "lookahead_alpha"), (5, -0.1, "lookahead_alpha")])
def test_bad_settings_name_the_parameter(every, alpha, name):
    with pytest.raises(ValueError, match=name):
        Lookahead(nn.Linear(2, 2), every=every, alpha=alpha)


@pytest.mark.parametrize("setting, key", [("train.lookahead_alpha=0", "train.lookahead_alpha"),
                                          ("train.lookahead_alpha=2", "train.lookahead_alpha"),
                                          ("train.lookahead_steps=-1", "train.lookahead_steps")])
def test_bad_recipe_values_name_the_key(setting, key):
    with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
        load("fashion-mnist", [setting])


def test_a_checkpoint_of_another_model_is_refused():
    lookahead = Lookahead(nn.Linear(2, 2), every=5, alpha=0.5)
    with pytest.raises(ValueError, match="do not match"):
        lookahead.load_state_dict(Lookahead(nn.Linear(3, 2), every=5, alpha=0.5).state_dict())


def test_alpha_one_is_the_plain_run_and_a_run_ends_on_its_slow_weights(tmp_path, small_data):
    common = ("train.epochs=2", "train.precision=fp32")
    plain = Trainer(recipe(*common), out=tmp_path / "plain", quiet=True, data=small_data)
    plain.fit()
    one = Trainer(recipe(*common, "train.lookahead_steps=3", "train.lookahead_alpha=1"), out=tmp_path / "one",
                  quiet=True, data=small_data)
    one.fit()
    assert same_weights(plain, one)  # moving all the way to the fast weights changes nothing
    half = Trainer(recipe(*common, "train.lookahead_steps=5"), out=tmp_path / "half", quiet=True, data=small_data)
    summary = half.fit()
    assert half.step == half.total_steps and half.total_steps % 5 != 0  # the last round is a partial one, closed
    moving = [t for t in (*half.model.parameters(), *half.model.buffers()) if t.is_floating_point()]
    assert all(torch.equal(m, s) for m, s in zip(moving, half.lookahead.slow))
    assert not same_weights(plain, half)
    assert 0.0 <= summary["test_acc"] <= 1.0


def test_a_resume_from_a_checkpoint_without_slow_weights_starts_them_from_its_weights(tmp_path, small_data):
    """Lookahead turned on at a resume: the slow weights are the checkpoint's weights, not the
    new trainer's fresh init (which the first sync would pull the trained net halfway back to)."""
    plain = Trainer(recipe("train.epochs=1"), out=tmp_path / "plain", quiet=True, data=small_data)
    plain.fit()
    state = plain.state_dict()
    assert state["lookahead"] == {}
    later = Trainer(recipe("train.epochs=2", "train.lookahead_steps=5"), out=tmp_path / "later", quiet=True, data=small_data)
    fresh = [t.clone() for t in later.lookahead.slow]
    later.load_state_dict(state)
    moving = [t for t in (*plain.model.parameters(), *plain.model.buffers()) if t.is_floating_point()]
    assert all(torch.equal(s, m) for s, m in zip(later.lookahead.slow, moving))
    assert not all(torch.equal(s, f) for s, f in zip(later.lookahead.slow, fresh))
