"""Property tests: bounds, monotonicity where it must hold, continuity of joins."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from trickbag import schedules as S

lrs = st.floats(1e-6, 10.0)
durations = st.floats(1.0, 1e5)
steps = st.floats(0.0, 1e7)
fractions = st.floats(0.0, 1.0)


@given(lrs, durations, st.floats(0.01, 0.999), st.booleans(), steps, steps)
def test_exponential_non_increasing_and_bounded(lr, d, rate, stair, a, b):
    s = S.exponential_decay(lr, d, rate, staircase=stair)
    lo, hi = sorted((a, b))
    assert 0 <= s(hi) <= s(lo) <= lr


@given(lrs, durations, st.floats(0.0, 10.0), st.booleans(), steps, steps)
def test_inverse_time_and_natural_exp_non_increasing(lr, d, rate, stair, a, b):
    lo, hi = sorted((a, b))
    for s in (S.inverse_time_decay(lr, d, rate, stair), S.natural_exp_decay(lr, d, rate, stair)):
        assert 0 <= s(hi) <= s(lo) <= lr


@given(lrs, st.floats(0.0, 1.0), durations, st.floats(0.0, 5.0), steps, steps)
def test_polynomial_stays_between_end_and_start(lr, end_frac, d, power, a, b):
    end = lr * end_frac
    s = S.polynomial_decay(lr, d, end, power)
    lo, hi = sorted((a, b))
    tol = 1e-12 * lr
    assert end - tol <= s(hi) <= s(lo) + tol <= lr + 2 * tol
    cyc = S.polynomial_decay(lr, d, end, power, cycle=True)
    assert end - tol <= cyc(a) <= lr + tol


@given(lrs, durations, fractions, steps, steps)
def test_cosine_decay_monotone_within_alpha_bounds(lr, d, alpha, a, b):
    s = S.cosine_decay(lr, d, alpha)
    lo, hi = sorted((a, b))
    tol = 1e-12 * lr
    assert lr * alpha - tol <= s(hi) <= s(lo) + tol <= lr + 2 * tol


@given(lrs, durations, st.floats(1.0, 4.0), st.floats(0.0, 1.0), fractions, steps)
def test_restarts_bounded(lr, first, t_mul, m_mul, alpha, t):
    v = S.cosine_decay_restarts(lr, first, t_mul, m_mul, alpha)(t)
    assert lr * alpha * (1 - 1e-9) <= v <= lr * (1 + 1e-9)


@given(lrs, st.floats(2.0, 1e5), st.floats(0.0, 0.9), fractions, st.floats(0, 1e6))
def test_cosine_with_warmup_bounded_and_continuous_at_the_boundary(lr, total, warm_frac, final_frac, t):
    warm = total * warm_frac
    final = lr * final_frac
    s = S.cosine(lr, total, warmup_steps=warm, final_lr=final)
    assert 0 <= s(t) <= lr * (1 + 1e-12)
    if warm > 0:
        eps = warm * 1e-9
        assert math.isclose(s(warm - eps), s(warm), rel_tol=1e-6, abs_tol=1e-9 * lr)


@settings(max_examples=50)
@given(st.lists(st.floats(1e-4, 1.0), min_size=2, max_size=5), st.floats(1.0, 1000.0), st.floats(0, 5000))
def test_join_of_chained_anneals_is_continuous(levels, length, t):
    """Each part starts where the previous ends: the join is continuous at every boundary."""
    parts = [S.CosineAnneal(levels[i], levels[i + 1], length) for i in range(len(levels) - 1)]
    bounds = [length * (i + 1) for i in range(len(parts) - 1)]
    j = S.join(parts, bounds)
    for b in bounds:
        assert math.isclose(j(b - 1e-7), j(b), rel_tol=1e-6)
    assert min(levels) * (1 - 1e-12) <= j(t) <= max(levels) * (1 + 1e-12)


@given(st.floats(1e-3, 1.0), st.integers(10, 5000), st.floats(0.05, 0.9), steps)
def test_one_cycle_bounded(max_lr, total, pct, t):
    if pct * total <= 1:
        return
    s = S.one_cycle(max_lr, total, pct)
    assert max_lr / 25 / 1e4 * (1 - 1e-9) <= s(t) <= max_lr * (1 + 1e-12)


@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(1, 100), st.floats(1, 100), st.sampled_from(["triangular", "triangular2", "exp_range"]), steps)
def test_cyclic_between_base_and_max(base, top, up, down, mode, t):
    s = S.cyclic(base, top, up, down, mode=mode, gamma=0.999)
    lo, hi = sorted((base, top))
    assert lo - 1e-12 <= s(t) <= hi + 1e-12
