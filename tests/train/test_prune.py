"""InfoBatch pruning (``train.prune_easy``): the draw against the paper's rule written out in
numpy, the rescaling's unbiasedness by Monte Carlo, the annealing and the lr schedule's
progress in closed form, and the trainer: a whole first epoch, fewer steps with the schedule
still run to its end, bit-exact resumes, and the recipe keys' errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.train.helpers import StopAfterEpoch, recipe, same_weights
from trickbag.recipes import RecipeError, load
from trickbag.train import Callback, Trainer
from trickbag.train.prune import EasySamplePruner, prunes_epoch, schedule_step, select_epoch


def infobatch_numpy(scores: np.ndarray, seen: np.ndarray, perm: np.ndarray, ratio: float, draws: np.ndarray):
    """Algorithm 1 of Qin et al. 2024 for one epoch: well-learned = seen and below the mean of
    the seen scores; each is dropped when its draw < r; kept ones weigh 1 / (1 - r)."""
    mean = scores[seen].mean()
    order, weights = [], np.ones(len(scores))
    for i in perm:
        well = seen[i] and scores[i] < mean
        if well and draws[i] < ratio:
            continue
        order.append(i)
        if well:
            weights[i] = 1.0 / (1.0 - ratio)
    return np.array(order), weights


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.8])
def test_the_draw_follows_algorithm_1(ratio):
    rng = np.random.default_rng(1)
    n = 200
    scores = torch.from_numpy(rng.exponential(1.0, n)).float()
    seen = torch.from_numpy(rng.random(n) < 0.9)
    scores = torch.where(seen, scores, torch.tensor(float("nan")))  # never trained on: no score
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    draws = torch.rand(n, generator=torch.Generator().manual_seed(7)).numpy()  # the stream select_epoch takes
    order, weights, dropped = select_epoch(scores, perm, ratio, torch.Generator().manual_seed(7))
    want_order, want_weights = infobatch_numpy(scores.numpy(), seen.numpy(), perm.numpy(), ratio, draws)
    np.testing.assert_array_equal(order.numpy(), want_order)
    np.testing.assert_allclose(weights.numpy(), want_weights, rtol=1e-6)
    assert dropped == n - len(want_order) > 0
    assert set(np.flatnonzero(~seen.numpy()).tolist()) <= set(order.tolist())  # samples never seen are all kept


def test_the_rescaled_epoch_loss_is_unbiased():
    """E[sum over kept samples of w_i L_i] = sum_i L_i (the paper's eq. 3-4), by Monte Carlo."""
    n, trials, ratio = 40, 4000, 0.5
    losses = torch.linspace(0.01, 2.0, n) ** 2
    perm = torch.arange(n)
    gen = torch.Generator().manual_seed(0)
    totals = []
    for _ in range(trials):
        order, weights, _ = select_epoch(losses, perm, ratio, gen)
        totals.append(float((weights[order] * losses[order]).sum()))
    totals = np.array(totals)
    se = totals.std() / math.sqrt(trials)
    assert abs(totals.mean() - float(losses.sum())) < 4 * se
    well = losses < losses.mean()
    assert totals.std() > 0 and well.sum() > n / 2  # the draw varies, and most samples are below the mean here


def test_nothing_is_pruned_before_a_sample_is_seen_and_no_draw_is_taken():
    gen = torch.Generator().manual_seed(5)
    before = gen.get_state()
    perm = torch.randperm(10)
    order, weights, dropped = select_epoch(torch.full((10,), float("nan")), perm, 0.5, gen)
    assert torch.equal(order, perm) and torch.equal(weights, torch.ones(10)) and dropped == 0
    assert torch.equal(gen.get_state(), before)


def test_a_non_finite_score_is_not_judged_and_does_not_carry_the_mean():
    """A skipped step's loss (inf, NaN) leaves its samples unjudged; the mean is the finite scores' (1.77 here)."""
    scores = torch.tensor([0.1, 0.2, float("nan"), float("inf"), 5.0])
    order, weights, dropped = select_epoch(scores, torch.arange(5), 0.999999, torch.Generator().manual_seed(0))
    assert order.tolist() == [2, 3, 4] and dropped == 2 and torch.equal(weights, torch.ones(5))


@pytest.mark.parametrize("epochs, until, pruned", [(40, 0.875, 35), (8, 0.875, 7), (10, 0.5, 5), (3, 0.1, 1),
                                                   # the last epoch is whole even where ceil(until * epochs) reaches it
                                                   (10, 1.0, 9), (7, 0.875, 6), (6, 0.875, 5), (1, 1.0, 0)])
def test_the_annealing_leaves_the_last_epochs_whole(epochs, until, pruned):
    """Pruned: epochs 0 .. min(ceil(until * epochs), epochs - 1) - 1."""
    assert [prunes_epoch(e, epochs, until) for e in range(epochs)] == [True] * pruned + [False] * (epochs - pruned)


def test_a_batch_without_its_sample_indices_is_a_clear_error():
    pruner = EasySamplePruner(8, 0.5, 0.875, 4)
    with pytest.raises(ValueError, match=r"train\.prune_easy.*index="):
        pruner.weighted_mean(torch.ones(4), None)


def test_the_schedule_runs_over_the_epochs_progress():
    steps_per_epoch = 10
    assert [schedule_step(2, b, 10, steps_per_epoch) for b in range(10)] == list(range(20, 30))  # unpruned: the step count
    assert [schedule_step(2, b, 4, steps_per_epoch) for b in range(5)] == [20, 22, 25, 27, 30]  # 4 steps sweep the epoch
    assert schedule_step(0, 0, 0, steps_per_epoch) == 0


def test_bad_values_name_the_key():
    for setting, key in [("train.prune_easy=1", "train.prune_easy"), ("train.prune_easy=-0.1", "train.prune_easy"),
                         ("train.prune_until=0", "train.prune_until"), ("train.prune_until=1.5", "train.prune_until")]:
        with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
            load("fashion-mnist", [setting])
    with pytest.raises(ValueError, match="prune_easy"):
        EasySamplePruner(10, 1.0, 0.875, 4)


@pytest.mark.parametrize("other, key", [("train.lookahead_steps=5", "train.lookahead_steps"),
                                        ("train.snapshots=true", "train.snapshots"),
                                        ("distill.alpha=0.5", "distill.alpha")])
def test_conflicts_name_both_keys(other, key, small_data, tmp_path):
    with pytest.raises(RecipeError, match=rf"train\.prune_easy.*{key.replace('.', r'[.]')}"):
        Trainer(recipe("train.prune_easy=0.5", other, "distill.teacher=nowhere.pt" if "distill" in other else "train.seed=0"),
                out=tmp_path / "r", quiet=True, data=small_data)


def test_conflicts_are_refused_when_the_recipe_loads_and_torchrun_when_the_run_builds():
    """The recipe-only conflicts fail at load, before any data or model; torchrun, known only
    when a run starts, in ``build``'s check."""
    from trickbag.recipes.parts import check_pruning

    with pytest.raises(RecipeError, match=r"train\.prune_easy.*train\.lookahead_steps"):
        load("fashion-mnist", ["train.prune_easy=0.5", "train.lookahead_steps=5"])
    pruned = load("fashion-mnist", ["train.prune_easy=0.5"])
    check_pruning(pruned, distributed=False)
    check_pruning(load("fashion-mnist"), distributed=True)
    with pytest.raises(RecipeError, match=r"train\.prune_easy.*torchrun"):
        check_pruning(pruned, distributed=True)


def test_a_pruned_run_takes_fewer_steps_and_still_ends_its_schedule(tmp_path, small_data):
    common = ("train.epochs=4", "train.precision=fp32")
    plain = Trainer(recipe(*common), out=tmp_path / "plain", quiet=True, data=small_data)
    plain.fit()
    pruned = Trainer(recipe(*common, "train.prune_easy=0.5", "train.prune_until=0.75"), out=tmp_path / "pruned",
                     quiet=True, data=small_data)
    summary = pruned.fit()
    n, bs = len(small_data.train_y), pruned.batch_size
    assert summary["pruned_samples"] > 0 and summary["steps"] < pruned.total_steps
    # every sample not left out is trained on, up to the partial batch each epoch drops
    assert 0 <= 4 * n - summary["pruned_samples"] - summary["steps"] * bs < 4 * bs
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "pruned" / "metrics.jsonl").read_text().splitlines()]
    peak = pruned.schedule(pruned.total_steps // 4)
    assert lrs[-1] < 0.05 * peak  # the last step sits at the schedule's end, as an unpruned run's does
    assert lrs[-1] == pytest.approx(pruned.schedule(pruned.total_steps - 1), rel=1e-6)
    assert not same_weights(plain, pruned)


def test_the_first_epoch_is_the_plain_runs(tmp_path, small_data):
    """Nothing is seen before epoch 0: it is whole, unweighted, and draws nothing, so it trains
    what the plain run trains (the loss reduced per sample, then averaged: equal to rounding)."""
    plain = Trainer(recipe("train.epochs=1", "train.precision=fp32"), out=tmp_path / "plain", quiet=True, data=small_data)
    plain.fit()
    pruned = Trainer(recipe("train.epochs=1", "train.precision=fp32", "train.prune_easy=0.5", "train.prune_until=1"),
                     out=tmp_path / "pruned", quiet=True, data=small_data)
    pruned.fit()
    assert pruned.step == plain.step
    for (k, a), b in zip(plain.model.state_dict().items(), pruned.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5), k
    assert bool(torch.isfinite(pruned.pruner.scores).all()) and float(pruned.pruner.scores.min()) > 0


class StopInEpoch(Callback):
    """Stop after batch ``batch`` of epoch ``epoch`` (0-based; mid-epoch: interrupt.pt)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_step_end(self, trainer, loss) -> None:
        if trainer.epoch == self.epoch and trainer.batch_in_epoch == self.batch:
            trainer.should_stop = True


PRUNED = ["train.epochs=4", "train.prune_easy=0.6", "train.prune_until=1", "loss.mixup_alpha=0.2"]


def test_resumes_are_bit_exact(tmp_path, small_data):
    full = Trainer(recipe(*PRUNED), out=tmp_path / "full", quiet=True, data=small_data)
    full.fit()
    cut_epoch = Trainer(recipe(*PRUNED), out=tmp_path / "epoch", quiet=True, data=small_data, callbacks=[StopAfterEpoch(2)])
    cut_epoch.fit()
    again = Trainer(recipe(*PRUNED), out=tmp_path / "epoch", quiet=True, data=small_data)
    again.fit(resume=True)
    assert again.step == full.step and same_weights(full, again)
    cut_step = Trainer(recipe(*PRUNED), out=tmp_path / "step", quiet=True, data=small_data, callbacks=[StopInEpoch(2, 3)])
    cut_step.fit()
    assert cut_step.epoch == 2 and 0 < cut_step.batch_in_epoch < cut_step.steps_this_epoch < cut_step.steps_per_epoch
    resumed = Trainer(recipe(*PRUNED), out=tmp_path / "step", quiet=True, data=small_data)
    summary = resumed.fit(resume=True)
    assert same_weights(full, resumed) and torch.equal(full.pruner.scores, resumed.pruner.scores)
    assert summary["pruned_samples"] == full.pruner.dropped


def test_the_progress_bar_counts_schedule_steps(tmp_path, small_data):
    """On a terminal the bar's total is the schedule's steps; a pruned epoch still fills an epoch's share."""
    from trickbag.train.callbacks import ConsoleProgress

    class Recorded(ConsoleProgress):
        def __init__(self) -> None:
            super().__init__(quiet=False)
            self.tty, self.seen = True, []

        def on_step_end(self, trainer, loss) -> None:
            super().on_step_end(trainer, loss)
            if trainer.step % 10 == 0:
                self.seen.append((trainer.step, self.progress.tasks[0].completed, self.progress.tasks[0].total))

    bar = Recorded()
    trainer = Trainer(recipe(*PRUNED), out=tmp_path / "bar", quiet=True, data=small_data, callbacks=[bar])
    trainer.fit()
    assert bar.seen and all(total == trainer.total_steps and step <= done <= total for step, done, total in bar.seen)
    assert any(done > step for step, done, _ in bar.seen)  # ahead of the updates once epochs are pruned
