"""Initializer statistics on large tensors; tolerances derived from the sample size
(6 standard errors: a false failure has probability < 1e-8 per check)."""

from __future__ import annotations

import math

import pytest
import torch

from trickbag import init as I

Z = 6.0  # standard errors allowed


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def assert_mean_std(t: torch.Tensor, mean: float, std: float, kurtosis: float = 3.0):
    """Sample mean/std within Z standard errors of the theory (kurtosis sets the std's SE)."""
    n = t.numel()
    x = t.double().flatten()
    assert abs(float(x.mean()) - mean) <= Z * std / math.sqrt(n)
    se_std = std * math.sqrt((kurtosis - 1) / (4 * n))
    assert abs(float(x.std()) - std) <= Z * se_std, (float(x.std()), std)


def truncated_normal_moments() -> tuple[float, float]:
    """std and kurtosis of N(0, 1) truncated at +-2, integrated numerically here."""
    xs = torch.linspace(-2, 2, 200_001, dtype=torch.float64)
    pdf = torch.exp(-xs**2 / 2)
    z = torch.trapezoid(pdf, xs)
    var = torch.trapezoid(xs**2 * pdf, xs) / z
    kurt = torch.trapezoid(xs**4 * pdf, xs) / z / var**2
    return float(var.sqrt()), float(kurt)


TRUNC_KURTOSIS = truncated_normal_moments()[1]  # about 2.366
UNIFORM_KURTOSIS = 1.8


def test_tf_truncation_correction_constant():
    assert truncated_normal_moments()[0] == pytest.approx(I.TRUNCATED_NORMAL_STD, abs=1e-9)


def test_constants():
    t = torch.empty(50, 7)
    assert torch.all(I.zeros(t) == 0) and torch.all(I.ones(t) == 1) and torch.all(I.constant(t, 0.25) == 0.25)


def test_random_normal_defaults_are_tf1s():
    t = I.random_normal(torch.empty(1000, 1000), generator=gen())
    assert_mean_std(t, 0.0, 1.0)
    t = I.random_normal(torch.empty(1000, 1000), mean=0.5, stddev=0.01, generator=gen())
    assert_mean_std(t, 0.5, 0.01)


def test_truncated_normal_redraws_beyond_two_stddev():
    t = I.truncated_normal(torch.empty(1000, 1000), mean=1.0, stddev=0.5, generator=gen())
    assert float((t - 1.0).abs().max()) <= 1.0 + 1e-6  # nothing beyond 2 sigma
    assert float((t - 1.0).abs().max()) > 0.99  # but the tails up to 2 sigma are there
    assert_mean_std(t, 1.0, 0.5 * I.TRUNCATED_NORMAL_STD, TRUNC_KURTOSIS)


def test_random_uniform_bounds_and_stats():
    t = I.random_uniform(torch.empty(1000, 1000), -3.0, 1.0, generator=gen())
    assert float(t.min()) >= -3.0 and float(t.max()) < 1.0
    assert_mean_std(t, -1.0, 4 / math.sqrt(12), UNIFORM_KURTOSIS)


def test_uniform_unit_scaling_uses_fan_in():
    t = I.uniform_unit_scaling(torch.empty(400, 250), factor=1.43, generator=gen())
    bound = 1.43 * math.sqrt(3 / 250)
    assert float(t.abs().max()) <= bound
    assert_mean_std(t, 0.0, bound / math.sqrt(3), UNIFORM_KURTOSIS)


@pytest.mark.parametrize(
    "shape,fans",
    [((64, 32), (32, 64)), ((64, 32, 3, 3), (288, 576)), ((8, 4, 5), (20, 40)), ((16, 8, 2, 3, 3), (144, 288)), ((7,), (7, 7)), ((), (1, 1))],
)
def test_fans_follow_tf_receptive_field_times_channels(shape, fans):
    assert I.compute_fans(torch.Size(shape)) == fans


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
@pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal", "uniform", "normal"])
def test_variance_scaling_has_variance_scale_over_n(mode, distribution):
    shape = (256, 128, 3, 3)  # fan_in 1152, fan_out 2304
    n = {"fan_in": 1152, "fan_out": 2304, "fan_avg": 1728}[mode]
    t = I.variance_scaling(torch.empty(shape), scale=2.0, mode=mode, distribution=distribution, generator=gen())
    std = math.sqrt(2.0 / n)
    kurt = {"truncated_normal": TRUNC_KURTOSIS, "normal": TRUNC_KURTOSIS, "untruncated_normal": 3.0, "uniform": UNIFORM_KURTOSIS}[distribution]
    assert_mean_std(t, 0.0, std, kurt)
    if distribution in ("truncated_normal", "normal"):
        assert float(t.abs().max()) <= 2 * std / I.TRUNCATED_NORMAL_STD * (1 + 1e-6)
    if distribution == "uniform":
        assert float(t.abs().max()) <= math.sqrt(3) * std


@pytest.mark.parametrize(
    "fn,std_of_fans,kurt",
    [
        (I.glorot_uniform, lambda fi, fo: math.sqrt(2 / (fi + fo)), UNIFORM_KURTOSIS),
        (I.glorot_normal, lambda fi, fo: math.sqrt(2 / (fi + fo)), TRUNC_KURTOSIS),
        (I.he_normal, lambda fi, fo: math.sqrt(2 / fi), TRUNC_KURTOSIS),
        (I.he_uniform, lambda fi, fo: math.sqrt(2 / fi), UNIFORM_KURTOSIS),
        (I.lecun_normal, lambda fi, fo: math.sqrt(1 / fi), TRUNC_KURTOSIS),
        (I.lecun_uniform, lambda fi, fo: math.sqrt(1 / fi), UNIFORM_KURTOSIS),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_named_variance_initializers(fn, std_of_fans, kurt):
    t = fn(torch.empty(512, 256, 3, 3), generator=gen())
    assert_mean_std(t, 0.0, std_of_fans(256 * 9, 512 * 9), kurt)


def test_glorot_uniform_limit_is_the_seed_formula():
    t = I.glorot_uniform(torch.empty(300, 200), generator=gen())
    limit = math.sqrt(6 / (200 + 300))
    assert float(t.abs().max()) <= limit and float(t.abs().max()) > 0.99 * limit


@pytest.mark.parametrize("shape", [(64, 64), (32, 128), (128, 32), (64, 16, 3, 3)])
def test_orthogonal(shape):
    t = I.orthogonal(torch.empty(shape), gain=1.5, generator=gen())
    m = t.reshape(shape[0], -1).double() / 1.5
    small = min(m.shape)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    assert torch.allclose(gram, torch.eye(small, dtype=torch.float64), atol=1e-5)


def test_seeded_generators_reproduce_and_differ():
    a = I.he_normal(torch.empty(10, 10), generator=gen(1))
    b = I.he_normal(torch.empty(10, 10), generator=gen(1))
    c = I.he_normal(torch.empty(10, 10), generator=gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda t: I.random_normal(t, stddev=-1), "stddev must be >= 0"),
        (lambda t: I.random_uniform(t, 1.0, 1.0), "maxval must be > minval"),
        (lambda t: I.variance_scaling(t, scale=0), "scale must be > 0"),
        (lambda t: I.variance_scaling(t, mode="fan_sum"), "mode must be one of 'fan_in', 'fan_out', 'fan_avg'"),
        (lambda t: I.variance_scaling(t, distribution="gaussian"), "distribution must be one of"),
        (lambda t: I.orthogonal(torch.empty(5)), "orthogonal needs a tensor with >= 2 dimensions"),
        (lambda t: I.uniform_unit_scaling(t, factor=0), "factor must be > 0"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError) as err:
        call(torch.empty(4, 4))
    assert message in str(err.value)


def test_registry_has_every_tf1_name_and_aliases():
    for name in ["zeros", "ones", "constant", "random_normal", "truncated_normal", "random_uniform", "uniform_unit_scaling",
                 "variance_scaling", "orthogonal", "glorot_normal", "glorot_uniform", "xavier_normal", "xavier_uniform",
                 "he_normal", "he_uniform", "msra", "lecun_normal", "lecun_uniform"]:
        assert name in I.INITIALIZERS
    assert I.INITIALIZERS.get("msra") is I.he_normal and I.INITIALIZERS.get("xavier_uniform") is I.glorot_uniform
    with pytest.raises(KeyError, match="did you mean 'he_normal'"):
        I.INITIALIZERS.get("he_norml")
