"""Paired comparisons across seeds: is a trick's gain real? Torch-free.

A variant and its baseline train on the same seeds, so each seed gives a paired difference
``d_i = variant_i - baseline_i`` (the seed fixes the data order, augmentation and init,
which removes most of the run-to-run noise from the comparison). With ``n`` seeds:

    delta   = mean(d)                                       (= mean(variant) - mean(baseline))
    ci      = delta ± t_{(1+c)/2, n-1} · sd(d) / √n          (Student t, n - 1 degrees of freedom)
    p_value = the paired t-test's two-sided p (scipy.stats.ttest_rel)

A delta is *resolved* when its interval excludes 0. ``seeds_to_resolve`` gives the smallest
``n`` for which a delta of the observed size, with the observed spread of the differences,
would be resolved: ``t_{(1+c)/2, n-1} · sd / √n < |delta|``.

Standard deviations are sample ones (n - 1). Where a figure is undefined (the spread of one
seed) it is ``None``, never NaN, so every result serializes to strict JSON.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import ModuleType

__all__ = ["Spread", "PairedComparison", "spread", "compare_paired", "seeds_to_resolve"]


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (n - 1; ``None`` for one value) of ``n`` values."""

    n: int
    mean: float
    std: float | None


@dataclass(frozen=True)
class PairedComparison:
    """A variant against its baseline over the same seeds (see the module docstring).

    ``ci``, ``p_value`` and ``seeds_needed`` are ``None`` with one seed; ``seeds_needed`` is
    also ``None`` when the delta is 0 (no number of seeds resolves it), and ``n`` when it is
    already resolved."""

    n: int
    delta: float
    ci: tuple[float, float] | None
    p_value: float | None
    resolved: bool
    seeds_needed: int | None
    confidence: float

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ci"] = list(self.ci) if self.ci is not None else None
        return out


def _check_values(name: str, values: Sequence[float]) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise ValueError(f"{name} must hold at least one value, got none")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite numbers, got {out}")
    return out


def _check_confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(confidence)


def spread(values: Sequence[float]) -> Spread:
    """Mean and sample standard deviation of ``values`` (at least one, all finite)."""
    vals = _check_values("values", values)
    return Spread(len(vals), statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None)


def _scipy_stats() -> ModuleType:
    """``scipy.stats``, imported on first use: its import takes most of a second, which every
    process that imports ``trickbag.experiments`` without computing a statistic (a ``trickbag
    tune`` worker, ``trickbag ablate --help``) would otherwise pay."""
    from scipy import stats

    return stats


def _t_quantile(confidence: float, dof: int) -> float:
    return float(_scipy_stats().t.ppf((1 + confidence) / 2, dof))


def seeds_to_resolve(delta: float, sd: float, confidence: float = 0.95, max_seeds: int = 10_000) -> int | None:
    """The smallest ``n >= 2`` with ``t_{(1+c)/2, n-1} · sd / √n < |delta|``: how many paired
    seeds a difference of mean ``delta`` and standard deviation ``sd`` needs before its
    interval excludes 0. ``None`` if ``delta`` is 0 or more than ``max_seeds`` would be needed."""
    _check_confidence(confidence)
    if not (math.isfinite(delta) and math.isfinite(sd)) or sd < 0:
        raise ValueError(f"delta must be finite and sd finite and >= 0, got delta={delta}, sd={sd}")
    if delta == 0:
        return None
    if sd == 0:
        return 2
    # (t · sd / |delta|)^2 < n: t shrinks as n grows, so start at the normal-quantile bound and step up
    z = float(_scipy_stats().norm.ppf((1 + confidence) / 2))
    n = max(2, math.floor((z * sd / abs(delta)) ** 2))
    while n <= max_seeds:
        if _t_quantile(confidence, n - 1) * sd / math.sqrt(n) < abs(delta):
            return n
        n += 1
    return None


def compare_paired(variant: Sequence[float], baseline: Sequence[float], confidence: float = 0.95) -> PairedComparison:
    """Paired comparison of ``variant`` against ``baseline`` (same seeds, same order).

    Example: ``compare_paired([94.3, 94.1, 94.2], [94.0, 94.0, 93.9]).ci`` is the 95%
    interval of the mean gain. Reference: Student's paired t-test (scipy.stats.ttest_rel)."""
    confidence = _check_confidence(confidence)
    v, b = _check_values("variant", variant), _check_values("baseline", baseline)
    if len(v) != len(b):
        raise ValueError(f"variant and baseline must be paired by seed: got {len(v)} and {len(b)} values")
    diffs = [x - y for x, y in zip(v, b)]
    n, delta = len(diffs), statistics.fmean(diffs)
    if n == 1:  # no spread to go by: nothing is resolved and nothing can be said about more seeds
        return PairedComparison(1, delta, None, None, False, None, confidence)
    sd = statistics.stdev(diffs)
    half = _t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    ci = (delta - half, delta + half)
    if sd == 0:  # every seed moved by the same amount: certain if it moved at all
        p_value = 0.0 if delta != 0 else 1.0
    else:
        p_value = float(_scipy_stats().ttest_rel(v, b).pvalue)
    resolved = ci[0] > 0 or ci[1] < 0
    needed = n if resolved else seeds_to_resolve(delta, sd, confidence)
    return PairedComparison(n, delta, ci, p_value, resolved, needed, confidence)
