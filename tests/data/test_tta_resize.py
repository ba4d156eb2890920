"""Test-time augmentation views, translation with a fill value, progressive resizing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trickbag.data.datasets import ImageData
from trickbag.data.pipeline import InputPipeline, size_at_epoch
from trickbag.data.tta import translate, tta_views


def test_translate_moves_content_and_fills_the_border():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    fill = torch.tensor([-1.0, -2.0, -3.0]).view(1, 3, 1, 1)
    for dy, dx in [(1, 1), (-1, -1), (2, 0), (0, -2), (0, 0)]:
        out = translate(x, dy, dx, fill)
        for i in range(5):
            for j in range(5):
                si, sj = i - dy, j - dx
                expected = x[:, :, si, sj] if 0 <= si < 5 and 0 <= sj < 5 else fill.view(1, 3).expand(2, 3)
                assert torch.equal(out[:, :, i, j], expected), (dy, dx, i, j)


@pytest.mark.parametrize("flip,shift,count", [(False, 0, 1), (True, 0, 2), (True, 1, 6), (False, 2, 3)])
def test_tta_views_weights_sum_to_one_and_half_goes_to_the_unshifted_views(flip, shift, count):
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    views = tta_views(x, flip, shift, fill=0.0)
    assert len(views) == count and sum(w for _, w in views) == pytest.approx(1.0)
    assert torch.equal(views[0][0], x)
    if flip:
        assert torch.equal(views[1][0], x.flip(-1))
    if shift:
        unshifted = 2 if flip else 1
        assert sum(w for _, w in views[:unshifted]) == pytest.approx(0.5)
        assert torch.equal(views[unshifted][0], translate(x, shift, shift, 0.0))


def test_size_at_epoch_follows_the_plan():
    plan = [[16, 2], [22, 1]]
    assert [size_at_epoch(plan, e) for e in range(5)] == [16, 16, 22, None, None]
    assert size_at_epoch([], 0) is None


def test_the_pipeline_resizes_with_antialiasing_and_black_is_zero_in_input_units():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8, generator=gen)
    data = ImageData("t", images, torch.zeros(6, dtype=torch.long), images[:0], torch.zeros(0, dtype=torch.long),
                     images, torch.zeros(6, dtype=torch.long), 10)
    pipe = InputPipeline.for_data(data, torch.device("cpu"))
    small = pipe(images, train=False, size=16)
    unit = images.float() / 255
    expected = (F.interpolate(unit, size=(16, 16), mode="bilinear", antialias=True, align_corners=False) - unit.mean()) / unit.std()
    assert small.shape == (6, 1, 16, 16) and torch.allclose(small, expected, atol=1e-5)
    black = pipe(torch.zeros(1, 1, 28, 28, dtype=torch.uint8))
    assert torch.allclose(black, pipe.black.expand_as(black))


def test_view_subsets_are_every_smaller_set_with_the_full_one_last():
    from trickbag.data.tta import view_subsets

    assert view_subsets(True, 1) == [(False, 0), (False, 1), (True, 0), (True, 1)]
    assert view_subsets(False, 0) == [(False, 0)]
    assert view_subsets(True, 0) == [(False, 0), (True, 0)]
    assert view_subsets(False, 2) == [(False, 0), (False, 2)]
