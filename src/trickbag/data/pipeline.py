"""``InputPipeline``: uint8 images in, the tensors a model trains on out.

One object does what a training step, an evaluation and the LR finder all need, in one
order: move to the device, scale to [0, 1] (``log1p`` optional, seed 001), augment
(training only, with the caller's ``torch.Generator``, so the augmentation stream is
part of a checkpoint), standardize with the training split's per-channel statistics,
and switch to channels_last where the runtime chose it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from trickbag.data.augment import build_augment, pca_basis
from trickbag.data.datasets import ImageData, to_unit

__all__ = ["InputPipeline", "size_at_epoch"]


def size_at_epoch(plan: Sequence[Sequence[int]], epoch: int) -> int | None:
    """Progressive resizing: the training size for ``epoch`` (0-based) under ``plan`` =
    ``[[size, epochs], ...]`` (each size for that many epochs, in order); ``None`` (full
    size) once the plan is used up. Small images early cost fewer FLOPs (conv cost grows
    with the pixels); the last epochs at full size match what the model is tested on
    (fast.ai's progressive resizing; Touvron et al. 2019 on the train/test size gap)."""
    start = 0
    for size, epochs in plan:
        if epoch < start + epochs:
            return int(size)
        start += epochs
    return None


@dataclass
class InputPipeline:
    """See the module docstring. ``mean``/``std`` have shape ``(1, C, 1, 1)`` on ``device``."""

    mean: torch.Tensor
    std: torch.Tensor
    device: torch.device
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    log1p: bool = False
    channels_last: bool = False

    @classmethod
    def for_data(cls, data: ImageData, device: torch.device, *, standardize: bool = True, log1p: bool = False,
                 augment: Sequence[Mapping[str, Any]] = (), channels_last: bool = False) -> InputPipeline:
        """Statistics (and the PCA lighting basis, if that augmentation is asked for) from
        ``data``'s training split; ``augment`` is a ``build_augment`` spec."""
        channels = data.train_x.shape[1]
        if standardize:
            mean, std = data.channel_stats(log1p)
            std = std.clamp_min(1e-6)
        else:
            mean, std = torch.zeros(channels), torch.ones(channels)
        extra = {}
        if any(a.get("name") == "pca_lighting" for a in augment):
            eigval, eigvec = pca_basis(data.train_x)
            extra["pca_lighting"] = {"eigval": eigval, "eigvec": eigvec}
        return cls(mean.view(1, -1, 1, 1).to(device), std.view(1, -1, 1, 1).to(device), device,
                   build_augment(augment, extra) if augment else None, log1p, channels_last)

    @property
    def black(self) -> torch.Tensor:
        """The value of a black pixel in the model's input units, ``(1, C, 1, 1)``: what
        translations and test-time shifts fill uncovered borders with."""
        return (0.0 - self.mean) / self.std  # to_unit(0) is 0, log1p(0) too

    def __call__(self, images: torch.Tensor, train: bool = False, generator: torch.Generator | None = None,
                 size: int | None = None, index: torch.Tensor | None = None, epoch: int = 0) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` -> standardized float on the device (augmented if ``train``,
        resized to ``size`` x ``size`` with antialiased bilinear interpolation if given).
        ``index`` (the images' positions in the training set) and ``epoch`` reach the
        augmentations that use them (``alt_flip``)."""
        x = to_unit(images.to(self.device, non_blocking=True), self.log1p)
        if train and self.augment is not None:
            if generator is None:
                raise ValueError("training inputs need a torch.Generator for the augmentation (generator=None)")
            x = self.augment(x, generator, index=index, epoch=epoch)
        if size is not None and size != x.shape[-1]:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
