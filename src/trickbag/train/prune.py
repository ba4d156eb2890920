"""Dynamic pruning of well-learned samples: InfoBatch (Qin et al. 2024, "InfoBatch: Lossless
Training Speed Up by Unbiased Dynamic Data Pruning", ICLR; Algorithm 1).

Every training sample keeps a score H(z): its training loss the last time it was trained on.
At the start of an epoch the samples whose score is below the mean score (over the samples
trained on so far) are the well-learned ones; each of them is left out of the epoch with
probability r (``train.prune_easy``), and the kept ones among them have their loss scaled by
1 / (1 - r). The epoch's expected gradient is then the full data's (the paper's eq. 3-4):
the rescaling makes up in weight what pruning took away in count. From epoch ``ceil(δ C)``
on (δ = ``train.prune_until``, C the run's epochs), and always in the last epoch, every sample
is trained on, unscaled: the paper's annealing, whose last full epochs remove what bias the
pruned ones left (the paper's rule alone would prune every epoch of a run of 7 or fewer at
δ = 0.875). A sample not
yet trained on has no score (NaN) and is never pruned, so epoch 0 is always whole; nor is one
whose last loss was not finite (its step was skipped), which would otherwise carry the mean.

A pruned epoch has fewer optimizer steps. The trainer runs the lr schedule over the epoch's
progress (``schedule_step``), so every epoch sweeps the lr range it would sweep unpruned and
the run ends at the schedule's end: the recipe's schedule is unchanged, and only the number
of steps per epoch shrinks.

The scores cost one loss per sample (the loss is computed per sample anyway) and one scatter
per step; selection runs once per epoch on the host with the trainer's data generator, so a
run is reproducible and a resume is bit-exact (scores, weights and the epoch's order are in
the checkpoint).
"""

from __future__ import annotations

import math

import torch

from trickbag._checks import check_range

__all__ = ["EasySamplePruner", "prunes_epoch", "select_epoch", "schedule_step"]


def prunes_epoch(epoch: int, epochs: int, until: float) -> bool:
    """Whether epoch ``epoch`` (0-based) of ``epochs`` is pruned: before ``min(ceil(until *
    epochs), epochs - 1)`` (InfoBatch's annealing: the epochs from there on see every sample,
    the last one always)."""
    return epoch < min(math.ceil(until * epochs - 1e-9), epochs - 1)


def select_epoch(scores: torch.Tensor, perm: torch.Tensor, ratio: float,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One epoch's InfoBatch draw, on the host.

    Args:
        scores: (N,) each sample's last training loss; NaN where it has none yet. Only the
            finite ones are judged (the others are never pruned).
        perm: the epoch's order of the N sample indices.
        ratio: r, the chance that a well-learned sample (score below the mean of the finite
            scores) is left out, in [0, 1).
        generator: the draws' source (one uniform per sample, in index order, once any
            score is finite).

    Returns:
        ``(order, weights, dropped)``: ``perm`` without the dropped samples (order kept), the
        (N,) loss weights (1 / (1 - r) for kept well-learned samples, else 1) and how many
        were dropped.
    """
    check_range("train.prune_easy", ratio, 0.0, 1.0, high_open=True)
    judged = torch.isfinite(scores)
    if not bool(judged.any()):  # nothing to judge yet: the epoch is whole, and no draw is taken
        return perm, torch.ones(len(scores)), 0
    draws = torch.rand(len(scores), generator=generator)
    well = judged & (scores < scores[judged].mean())
    drop = well & (draws < ratio)
    weights = torch.where(well & ~drop, torch.tensor(1.0 / (1.0 - ratio)), torch.tensor(1.0))
    return perm[~drop[perm]], weights, int(drop.sum())


def schedule_step(epoch: int, batch: int, steps_this_epoch: int, steps_per_epoch: int) -> int:
    """The lr schedule's step for batch ``batch`` of an epoch of ``steps_this_epoch`` steps, where
    the schedule counts ``steps_per_epoch`` per epoch: ``epoch * S + floor(batch * S / s)``.
    An unpruned epoch (s = S) gives ``epoch * S + batch``."""
    return epoch * steps_per_epoch + (batch * steps_per_epoch) // max(steps_this_epoch, 1)


class EasySamplePruner:
    """The scores, this epoch's loss weights, and the draw (see the module docstring).

    Args:
        n: training samples.
        ratio: r (``train.prune_easy``), in [0, 1).
        until: δ (``train.prune_until``), the share of the epochs that are pruned, in (0, 1].
        epochs: the run's epochs.
        device: where the scores and weights live: the device the losses are computed on, so
            recording them never waits for it (the host reads them once per epoch).
    """

    def __init__(self, n: int, ratio: float, until: float, epochs: int, device: torch.device | str = "cpu") -> None:
        self.ratio = check_range("train.prune_easy", ratio, 0.0, 1.0, high_open=True)
        self.until = check_range("train.prune_until", until, 0.0, 1.0, low_open=True)
        self.epochs = epochs
        self.scores = torch.full((n,), float("nan"), device=device)  # NaN: not trained on yet
        self.weights = torch.ones(n, device=device)
        self.dropped = 0  # samples left out so far, over the run

    def start_epoch(self, perm: torch.Tensor, epoch: int, generator: torch.Generator, min_keep: int = 1) -> torch.Tensor:
        """The epoch's order: ``perm`` with this epoch's dropped samples removed (all of it,
        with unit weights, in an epoch that is not pruned, or where fewer than ``min_keep``
        samples, one batch, would be left)."""
        self.weights.fill_(1.0)
        if not prunes_epoch(epoch, self.epochs, self.until) or self.ratio == 0:
            return perm
        order, weights, dropped = select_epoch(self.scores.cpu(), perm, self.ratio, generator)
        if len(order) < min_keep:
            return perm
        self.weights.copy_(weights)
        self.dropped += dropped
        return order

    def weighted_mean(self, per_sample: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Record the batch's per-sample losses as their scores and return the batch's loss:
        ``mean(w_i * loss_i)``. ``index``: the batch's sample indices (any device)."""
        if index is None:
            raise ValueError("train.prune_easy needs each batch's sample indices: pass index= to train_step")
        index = index.to(self.scores.device, non_blocking=True)
        self.scores[index] = per_sample.detach().float().to(self.scores.device)
        return (per_sample * self.weights[index].to(per_sample.device)).mean()

    def state_dict(self) -> dict:
        return {"scores": self.scores.clone(), "weights": self.weights.clone(), "dropped": self.dropped}

    def load_state_dict(self, state: dict) -> None:
        if state["scores"].shape != self.scores.shape:
            raise ValueError(f"the checkpoint's pruning scores cover {len(state['scores'])} samples, this run has {len(self.scores)}")
        self.scores.copy_(state["scores"])
        self.weights.copy_(state["weights"])
        self.dropped = int(state["dropped"])
