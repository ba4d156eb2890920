"""LR suggestion rules: pure functions of ``(lrs, losses)`` (torch-free).

Each returns a ``Suggestion(lr, rule, reason, index)``. ``losses`` are the finder's
smoothed losses; non-finite points must already be dropped (``lr_range_test`` never
records them).

* ``valley`` (fastai, PR#3408): the longest stretch over which the loss keeps falling;
  the lr a little past its middle (index ``start + 1/3 + 1/6`` of the stretch).
* ``steepest``: the most negative slope of loss vs ``log10(lr)``, after skipping the first
  ``skip_start`` and last ``skip_end`` points (Lightning's defaults 10 and 1: early
  spikes must not win, Lightning#1767).
* ``minimum``: a tenth of the lr with the lowest loss (Smith: "one order of magnitude
  before the minimum").
* ``fall`` (ours): the first lr at which the smoothed loss has covered three quarters of
  its fall, from its level at the start of the sweep (the mean of the first tenth of the
  points, before anything is learned) down to its minimum. Levels, not slopes: noise
  that makes single slopes jump moves a level little, and past this point each decade of
  lr buys less and less before the loss turns up.
* ``consensus`` (ours): the median in log space of valley, steepest and minimum. When the rules
  agree it returns their common value; when exactly one is thrown off (noise makes
  ``steepest`` jump to a spike, a flat curve drags ``valley``) the other two outvote it.
  A spike that misleads two rules at once (an early spike can start both the steepest
  drop and the longest falling stretch) is not corrected.

Measured (``benchmarks/lr_finder.py``, benchmarks/RESULTS.md): trained at each rule's lr
for a short budget and compared with the best of a sqrt(10) grid, ``fall`` came closest
on average and is the default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from trickbag._checks import check_choice, check_range

__all__ = ["Suggestion", "valley", "steepest", "minimum", "fall", "consensus", "RULES", "suggest", "DEFAULT_RULE"]


@dataclass(frozen=True)
class Suggestion:
    lr: float
    rule: str
    reason: str
    index: int


def _check(lrs: Sequence[float], losses: Sequence[float], need: int = 3) -> None:
    if len(lrs) != len(losses):
        raise ValueError(f"lrs and losses must have the same length, got {len(lrs)} and {len(losses)}")
    if len(lrs) < need:
        raise ValueError(f"need at least {need} points to suggest an lr, got {len(lrs)} (did the loss diverge at once?)")
    if not all(math.isfinite(v) for v in losses) or not all(v > 0 for v in lrs):
        raise ValueError("losses must be finite and lrs > 0 (drop non-finite points first)")


def valley(lrs: Sequence[float], losses: Sequence[float]) -> Suggestion:
    _check(lrs, losses)
    n = len(losses)
    run = [1] * n  # longest strictly decreasing subsequence ending at i
    best_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[i] > run[best_end]:
            best_end = i
    start = best_end - run[best_end] + 1
    third = (best_end - start) / 3
    idx = min(n - 1, start + int(third) + int(third / 2))
    return Suggestion(lrs[idx], "valley", f"longest falling stretch is points {start}-{best_end} "
                      f"(lr {lrs[start]:.3g}-{lrs[best_end]:.3g}); picked past its middle", idx)


def steepest(lrs: Sequence[float], losses: Sequence[float], skip_start: int = 10, skip_end: int = 1) -> Suggestion:
    _check(lrs, losses)
    lo, hi = skip_start, len(lrs) - skip_end
    if hi - lo < 3:  # too few points to skip that many: use them all
        lo, hi = 0, len(lrs)
    best, idx = math.inf, lo
    for i in range(max(lo, 1), hi):
        slope = (losses[i] - losses[i - 1]) / (math.log10(lrs[i]) - math.log10(lrs[i - 1]) or 1e-12)
        if slope < best:
            best, idx = slope, i
    return Suggestion(lrs[idx], "steepest", f"steepest descent of loss vs log10(lr): {best:.3g} per decade at point {idx}", idx)


def minimum(lrs: Sequence[float], losses: Sequence[float]) -> Suggestion:
    _check(lrs, losses)
    idx = min(range(len(losses)), key=losses.__getitem__)
    return Suggestion(lrs[idx] / 10, "minimum", f"lowest loss {losses[idx]:.4g} at lr {lrs[idx]:.3g}; one decade below it", idx)


def fall(lrs: Sequence[float], losses: Sequence[float], fraction: float = 0.75) -> Suggestion:
    check_range("fraction", fraction, 0.0, 1.0, low_open=True)
    _check(lrs, losses)
    head = losses[: max(len(losses) // 10, 1)]
    start = sum(head) / len(head)
    low = min(range(len(losses)), key=losses.__getitem__)
    if losses[low] >= start:
        return Suggestion(lrs[0], "fall", f"the loss never fell below its starting level {start:.4g}: no lr in the sweep "
                          "helped (check the model and data, or sweep higher)", 0)
    target = start - fraction * (start - losses[low])
    idx = next(i for i in range(low + 1) if losses[i] <= target)
    return Suggestion(lrs[idx], "fall", f"the loss falls from {start:.4g} to {losses[low]:.4g} (at lr {lrs[low]:.3g}); "
                      f"{fraction:.0%} of that fall is reached at lr {lrs[idx]:.3g}", idx)


def consensus(lrs: Sequence[float], losses: Sequence[float]) -> Suggestion:
    _check(lrs, losses)
    votes = sorted((valley(lrs, losses), steepest(lrs, losses), minimum(lrs, losses)), key=lambda s: s.lr)
    mid = votes[1]
    spread = math.log10(votes[2].lr / votes[0].lr)
    return Suggestion(mid.lr, "consensus", f"median of valley/steepest/minimum ({', '.join(f'{v.rule} {v.lr:.3g}' for v in votes)}; "
                      f"spread {spread:.1f} decades): {mid.rule}", mid.index)


RULES = {"valley": valley, "steepest": steepest, "minimum": minimum, "minimum/10": minimum, "fall": fall, "consensus": consensus}
#: the rule ``trickbag find-lr`` and ``LRFinderResult.suggestion`` use unless told otherwise
DEFAULT_RULE = "fall"


def suggest(lrs: Sequence[float], losses: Sequence[float], rule: str = DEFAULT_RULE) -> Suggestion:
    check_choice("rule", rule, tuple(RULES))
    return RULES[rule](lrs, losses)
