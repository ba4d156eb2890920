"""Test-time augmentation: predictions averaged over a few views of each image.

``tta_views(x, flip=True, shift=1, fill=black)`` gives the views with their weights, after
airbench (``legacy/airbench94.py``): the image and its mirror carry half the weight, and
the image shifted diagonally by ``shift`` pixels each way (and their mirrors) the other
half. Shifted-in pixels are ``fill`` (the value of black in the model's input units), as
the training translation pads with black. Costs nothing at training time.
"""

from __future__ import annotations

import torch

from trickbag._checks import check_nonnegative

__all__ = ["translate", "tta_views"]


def translate(x: torch.Tensor, dy: int, dx: int, fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``x`` (B, C, H, W) moved ``dy`` pixels down and ``dx`` right; the uncovered border is ``fill``."""
    out = torch.empty_like(x)
    out[:] = fill  # a scalar, or a (1, C, 1, 1) tensor broadcast over the batch
    h, w = x.shape[-2:]
    src_y, dst_y = slice(max(-dy, 0), h - max(dy, 0)), slice(max(dy, 0), h - max(-dy, 0))
    src_x, dst_x = slice(max(-dx, 0), w - max(dx, 0)), slice(max(dx, 0), w - max(-dx, 0))
    out[..., dst_y, dst_x] = x[..., src_y, src_x]
    return out


def tta_views(x: torch.Tensor, flip: bool = True, shift: int = 0, fill: torch.Tensor | float = 0.0) -> list[tuple[torch.Tensor, float]]:
    """``[(view, weight), ...]`` whose weights sum to 1 (see the module docstring)."""
    shift = int(check_nonnegative("shift", shift))
    base = [x, x.flip(-1)] if flip else [x]
    if not shift:
        return [(v, 1.0 / len(base)) for v in base]
    moved = [translate(v, s, s, fill) for s in (shift, -shift) for v in base]
    return [(v, 0.5 / len(base)) for v in base] + [(v, 0.5 / len(moved)) for v in moved]
