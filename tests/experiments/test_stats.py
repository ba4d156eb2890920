"""Paired statistics against closed forms written here: Student t quantiles from tables and
the t distribution's closed-form tails for 1 and 2 degrees of freedom."""

from __future__ import annotations

import json
import math

import pytest

from trickbag.experiments import compare_paired, seeds_to_resolve, spread

# two-sided 95% quantiles t_{0.975, dof} (any statistics table)
T975 = {1: 12.706204736174698, 2: 4.302652729911275, 3: 3.182446305284263, 4: 2.7764451051977987}


def two_sided_p(t: float, dof: int) -> float:
    """Closed forms: dof 1 is Cauchy, P(|T| > t) = 1 - (2/pi) atan t; dof 2: 1 - t / sqrt(2 + t^2)."""
    t = abs(t)
    return 1 - 2 / math.pi * math.atan(t) if dof == 1 else 1 - t / math.sqrt(2 + t * t)


def by_hand(variant, baseline):
    d = [a - b for a, b in zip(variant, baseline)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = T975[n - 1] * sd / math.sqrt(n)
    return mean, sd, (mean - half, mean + half), mean / (sd / math.sqrt(n))


@pytest.mark.parametrize("variant,baseline", [
    ([94.30, 94.30, 94.25], [94.00, 94.05, 93.90]),   # resolved gain
    ([94.30, 93.80, 94.41], [94.00, 94.05, 93.90]),   # inside the noise
    ([93.10, 93.30], [93.50, 93.45]),                  # two seeds
])
def test_paired_comparison_matches_the_closed_form(variant, baseline):
    result = compare_paired(variant, baseline)
    mean, sd, ci, t = by_hand(variant, baseline)
    assert result.n == len(variant)
    assert result.delta == pytest.approx(mean, abs=1e-12)
    assert result.ci == pytest.approx(ci, abs=1e-9)
    assert result.p_value == pytest.approx(two_sided_p(t, len(variant) - 1), abs=1e-9)
    assert result.resolved == (ci[0] > 0 or ci[1] < 0)


def test_resolved_gain_and_the_seeds_an_unresolved_one_would_need():
    sure = compare_paired([94.30, 94.30, 94.25], [94.00, 94.05, 93.90])
    assert sure.resolved and sure.ci[0] > 0 and sure.seeds_needed == 3
    noisy = compare_paired([94.30, 93.80, 94.41], [94.00, 94.05, 93.90])
    assert not noisy.resolved and noisy.ci[0] < 0 < noisy.ci[1]
    mean, sd, _, _ = by_hand([94.30, 93.80, 94.41], [94.00, 94.05, 93.90])
    n = noisy.seeds_needed
    assert n > 3
    # the smallest n with t_{n-1} sd / sqrt(n) < |delta| (scipy's quantile for n - 1 > 4)
    from scipy.stats import t as student_t

    assert student_t.ppf(0.975, n - 1) * sd / math.sqrt(n) < abs(mean) <= student_t.ppf(0.975, n - 2) * sd / math.sqrt(n - 1)


def test_seeds_to_resolve_against_the_table():
    # sd 1, delta 2: n = 3 gives 4.303 / sqrt(3) = 2.48 (not < 2); n = 4 gives 3.182 / 2 = 1.59
    assert T975[2] / math.sqrt(3) >= 2 > T975[3] / 2
    assert seeds_to_resolve(2.0, 1.0) == 4
    assert seeds_to_resolve(-2.0, 1.0) == 4
    assert seeds_to_resolve(0.0, 1.0) is None
    assert seeds_to_resolve(0.5, 0.0) == 2
    assert seeds_to_resolve(1e-6, 1.0, max_seeds=100) is None
    with pytest.raises(ValueError, match="confidence must be in \\(0, 1\\)"):
        seeds_to_resolve(1.0, 1.0, confidence=1.5)


def test_edge_cases_stay_strict_json():
    one = compare_paired([94.0], [93.5])
    assert one.delta == pytest.approx(0.5) and one.ci is None and one.p_value is None and not one.resolved
    same_shift = compare_paired([1.5, 2.5, 3.5], [1.0, 2.0, 3.0])  # every seed +0.5 exactly
    assert same_shift.ci == (0.5, 0.5) and same_shift.p_value == 0.0 and same_shift.resolved
    nothing = compare_paired([94.0, 94.1], [94.0, 94.1])
    assert nothing.delta == 0 and nothing.p_value == 1.0 and not nothing.resolved and nothing.seeds_needed is None
    for r in (one, same_shift, nothing):
        json.loads(json.dumps(r.to_dict()), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    s = spread([94.0])
    assert s.mean == 94.0 and s.std is None
    s = spread([1.0, 2.0, 4.0])
    assert s.std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="paired by seed: got 2 and 3"):
        compare_paired([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="variant must be finite"):
        compare_paired([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="variant must hold at least one value"):
        compare_paired([], [])


def test_stats_and_tricks_stay_torch_free():
    import subprocess
    import sys

    code = ("import sys; from trickbag.experiments import compare_paired, with_tricks; from trickbag.recipes import load; "
            "with_tricks(load('fashion-mnist'), ['muon'], []); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False"]


def test_scipy_stats_is_imported_only_when_a_statistic_is_computed():
    """A tune worker or an ablation that has not yet compared anything does not pay scipy.stats'
    import (most of a second); the first comparison imports it. Fresh process: this one's
    modules are already loaded."""
    import subprocess
    import sys

    code = ("import sys; import trickbag.experiments.tune, trickbag.experiments.ablate; "
            "before = 'scipy.stats' in sys.modules; "
            "from trickbag.experiments import compare_paired; compare_paired([1.0, 2.0], [0.5, 1.0]); "
            "print(before, 'scipy.stats' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "True"]
