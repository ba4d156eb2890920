"""TF-1 decays against closed-form formulas written here, independently of the code,
and against Keras' implementations of the same TF schedules when Keras is installed."""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest

from trickbag import schedules as S

# --- independent reference formulas (numpy, vectorised over steps) -----------------


def ref_exponential(step, lr, d, rate, staircase):
    p = np.floor(step / d) if staircase else step / d
    return lr * np.power(rate, p)


def ref_inverse_time(step, lr, d, rate, staircase):
    p = np.floor(step / d) if staircase else step / d
    return lr / (1 + rate * p)


def ref_natural_exp(step, lr, d, rate, staircase):
    p = np.floor(step / d) if staircase else step / d
    return lr * np.exp(-rate * p)


def ref_piecewise(step, boundaries, values):
    out = np.full_like(step, values[-1], dtype=float)
    # scan from the last interval down so that the first matching interval wins
    for i in reversed(range(len(boundaries))):
        out = np.where(step <= boundaries[i], values[i], out)
    return out


def ref_polynomial(step, lr, d, end, power, cycle):
    if cycle:
        mult = np.where(step == 0, 1.0, np.ceil(step / d))
        horizon = d * mult
        s = step
    else:
        horizon = d
        s = np.minimum(step, d)
    return (lr - end) * (1 - s / horizon) ** power + end


def ref_cosine(step, lr, d, alpha):
    s = np.minimum(step, d)
    return lr * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * s / d)) + alpha)


def ref_restarts(step, lr, first, t_mul, m_mul, alpha):
    """Walks the cycles one by one (no logarithms): an independent route to the same law."""
    out = []
    for t in np.atleast_1d(step).astype(float):
        start, length, i = 0.0, float(first), 0
        while t >= start + length:
            start += length
            length *= t_mul
            i += 1
        frac = (t - start) / length
        out.append(lr * ((1 - alpha) * 0.5 * m_mul**i * (1 + np.cos(np.pi * frac)) + alpha))
    return np.array(out)


def ref_linear_cosine(step, lr, d, periods, alpha, beta):
    s = np.minimum(step, d)
    linear = (d - s) / d
    cos = 0.5 * (1 + np.cos(2 * np.pi * periods * s / d))
    return lr * ((alpha + linear) * cos + beta)


STEPS = np.array(sorted({0, 1, 2, 3, 7, 9, 10, 11, 19, 20, 21, 50, 99, 100, 101, 150, 299, 300, 301, 700, 1000, 12345}), float)

CASES = [
    ("exp", S.exponential_decay(0.1, 10, 0.96), lambda s: ref_exponential(s, 0.1, 10, 0.96, False)),
    ("exp-stair", S.exponential_decay(0.1, 10, 0.5, staircase=True), lambda s: ref_exponential(s, 0.1, 10, 0.5, True)),
    ("inv", S.inverse_time_decay(0.1, 10, 0.5), lambda s: ref_inverse_time(s, 0.1, 10, 0.5, False)),
    ("inv-stair", S.inverse_time_decay(0.1, 7, 2.0, staircase=True), lambda s: ref_inverse_time(s, 0.1, 7, 2.0, True)),
    ("nat", S.natural_exp_decay(0.1, 10, 0.5), lambda s: ref_natural_exp(s, 0.1, 10, 0.5, False)),
    ("nat-stair", S.natural_exp_decay(0.2, 20, 0.3, staircase=True), lambda s: ref_natural_exp(s, 0.2, 20, 0.3, True)),
    ("piecewise", S.piecewise_constant([10, 100, 300], [1.0, 0.5, 0.1, 0.01]), lambda s: ref_piecewise(s, [10, 100, 300], [1.0, 0.5, 0.1, 0.01])),
    ("poly", S.polynomial_decay(0.1, 100), lambda s: ref_polynomial(s, 0.1, 100, 1e-4, 1.0, False)),
    ("poly-sqrt", S.polynomial_decay(0.1, 100, 0.01, power=0.5), lambda s: ref_polynomial(s, 0.1, 100, 0.01, 0.5, False)),
    ("poly-cycle", S.polynomial_decay(0.1, 100, 0.01, power=2.0, cycle=True), lambda s: ref_polynomial(s, 0.1, 100, 0.01, 2.0, True)),
    ("cos", S.cosine_decay(0.1, 100), lambda s: ref_cosine(s, 0.1, 100, 0.0)),
    ("cos-alpha", S.cosine_decay(0.1, 300, alpha=0.1), lambda s: ref_cosine(s, 0.1, 300, 0.1)),
    ("restarts", S.cosine_decay_restarts(0.1, 100), lambda s: ref_restarts(s, 0.1, 100, 2.0, 1.0, 0.0)),
    ("restarts-t1", S.cosine_decay_restarts(0.1, 50, t_mul=1.0, m_mul=0.5, alpha=0.01), lambda s: ref_restarts(s, 0.1, 50, 1.0, 0.5, 0.01)),
    ("restarts-t3", S.cosine_decay_restarts(1.0, 10, t_mul=3.0, m_mul=0.9, alpha=0.05), lambda s: ref_restarts(s, 1.0, 10, 3.0, 0.9, 0.05)),
    ("lincos", S.linear_cosine_decay(0.1, 300), lambda s: ref_linear_cosine(s, 0.1, 300, 0.5, 0.0, 0.001)),
    ("lincos-2", S.linear_cosine_decay(0.1, 1000, num_periods=2.0, alpha=0.1, beta=0.01), lambda s: ref_linear_cosine(s, 0.1, 1000, 2.0, 0.1, 0.01)),
    ("noisy-zero-var", S.noisy_linear_cosine_decay(0.1, 300, initial_variance=0.0), lambda s: ref_linear_cosine(s, 0.1, 300, 0.5, 0.0, 0.001)),
]


@pytest.mark.parametrize("label,sched,ref", CASES, ids=[c[0] for c in CASES])
def test_matches_closed_form(label, sched, ref):
    got = np.array([sched(int(s)) for s in STEPS])
    np.testing.assert_allclose(got, ref(STEPS), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("label,sched,ref", CASES, ids=[c[0] for c in CASES])
def test_float_steps_match_closed_form(label, sched, ref):
    steps = np.linspace(0, 1234.5, 97)
    got = np.array([sched(float(s)) for s in steps])
    np.testing.assert_allclose(got, ref(steps), rtol=1e-12, atol=1e-15)


def test_piecewise_boundary_belongs_to_left_interval():
    s = S.piecewise_constant([100, 200], [1.0, 0.5, 0.1])
    assert (s(100), s(100.5), s(101), s(200), s(201)) == (1.0, 0.5, 0.5, 0.5, 0.1)


def test_staircase_drops_exactly_at_multiples():
    s = S.exponential_decay(1.0, 100, 0.5, staircase=True)
    assert (s(99), s(100), s(199), s(200)) == (1.0, 0.5, 0.5, 0.25)


def test_polynomial_cycle_restarts_and_holds_without_cycle():
    cyc = S.polynomial_decay(1.0, 10, 0.0, cycle=True)
    hold = S.polynomial_decay(1.0, 10, 0.0)
    assert cyc(0) == 1.0 and cyc(10) == 0.0
    assert cyc(11) == pytest.approx(1 - 11 / 20)  # horizon doubled after the first decay
    assert hold(11) == 0.0 and hold(10**9) == 0.0
    assert cyc(5e-324) == pytest.approx(1.0)  # a subnormal step is in the first cycle (found by hypothesis)


def test_restarts_exact_at_every_restart_boundary():
    # restart steps for first=100, t_mul=2: 100, 300, 700, 1500, ... : lr jumps back to the peak
    s = S.cosine_decay_restarts(0.1, 100, t_mul=2.0)
    starts = [100 * (2**k - 1) for k in range(1, 12)]
    for b in starts:
        assert s(b) == pytest.approx(0.1, rel=1e-12), b
        assert s(b - 1) < 1e-4 * 0.1 * 10


def test_huge_steps_do_not_overflow():
    for sched in [c[1] for c in CASES]:
        v = sched(1e10)
        assert math.isfinite(v) and v >= 0


def test_noisy_is_a_pure_function_of_seed_and_step():
    a = S.noisy_linear_cosine_decay(0.1, 1000, seed=3)
    b = S.noisy_linear_cosine_decay(0.1, 1000, seed=3)
    c = S.noisy_linear_cosine_decay(0.1, 1000, seed=4)
    steps = range(0, 1000, 7)
    assert [a(s) for s in steps] == [b(s) for s in steps]
    assert [a(s) for s in steps] != [c(s) for s in steps]
    assert pickle.loads(pickle.dumps(a))(123) == a(123)


def test_noisy_noise_has_the_documented_distribution():
    """(noisy - noiseless) / (lr * cos) / std(step) must look like N(0, 1)."""
    lr, d = 0.1, 20000
    noisy = S.noisy_linear_cosine_decay(lr, d, initial_variance=1.0, variance_decay=0.55, num_periods=0.5, seed=11)
    steps = np.arange(0, d, 2, dtype=float)
    cos = 0.5 * (1 + np.cos(2 * np.pi * 0.5 * steps / d))
    keep = cos > 0.05
    clean = ref_linear_cosine(steps, lr, d, 0.5, 0.0, 0.001)
    std = np.sqrt(1.0 / (1 + steps) ** 0.55)
    got = np.array([noisy(s) for s in steps])
    z = ((got - clean) / (lr * cos) / std)[keep]
    n = z.size
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(np.mean(np.abs(z) < 1) - 0.6827) < 5 * math.sqrt(0.6827 * 0.3173 / n)


BAD = [
    (lambda: S.exponential_decay(0.1, 0, 0.5), "decay_steps must be > 0"),
    (lambda: S.exponential_decay(-0.1, 10, 0.5), "learning_rate must be >= 0"),
    (lambda: S.exponential_decay(0.1, 10, 0.0), "decay_rate must be in (0.0"),
    (lambda: S.inverse_time_decay(0.1, -5, 0.5), "decay_steps must be > 0"),
    (lambda: S.natural_exp_decay(0.1, 10, -1), "decay_rate must be >= 0"),
    (lambda: S.piecewise_constant([200, 100], [1, 2, 3]), "boundaries must be strictly increasing"),
    (lambda: S.piecewise_constant([100, 200], [1, 2]), "values must have len(boundaries) + 1 = 3"),
    (lambda: S.piecewise_constant([100], [1, -2]), "values[1] must be >= 0"),
    (lambda: S.polynomial_decay(0.1, 100, power=-1), "power must be >= 0"),
    (lambda: S.polynomial_decay(0.1, 100, end_learning_rate=-1), "end_learning_rate must be >= 0"),
    (lambda: S.cosine_decay(0.1, 100, alpha=1.5), "alpha must be in [0.0, 1.0]"),
    (lambda: S.cosine_decay_restarts(0.1, 100, t_mul=0.5), "t_mul must be in [1.0"),
    (lambda: S.cosine_decay_restarts(0.1, 0), "first_decay_steps must be > 0"),
    (lambda: S.linear_cosine_decay(0.1, 100, num_periods=-1), "num_periods must be >= 0"),
    (lambda: S.noisy_linear_cosine_decay(0.1, 100, initial_variance=-1), "initial_variance must be >= 0"),
    (lambda: S.exponential_decay(float("nan"), 10, 0.5), "learning_rate must be finite"),
]


@pytest.mark.parametrize("make,message", BAD, ids=[b[1] for b in BAD])
def test_bad_arguments_fail_at_construction(make, message):
    with pytest.raises(ValueError) as err:
        make()
    assert message in str(err.value)


def test_negative_or_nan_step_is_rejected():
    s = S.cosine_decay(0.1, 100)
    for bad in (-1, -0.5, float("nan")):
        with pytest.raises(ValueError, match="step must be >= 0"):
            s(bad)


def test_non_number_argument_names_the_parameter():
    with pytest.raises(TypeError, match="decay_steps must be a number"):
        S.exponential_decay(0.1, "100", 0.5)


@pytest.mark.parametrize("label,sched,ref", CASES, ids=[c[0] for c in CASES])
def test_pickle_and_config_round_trip(label, sched, ref):
    again = pickle.loads(pickle.dumps(sched))
    rebuilt = S.from_config(sched.get_config())
    assert again == sched and rebuilt == sched
    assert rebuilt(37) == sched(37)
    assert repr(sched).startswith(type(sched).__name__ + "(")


# --- TensorFlow's own semantics, through Keras (same code as tf.keras' schedules) ----

keras_schedules = None
try:  # Keras 3 on the torch backend carries TF's schedule implementations
    os.environ.setdefault("KERAS_BACKEND", "torch")
    from keras.optimizers import schedules as keras_schedules  # type: ignore
except Exception as exc:  # pragma: no cover - depends on the environment
    KERAS_WHY = f"keras is not importable ({type(exc).__name__}: {exc}); install the dev extra"
else:
    KERAS_WHY = ""

KERAS_CASES = [
    ("exp", lambda k: k.ExponentialDecay(0.1, 10, 0.96), S.exponential_decay(0.1, 10, 0.96)),
    ("exp-stair", lambda k: k.ExponentialDecay(0.1, 10, 0.5, staircase=True), S.exponential_decay(0.1, 10, 0.5, staircase=True)),
    ("inv-stair", lambda k: k.InverseTimeDecay(0.1, 7, 2.0, staircase=True), S.inverse_time_decay(0.1, 7, 2.0, staircase=True)),
    ("piecewise", lambda k: k.PiecewiseConstantDecay([10, 100, 300], [1.0, 0.5, 0.1, 0.01]), S.piecewise_constant([10, 100, 300], [1.0, 0.5, 0.1, 0.01])),
    ("poly", lambda k: k.PolynomialDecay(0.1, 100, 0.01, power=0.5), S.polynomial_decay(0.1, 100, 0.01, power=0.5)),
    ("poly-cycle", lambda k: k.PolynomialDecay(0.1, 100, 0.01, power=2.0, cycle=True), S.polynomial_decay(0.1, 100, 0.01, power=2.0, cycle=True)),
    ("cos-alpha", lambda k: k.CosineDecay(0.1, 300, alpha=0.1), S.cosine_decay(0.1, 300, alpha=0.1)),
    ("restarts", lambda k: k.CosineDecayRestarts(0.1, 100, t_mul=2.0, m_mul=0.8, alpha=0.01), S.cosine_decay_restarts(0.1, 100, t_mul=2.0, m_mul=0.8, alpha=0.01)),
]


@pytest.mark.skipif(keras_schedules is None, reason=KERAS_WHY or "keras missing")
@pytest.mark.parametrize("label,make_keras,ours", KERAS_CASES, ids=[c[0] for c in KERAS_CASES])
def test_matches_tensorflow_semantics_via_keras(label, make_keras, ours):
    theirs = make_keras(keras_schedules)
    # avoid exact restart steps: there TF's float32 log() may fall into the previous cycle
    steps = [s for s in STEPS if s not in (300.0, 700.0)]
    got = np.array([ours(s) for s in steps])
    ref = np.array([float(theirs(int(s))) for s in steps])
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-7)  # Keras computes in float32
