from __future__ import annotations

import pytest

from trickbag import schedules as S


def test_join_hands_each_part_the_step_since_its_boundary():
    a, b, c = S.constant(1.0), S.Linear(0.0, 10.0, 10), S.exponential_decay(8.0, 1, 0.5)
    j = S.join([a, b, c], [5, 15])
    assert [j(t) for t in (0, 4, 5, 6, 14)] == [1.0, 1.0, 0.0, 1.0, 9.0]
    assert j(15) == 8.0 and j(17) == 2.0  # c sees steps 0 and 2


def test_warmup_shifts_the_wrapped_schedule_and_is_continuous():
    base = S.cosine_decay(0.1, 100)
    w = S.warmup(base, 10, start_lr=0.01)
    assert w(0) == 0.01
    assert w(5) == pytest.approx(0.01 + (0.1 - 0.01) * 0.5)
    assert w(10) == base(0) and w(60) == base(50)
    assert abs(w(10 - 1e-9) - w(10)) < 1e-9
    assert S.warmup(base, 0) is base


def test_scale():
    s = S.scale(S.cosine_decay(0.1, 100), 4.0)
    assert s(50) == pytest.approx(4 * 0.05)


@pytest.mark.parametrize(
    "make,exc,message",
    [
        (lambda: S.join([S.constant(1)], [10]), ValueError, "schedules must have len(boundaries) + 1 = 2 elements, got 1"),
        (lambda: S.join([S.constant(1)] * 3, [20, 10]), ValueError, "boundaries must be strictly increasing"),
        (lambda: S.join([S.constant(1)] * 2, [0]), ValueError, "boundaries must be > 0"),
        (lambda: S.join([S.constant(1), 3.0], [10]), TypeError, "schedules[1] must be a schedule"),
        (lambda: S.scale(S.constant(1), -2), ValueError, "factor must be >= 0"),
        (lambda: S.warmup(S.constant(1), -5), ValueError, "warmup_steps must be >= 0"),
    ],
)
def test_bad_compositions(make, exc, message):
    with pytest.raises(exc) as err:
        make()
    assert message in str(err.value)


def test_build_gives_did_you_mean_for_names_and_parameters():
    with pytest.raises(KeyError, match="did you mean 'cosine_decay'"):
        S.build("cosine_decy", learning_rate=0.1, decay_steps=10)
    with pytest.raises(TypeError, match="no parameter 'decay_step' \\(did you mean 'decay_steps'\\?\\)"):
        S.build("cosine_decay", learning_rate=0.1, decay_step=10)
    assert S.build("cosine_decay", learning_rate=0.1, decay_steps=10)(5) == pytest.approx(0.05)
