"""TensorFlow-1 learning-rate decays with TF-1's names, parameters and semantics.

Each class mirrors ``tf.compat.v1.train.<name>(learning_rate, global_step, ...)``
without ``global_step``: build it once, then call it with the step. The snake-case
names (``exponential_decay``...) are the classes themselves, so keyword arguments
and defaults are exactly TF-1's.

Differences from TF-1, all deliberate and pinned by tests:
* arithmetic is float64 (TF computes in the dtype of ``learning_rate``, float32);
* ``cosine_decay_restarts`` finds the restart index with an integer correction, so a
  step exactly on a restart gives the restarted (high) lr; TF's ``floor(log(..))`` can
  round to the previous cycle there and return ``alpha`` instead;
* ``noisy_linear_cosine_decay`` draws its noise from ``(seed, step)`` by a hash, so the
  schedule stays a pure function of the step (TF draws a fresh sample per call);
* arguments are validated when the schedule is built (TF fails, or silently returns
  NaN, when the graph runs).

Source: tensorflow/python/training/learning_rate_decay.py (TF 1.15) and
tensorflow/python/keras/optimizer_v2/learning_rate_schedule.py.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from trickbag._checks import (
    check_nonnegative,
    check_range,
)
from trickbag.schedules.base import (
    Schedule,
    check_boundaries_values,
    check_lr,
    check_steps,
    register,
)

__all__ = [
    "ExponentialDecay",
    "InverseTimeDecay",
    "NaturalExpDecay",
    "PiecewiseConstant",
    "PolynomialDecay",
    "CosineDecay",
    "CosineDecayRestarts",
    "LinearCosineDecay",
    "NoisyLinearCosineDecay",
    "exponential_decay",
    "inverse_time_decay",
    "natural_exp_decay",
    "piecewise_constant",
    "polynomial_decay",
    "cosine_decay",
    "cosine_decay_restarts",
    "linear_cosine_decay",
    "noisy_linear_cosine_decay",
]


def _progress(step: float, decay_steps: float, staircase: bool) -> float:
    """``step / decay_steps``, floored when ``staircase`` (TF's ``global_step / decay_steps``)."""
    p = step / decay_steps
    return math.floor(p) if staircase else p


def _setattr(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)  # frozen dataclasses normalise in __post_init__


@dataclass(frozen=True)
class _TimeDecay(Schedule):
    """Fields and checks shared by the exponential, inverse-time and natural-exp decays."""

    learning_rate: float
    decay_steps: float
    decay_rate: float
    staircase: bool = False

    def __post_init__(self) -> None:
        check_lr("learning_rate", self.learning_rate)
        check_steps("decay_steps", self.decay_steps)
        check_nonnegative("decay_rate", self.decay_rate)


@register("exponential_decay")
@dataclass(frozen=True)
class ExponentialDecay(_TimeDecay):
    """Exponential decay: ``lr * decay_rate ** (step / decay_steps)``.

    With ``staircase=True`` the exponent is ``floor(step / decay_steps)``: the lr drops by
    ``decay_rate`` every ``decay_steps`` steps.

    Args:
        learning_rate: lr at step 0 (>= 0).
        decay_steps: steps per factor of ``decay_rate`` (> 0).
        decay_rate: multiplier per ``decay_steps`` (> 0).
        staircase: floor the exponent.

    A growing lr (``decay_rate > 1``) that leaves the float range is ``inf``, as TF's float
    arithmetic gives, whether the power or the product overflows (Python's float power
    would raise instead).

    Example: ``exponential_decay(0.1, 100_000, 0.96, staircase=True)(250_000) == 0.1 * 0.96**2``.
    Reference: ``tf.compat.v1.train.exponential_decay``.
    """

    name = "exponential_decay"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("decay_rate", self.decay_rate, 0.0, math.inf, low_open=True)  # 0 ** 0 = 1, then 0

    def _value(self, step: float) -> float:
        try:
            factor = self.decay_rate ** _progress(step, self.decay_steps, self.staircase)
        except OverflowError:
            factor = math.inf
        return self.learning_rate * factor if self.learning_rate else 0.0


@register("inverse_time_decay")
@dataclass(frozen=True)
class InverseTimeDecay(_TimeDecay):
    """Inverse-time decay: ``lr / (1 + decay_rate * step / decay_steps)``.

    With ``staircase=True``, ``step / decay_steps`` is floored.

    Args:
        learning_rate: lr at step 0 (>= 0).
        decay_steps: steps per unit of ``t`` (> 0).
        decay_rate: ``k`` in ``1 / (1 + k t)`` (>= 0).
        staircase: floor ``t``.

    Example: ``inverse_time_decay(0.1, 1, 0.5)(2) == 0.05``.
    Reference: ``tf.compat.v1.train.inverse_time_decay``.
    """

    name = "inverse_time_decay"

    def _value(self, step: float) -> float:
        return self.learning_rate / (1.0 + self.decay_rate * _progress(step, self.decay_steps, self.staircase))


@register("natural_exp_decay")
@dataclass(frozen=True)
class NaturalExpDecay(_TimeDecay):
    """Natural-exponential decay: ``lr * exp(-decay_rate * step / decay_steps)``.

    The seed article writes ``exp(-decay_rate * global_step)``; TensorFlow divides the
    step by ``decay_steps`` (floored when ``staircase``), and so do we.

    Args:
        learning_rate: lr at step 0 (>= 0).
        decay_steps: steps per unit of the exponent (> 0).
        decay_rate: rate ``k`` in ``exp(-k t)`` (>= 0).
        staircase: floor ``step / decay_steps``.

    Example: ``natural_exp_decay(0.1, 10, 0.5)(20) == 0.1 * exp(-1)``.
    Reference: ``tf.compat.v1.train.natural_exp_decay``.
    """

    name = "natural_exp_decay"

    def _value(self, step: float) -> float:
        return self.learning_rate * math.exp(-self.decay_rate * _progress(step, self.decay_steps, self.staircase))


@register("piecewise_constant")
@dataclass(frozen=True)
class PiecewiseConstant(Schedule):
    """Piecewise constant: ``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` while
    ``boundaries[i-1] < step <= boundaries[i]``, ``values[-1]`` after ``boundaries[-1]``.

    TF's convention: the new value starts the step *after* a boundary (PyTorch's
    ``MultiStepLR`` and our ``multistep`` switch *at* the milestone).

    Args:
        boundaries: strictly increasing steps (>= 0).
        values: one more lr than boundaries (each >= 0).

    Example: ``piecewise_constant([100, 200], [1.0, 0.5, 0.1])`` gives 1.0 at step 100,
    0.5 at step 101.
    Reference: ``tf.compat.v1.train.piecewise_constant``.
    """

    name = "piecewise_constant"
    boundaries: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        boundaries, values = check_boundaries_values("boundaries", self.boundaries, self.values, first_above=None)
        _setattr(self, "boundaries", boundaries)
        _setattr(self, "values", values)

    def _value(self, step: float) -> float:
        return self.values[bisect.bisect_left(self.boundaries, step)]


@register("polynomial_decay")
@dataclass(frozen=True)
class PolynomialDecay(Schedule):
    """Polynomial decay from ``learning_rate`` to ``end_learning_rate`` over ``decay_steps``.

    ``(lr - end) * (1 - s / D) ** power + end`` with ``s = min(step, D)``, ``D = decay_steps``.
    With ``cycle=True`` the horizon restarts instead of holding: ``D = decay_steps *
    ceil(step / decay_steps)`` (and ``D = decay_steps`` at step 0).

    Args:
        learning_rate: lr at step 0 (>= 0).
        decay_steps: steps to reach ``end_learning_rate`` (> 0).
        end_learning_rate: final lr (>= 0), TF default 1e-4.
        power: exponent (>= 0); 1 is linear, 0.5 square-root.
        cycle: restart after ``decay_steps``.

    Example: ``polynomial_decay(0.1, 10_000, 0.01, power=0.5)``.
    Reference: ``tf.compat.v1.train.polynomial_decay``.
    """

    name = "polynomial_decay"
    learning_rate: float
    decay_steps: float
    end_learning_rate: float = 0.0001
    power: float = 1.0
    cycle: bool = False

    def __post_init__(self) -> None:
        check_lr("learning_rate", self.learning_rate)
        check_steps("decay_steps", self.decay_steps)
        check_lr("end_learning_rate", self.end_learning_rate)
        check_nonnegative("power", self.power)

    def _value(self, step: float) -> float:
        horizon = self.decay_steps
        if self.cycle:
            # TF: ceil(step / decay_steps), and 1 at step 0; max() also keeps a subnormal
            # step (whose quotient underflows to 0) in the first cycle
            horizon *= max(1, math.ceil(step / self.decay_steps))
        else:
            step = min(step, horizon)
        lr, end = self.learning_rate, self.end_learning_rate
        return (lr - end) * (1.0 - step / horizon) ** self.power + end


@register("cosine_decay")
@dataclass(frozen=True)
class CosineDecay(Schedule):
    """Cosine decay (Loshchilov & Hutter 2017, without restarts).

    ``lr * ((1 - alpha) * 0.5 * (1 + cos(pi * s / D)) + alpha)``, ``s = min(step, D)``.

    Args:
        learning_rate: lr at step 0 (>= 0).
        decay_steps: steps to decay over, ``D`` (> 0).
        alpha: final lr as a fraction of ``learning_rate``, in [0, 1].

    Example: ``cosine_decay(0.1, 1000)(500) == 0.05``.
    Reference: ``tf.compat.v1.train.cosine_decay``; SGDR, arXiv:1608.03983.
    """

    name = "cosine_decay"
    learning_rate: float
    decay_steps: float
    alpha: float = 0.0

    def __post_init__(self) -> None:
        check_lr("learning_rate", self.learning_rate)
        check_steps("decay_steps", self.decay_steps)
        check_range("alpha", self.alpha, 0.0, 1.0)

    def _value(self, step: float) -> float:
        s = min(step, self.decay_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * s / self.decay_steps))
        return self.learning_rate * ((1.0 - self.alpha) * cosine + self.alpha)


@register("cosine_decay_restarts")
@dataclass(frozen=True)
class CosineDecayRestarts(Schedule):
    """Cosine decay with warm restarts (SGDR).

    Cycle ``i`` lasts ``first_decay_steps * t_mul**i`` steps and starts at
    ``m_mul**i * lr``; within a cycle at fraction ``f``:
    ``lr * ((1 - alpha) * 0.5 * m_mul**i * (1 + cos(pi * f)) + alpha)``.

    Args:
        learning_rate: lr at step 0 (>= 0).
        first_decay_steps: length of the first cycle in steps (> 0).
        t_mul: growth of each cycle's length (>= 1; below 1 the cycles sum to a finite
            horizon after which TF returns NaN).
        m_mul: factor on each cycle's peak (>= 0).
        alpha: floor as a fraction of ``learning_rate``, in [0, 1].

    Example: ``cosine_decay_restarts(0.1, 100)`` restarts at steps 100, 300, 700, ...
    Reference: ``tf.compat.v1.train.cosine_decay_restarts``; arXiv:1608.03983.
    """

    name = "cosine_decay_restarts"
    learning_rate: float
    first_decay_steps: float
    t_mul: float = 2.0
    m_mul: float = 1.0
    alpha: float = 0.0

    def __post_init__(self) -> None:
        check_lr("learning_rate", self.learning_rate)
        check_steps("first_decay_steps", self.first_decay_steps)
        check_range("t_mul", self.t_mul, 1.0, math.inf)
        check_nonnegative("m_mul", self.m_mul)
        check_range("alpha", self.alpha, 0.0, 1.0)

    def _value(self, step: float) -> float:
        fraction = step / self.first_decay_steps
        t_mul = self.t_mul
        if t_mul == 1.0:
            restart = math.floor(fraction)
            fraction -= restart
        else:
            restart = math.floor(math.log(1.0 - fraction * (1.0 - t_mul)) / math.log(t_mul))
            length = t_mul**restart  # of cycle `restart`, in units of first_decay_steps
            start = (1.0 - length) / (1.0 - t_mul)
            # the log can round across a cycle boundary (at most by one cycle): step back in
            if fraction < start:
                restart, length = restart - 1, length / t_mul
                start -= length
            elif fraction >= start + length:
                restart, start = restart + 1, start + length
                length *= t_mul
            fraction = (fraction - start) / length
        cosine = 0.5 * self.m_mul**restart * (1.0 + math.cos(math.pi * fraction))
        return self.learning_rate * ((1.0 - self.alpha) * cosine + self.alpha)


@register("linear_cosine_decay")
@dataclass(frozen=True)
class LinearCosineDecay(Schedule):
    """Linear-cosine decay (Bello et al. 2017, Neural Optimizer Search).

    ``lr * ((alpha + (D - s) / D) * 0.5 * (1 + cos(2 pi num_periods s / D)) + beta)``,
    ``s = min(step, D)``, ``D = decay_steps``.

    Args:
        learning_rate: lr at step 0 (>= 0).
        decay_steps: steps to decay over (> 0).
        num_periods: cosine periods over the decay (>= 0).
        alpha, beta: shape constants of the paper (>= 0).

    Reference: ``tf.compat.v1.train.linear_cosine_decay``; arXiv:1709.07417.
    """

    name = "linear_cosine_decay"
    learning_rate: float
    decay_steps: float
    num_periods: float = 0.5
    alpha: float = 0.0
    beta: float = 0.001

    def __post_init__(self) -> None:
        _check_linear_cosine(self)

    def _value(self, step: float) -> float:
        return _linear_cosine(self, step, noise=0.0)


def _check_linear_cosine(s: LinearCosineDecay | NoisyLinearCosineDecay) -> None:
    check_lr("learning_rate", s.learning_rate)
    check_steps("decay_steps", s.decay_steps)
    check_nonnegative("num_periods", s.num_periods)
    check_nonnegative("alpha", s.alpha)
    check_nonnegative("beta", s.beta)


def _linear_cosine(s: LinearCosineDecay | NoisyLinearCosineDecay, step: float, noise: float) -> float:
    d = s.decay_steps
    t = min(step, d)
    linear = (d - t) / d + noise
    cosine = 0.5 * (1.0 + math.cos(2.0 * math.pi * s.num_periods * t / d))
    return s.learning_rate * ((s.alpha + linear) * cosine + s.beta)


_MASK64 = (1 << 64) - 1


def hashed_normal(seed: int, step: float) -> float:
    """A standard-normal draw that is a pure function of ``(seed, step)``.

    The splitmix64 finalizer (Steele et al. 2014) mixes the step's (process-independent)
    integer hash with the seed; its high and low 32 bits are two uniforms that
    Box-Muller turns into a normal.
    """
    x = (hash(step) * 0x9E3779B97F4A7C15 + (seed + 1) * 0xD1B54A32D192ED03) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    x ^= x >> 31
    u1 = ((x >> 32) + 1) / 4294967297.0  # (0, 1]
    u2 = (x & 0xFFFFFFFF) / 4294967296.0  # [0, 1)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(6.283185307179586 * u2)  # 2 pi u2


@register("noisy_linear_cosine_decay")
@dataclass(frozen=True)
class NoisyLinearCosineDecay(Schedule):
    """Linear-cosine decay with Gaussian noise on the linear term.

    As ``linear_cosine_decay`` with ``(D - s) / D + eps``, ``eps ~ N(0, v)``,
    ``v = initial_variance / (1 + s) ** variance_decay``. The noise is a pure function of
    ``(seed, step)``, so the same step always gives the same lr (resumable).

    Args:
        learning_rate, decay_steps, num_periods, alpha, beta: as ``linear_cosine_decay``.
        initial_variance: variance of the noise at step 0 (>= 0).
        variance_decay: decay exponent of the variance (>= 0).
        seed: integer seed of the noise.

    Reference: ``tf.compat.v1.train.noisy_linear_cosine_decay``; arXiv:1709.07417.
    """

    name = "noisy_linear_cosine_decay"
    learning_rate: float
    decay_steps: float
    initial_variance: float = 1.0
    variance_decay: float = 0.55
    num_periods: float = 0.5
    alpha: float = 0.0
    beta: float = 0.001
    seed: int = 0

    def __post_init__(self) -> None:
        _check_linear_cosine(self)
        check_nonnegative("initial_variance", self.initial_variance)
        check_nonnegative("variance_decay", self.variance_decay)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {self.seed!r}")

    def noise_std(self, step: float) -> float:
        """Standard deviation of the noise at ``step``."""
        t = min(step, self.decay_steps)
        return math.sqrt(self.initial_variance / (1.0 + t) ** self.variance_decay)

    def _value(self, step: float) -> float:
        t = step if step < self.decay_steps else self.decay_steps
        # noise_std(t) inlined: this is the hot path of the slowest schedule
        std = (self.initial_variance * (1.0 + t) ** -self.variance_decay) ** 0.5
        return _linear_cosine(self, t, std * hashed_normal(self.seed, t))


exponential_decay = ExponentialDecay
inverse_time_decay = InverseTimeDecay
natural_exp_decay = NaturalExpDecay
piecewise_constant = PiecewiseConstant
polynomial_decay = PolynomialDecay
cosine_decay = CosineDecay
cosine_decay_restarts = CosineDecayRestarts
linear_cosine_decay = LinearCosineDecay
noisy_linear_cosine_decay = NoisyLinearCosineDecay
