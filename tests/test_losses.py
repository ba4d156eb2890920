from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trickbag.losses import cutmix, distillation_loss, mixup, soft_target_cross_entropy


def textbook(logits, y, eps, weight=None, ignore=-100):
    """sum over kept samples of -sum_k w_k q_k log p_k, divided by the kept weights w_y."""
    n, k = logits.shape
    w = weight if weight is not None else torch.ones(k)
    num, den = 0.0, 0.0
    for i in range(n):
        if int(y[i]) == ignore:
            continue
        logp = logits[i].double().log_softmax(0)
        q = torch.full((k,), eps / k, dtype=torch.float64)
        q[y[i]] += 1 - eps
        num += float(-(w.double() * q * logp).sum())
        den += float(w[y[i]])
    return num / den


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("use_ignore", [False, True])
def test_index_targets_match_textbook_and_torch(eps, use_weight, use_ignore):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(13, 5, generator=g) * 3
    y = torch.randint(0, 5, (13,), generator=g)
    if use_ignore:
        y[[2, 7]] = -100
    weight = torch.rand(5, generator=g) + 0.5 if use_weight else None
    ours = float(soft_target_cross_entropy(logits, y, eps, weight))
    assert ours == pytest.approx(textbook(logits, y, eps, weight), rel=1e-5)
    assert ours == pytest.approx(float(F.cross_entropy(logits, y, weight=weight, label_smoothing=eps)), rel=1e-5)


def test_probability_targets_and_reductions():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 4, generator=g)
    q = torch.softmax(torch.randn(6, 4, generator=g), 1)
    per = -(q * logits.log_softmax(1)).sum(1)
    assert torch.allclose(soft_target_cross_entropy(logits, q, reduction="none"), per, atol=1e-6)
    assert float(soft_target_cross_entropy(logits, q)) == pytest.approx(float(per.mean()), rel=1e-6)
    assert float(soft_target_cross_entropy(logits, q, reduction="sum")) == pytest.approx(float(per.sum()), rel=1e-6)
    onehot = F.one_hot(torch.tensor([0, 1, 2, 3, 0, 1]), 4).float()
    assert float(soft_target_cross_entropy(logits, onehot, 0.1)) == pytest.approx(
        float(soft_target_cross_entropy(logits, torch.tensor([0, 1, 2, 3, 0, 1]), 0.1)), rel=1e-6)


def test_bad_targets():
    with pytest.raises(ValueError, match="target class indices must be in \\[0, 3\\)"):
        soft_target_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        soft_target_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), label_smoothing=1.5)
    with pytest.raises(ValueError, match="probability targets must have the logits' shape"):
        soft_target_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 4))


@pytest.mark.parametrize("batch", [1, 7, 32])
def test_mixup_odd_batches_and_soft_targets(batch):
    g = torch.Generator().manual_seed(batch)
    x = torch.rand(batch, 1, 6, 6, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    xm, q, lam = mixup(x, y, 10, alpha=0.4, generator=g)
    assert xm.shape == x.shape and q.shape == (batch, 10)
    assert torch.allclose(q.sum(1), torch.ones(batch))
    assert torch.all(q[torch.arange(batch), y] >= lam - 1e-6)  # own label keeps at least lam
    assert torch.all((q > 0).sum(1) <= 2)


def test_cutmix_lambda_is_the_pasted_area():
    g = torch.Generator().manual_seed(3)
    x = torch.arange(9, dtype=torch.float32).view(9, 1, 1, 1).expand(9, 1, 20, 20).clone()
    y = torch.arange(9)
    out, q, lam = cutmix(x, y, 9, alpha=1.0, generator=g)
    # image i is the constant i, so every pixel of out[i] names its source: i, or its partner
    pasted = out != x  # (9, 1, 20, 20): where out[i] shows another image
    mixed = [i for i in range(9) if pasted[i].any()]
    assert 0 < 1 - lam < 1 and len(mixed) >= 5  # a real box, pasted into most images (seed 3: all 9, lam 0.75)
    box = pasted[mixed[0]]
    for i in range(9):
        partners = out[i][pasted[i]].unique()
        if i in mixed:
            assert torch.equal(pasted[i], box)  # the same box in every mixed image
            assert float(pasted[i].float().mean()) == pytest.approx(1 - lam, abs=1e-6)
            assert len(partners) == 1
            partner = int(partners[0])
        else:
            partner = i  # paired with itself: the box holds its own pixels
        expected = torch.zeros(9)
        expected[i] += lam
        expected[partner] += 1 - lam
        assert torch.allclose(q[i], expected, atol=1e-6), i
    assert torch.allclose(q.sum(1), torch.ones(9))


def test_distillation_formula():
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    y = torch.randint(0, 5, (8,), generator=g)
    T, a = 4.0, 0.7
    pt = torch.softmax(t / T, 1)
    kl = (pt * (pt.log() - torch.log_softmax(s / T, 1))).sum(1).mean()  # true KL per example
    expected = (1 - a) * F.cross_entropy(s, y) + a * T * T * kl
    assert float(distillation_loss(s, t, y, alpha=a, temperature=T)) == pytest.approx(float(expected), rel=1e-5)
    assert float(distillation_loss(s, s, y, alpha=1.0)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        distillation_loss(s, t, y, temperature=0)
    # Bag of Tricks' T = 20: still the formula above, and finite
    T = 20.0
    pt = torch.softmax(t / T, 1)
    kl = (pt * (pt.log() - torch.log_softmax(s / T, 1))).sum(1).mean()
    expected = (1 - 0.5) * F.cross_entropy(s, y) + 0.5 * T * T * kl
    value = float(distillation_loss(s, t, y, temperature=20))
    assert math.isfinite(value) and value == pytest.approx(float(expected), rel=1e-5)


def test_distillation_with_alpha_0_is_plain_cross_entropy():
    from trickbag.losses.distill import DistillationLoss

    g = torch.Generator().manual_seed(5)
    s, t = torch.randn(16, 10, generator=g), torch.randn(16, 10, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    assert float(DistillationLoss(0.0, 20.0, 0.1)(s, y, t)) == pytest.approx(float(F.cross_entropy(s, y, label_smoothing=0.1)), rel=1e-6)


def test_distillation_gradient_at_temperature_matches_the_closed_form():
    """d/dz [(1-a) CE(z, y) + a T^2 KL(p_T || softmax(z/T))] / N-batch
    = ((1-a)(softmax(z) - onehot(y)) + a T (softmax(z/T) - p_T)) / N   (Hinton et al. 2015, eq. 2)."""
    from trickbag.losses.distill import DistillationLoss

    g = torch.Generator().manual_seed(6)
    n, k = 12, 7
    z = torch.randn(n, k, generator=g, dtype=torch.float64).requires_grad_()
    teacher = torch.randn(n, k, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, k, (n,), generator=g)
    for a, T in ((0.5, 20.0), (0.3, 4.0), (1.0, 2.0)):
        z.grad = None
        DistillationLoss(a, T)(z, y, teacher).backward()
        soft_student = torch.softmax(z.detach() / T, 1)
        soft_teacher = torch.softmax(teacher / T, 1)
        expected = ((1 - a) * (torch.softmax(z.detach(), 1) - F.one_hot(y, k)) + a * T * (soft_student - soft_teacher)) / n
        torch.testing.assert_close(z.grad, expected, rtol=1e-4, atol=1e-6)
