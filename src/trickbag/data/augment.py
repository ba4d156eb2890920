"""Batched augmentations on image tensors ``(B, C, H, W)`` in [0, 1], on any device,
reproducible from an explicit ``torch.Generator``.

Hand-written where kornia has nothing (PCA lighting) or where a batched op is clearly
faster on the hot path for small images (``random_flip``, ``pad_crop``; measured in
``benchmarks/augment.py``). kornia (optional extra ``aug``) supplies
``random_resized_crop``, ``color_jitter`` and ``random_erasing``; its randomness is driven
from our generator by seeding a forked global RNG, so runs stay reproducible.

``build_augment([{"name": "flip"}, {"name": "pad_crop", "pad": 2}])`` composes a pipeline;
``alt_flip`` (alternating flip) also takes the images' indices and the epoch, which the
pipeline passes on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from trickbag._checks import check_keywords, check_nonnegative, check_range
from trickbag.registry import Registry

__all__ = [
    "AUGMENTS",
    "random_flip",
    "alternating_flip",
    "pad_crop",
    "random_resized_crop",
    "color_jitter",
    "pca_lighting",
    "random_erasing",
    "pca_basis",
    "Augment",
    "build_augment",
]

Op = Callable[..., torch.Tensor]
AUGMENTS: Registry[Op] = Registry("augmentation")


def _on(device: torch.device, values: torch.Tensor) -> torch.Tensor:
    """Random draws from a CPU generator moved to ``device`` without waiting for it: a
    blocking host-to-GPU copy synchronizes the stream, i.e. stalls every training step, and
    an asynchronous one is truly asynchronous only from pinned (page-locked) memory."""
    if device.type == "cuda":
        values = values.pin_memory()  # torch's caching host allocator: cheap after the first steps
    return values.to(device, non_blocking=True)


def _uniform(n: int, generator: torch.Generator, device) -> torch.Tensor:
    return _on(device, torch.rand(n, generator=generator))


@AUGMENTS.register("flip")
def random_flip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``."""
    check_range("p", p, 0.0, 1.0)
    flip = (_uniform(x.shape[0], generator, x.device) < p).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


_MIX = 0x45D9F3B  # Mueller's 32-bit integer hash multiplier (products stay below 2^59: no int64 overflow)


def _hash32(v: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (two multiply-xorshift rounds) of int64 values in [0, 2^32)."""
    for _ in range(2):
        v = ((v >> 16) ^ v) * _MIX % 2**32
    return (v >> 16) ^ v


def _index_bits(index: torch.Tensor, seed: int) -> torch.Tensor:
    """A fixed pseudo-random bit (0/1, int64) per image index and seed, from a hash: no
    generator state is used, so an image's bit is the same in every epoch and after a resume,
    and bits of different seeds are independent."""
    salt = int(_hash32(torch.tensor(seed % 2**32)))
    return _hash32((index.long() ^ salt) % 2**32) & 1


@AUGMENTS.register("alt_flip")
def alternating_flip(x: torch.Tensor, generator: torch.Generator, index: torch.Tensor | None = None,
                     epoch: int = 0) -> torch.Tensor:
    """Alternating flip (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU",
    arXiv:2404.00498): in epoch 0 a fixed pseudo-random half of the images is mirrored
    (which half depends on the image's index in the training set and the generator's seed);
    every later epoch mirrors exactly the images the epoch before did not. Each image is
    seen both ways in every two epochs, where independent coin flips show a quarter of
    them the same way twice running. ``index``: the images' positions in the training set
    (the trainer passes them); without it, a random flip per image (same distribution)."""
    if index is None:
        return random_flip(x, generator)
    flip = _index_bits(index, generator.initial_seed()) ^ (int(epoch) % 2)
    return torch.where(_on(x.device, flip.bool()).view(-1, 1, 1, 1), x.flip(-1), x)


@AUGMENTS.register("pad_crop")
def pad_crop(x: torch.Tensor, generator: torch.Generator, pad: int = 2, mode: str = "constant") -> torch.Tensor:
    """Pad by ``pad`` pixels (zeros or ``reflect``) and crop back at a random offset:
    a random translation of up to ``pad`` pixels each way."""
    pad = int(check_nonnegative("pad", pad))
    if pad == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode=mode)
    offsets = _on(x.device, torch.randint(0, 2 * pad + 1, (2, b), generator=generator))
    rows = (torch.arange(h, device=x.device).view(1, h) + offsets[0].view(b, 1))  # (B, H)
    cols = (torch.arange(w, device=x.device).view(1, w) + offsets[1].view(b, 1))  # (B, W)
    out = padded.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w + 2 * pad))
    return out.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))


def _kornia_call(aug: Any, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return aug(x)


def _kornia():
    try:
        import kornia.augmentation as K
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("this augmentation uses kornia: pip install 'trickbag[aug]' (or kornia)") from exc
    return K


@AUGMENTS.register("random_resized_crop")
def random_resized_crop(x: torch.Tensor, generator: torch.Generator, scale: Sequence[float] = (0.08, 1.0),
                        ratio: Sequence[float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio``, resize back
    (Inception/Bag of Tricks: 8%-100% of the area, 3/4-4/3). kornia."""
    aug = _kornia().RandomResizedCrop(tuple(x.shape[-2:]), scale=tuple(scale), ratio=tuple(ratio))
    return _kornia_call(aug, x, generator)


@AUGMENTS.register("color_jitter")
def color_jitter(x: torch.Tensor, generator: torch.Generator, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4) -> torch.Tensor:
    """Scale brightness, contrast and saturation by factors in ``[1 - v, 1 + v]`` (Bag of
    Tricks: 0.6-1.4). Saturation needs 3 channels; grayscale images skip it. kornia."""
    sat = saturation if x.shape[1] == 3 else 0.0
    aug = _kornia().ColorJiggle(brightness=brightness, contrast=contrast, saturation=sat, p=1.0)
    return _kornia_call(aug, x, generator)


@AUGMENTS.register("random_erasing")
def random_erasing(x: torch.Tensor, generator: torch.Generator, p: float = 0.5, scale: Sequence[float] = (0.02, 0.33),
                   ratio: Sequence[float] = (0.3, 3.3)) -> torch.Tensor:
    """Erase a random rectangle with probability ``p`` (Zhong et al. 2020; cutout). kornia."""
    aug = _kornia().RandomErasing(p=p, scale=tuple(scale), ratio=tuple(ratio))
    return _kornia_call(aug, x, generator)


def pca_basis(images: torch.Tensor, max_pixels: int = 2_000_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues and eigenvectors of the per-pixel channel covariance of ``images``
    (uint8 or [0, 1] floats, (N, C, H, W)): AlexNet's PCA lighting basis."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255
    pixels = x.permute(1, 0, 2, 3).reshape(x.shape[1], -1)
    if pixels.shape[1] > max_pixels:
        pixels = pixels[:, torch.linspace(0, pixels.shape[1] - 1, max_pixels).long()]
    cov = torch.cov(pixels.double())
    eigval, eigvec = torch.linalg.eigh(cov.reshape(x.shape[1], x.shape[1]))
    return eigval.clamp_min(0).float(), eigvec.float()


@AUGMENTS.register("pca_lighting")
def pca_lighting(x: torch.Tensor, generator: torch.Generator, eigval: torch.Tensor | None = None,
                 eigvec: torch.Tensor | None = None, alphastd: float = 0.1) -> torch.Tensor:
    """AlexNet lighting noise: add ``V (alpha * lambda)`` to every pixel, ``alpha ~ N(0, alphastd^2)``
    per image and component (Krizhevsky et al. 2012; Bag of Tricks: std 0.1)."""
    check_nonnegative("alphastd", alphastd)
    if eigval is None or eigvec is None:
        raise ValueError("pca_lighting needs eigval and eigvec (trickbag.data.augment.pca_basis(train_images))")
    b, c = x.shape[:2]
    alpha = _on(x.device, torch.randn(b, c, generator=generator)) * alphastd
    shift = (alpha * eigval.to(x.device)) @ eigvec.to(x.device).T  # (B, C): sum_j V[c, j] alpha_j lambda_j
    return x + shift.view(b, c, 1, 1).to(x.dtype)


#: what an augmentation may ask for besides its parameters: where the images sit in the
#: training set and which epoch it is (``alt_flip``); the pipeline passes them to those that do
POSITION = ("index", "epoch")


def _takes_position(fn: Op) -> bool:
    import inspect

    return all(name in inspect.signature(fn).parameters for name in POSITION)


class Augment:
    """A pipeline of registered augmentations applied in order: ``aug(x, generator)``, or
    ``aug(x, generator, index=, epoch=)`` for ops that use the images' positions."""

    def __init__(self, ops: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        self.ops = [(name, AUGMENTS.get(name), dict(params)) for name, params in ops]
        self._positional = [_takes_position(fn) for _, fn, _ in self.ops]

    def __call__(self, x: torch.Tensor, generator: torch.Generator, index: torch.Tensor | None = None,
                 epoch: int = 0) -> torch.Tensor:
        for (_, fn, params), positional in zip(self.ops, self._positional):
            x = fn(x, generator, index=index, epoch=epoch, **params) if positional else fn(x, generator, **params)
        return x

    def __repr__(self) -> str:
        return "Augment(" + ", ".join(f"{n}({', '.join(f'{k}={v}' for k, v in p.items() if not isinstance(v, torch.Tensor))})" for n, _, p in self.ops) + ")"


def build_augment(spec: Sequence[Mapping[str, Any]], extra: Mapping[str, Mapping[str, Any]] | None = None) -> Augment:
    """Build a pipeline from ``[{"name": "flip"}, {"name": "pad_crop", "pad": 2}, ...]``.

    ``extra`` adds parameters computed from data (e.g. ``{"pca_lighting": {"eigval": ...}}``).
    Unknown names and parameters get did-you-mean errors.
    """
    ops = []
    for i, item in enumerate(spec):
        if "name" not in item:
            raise ValueError(f"augment[{i}] needs a 'name', got {dict(item)}")
        name = item["name"]
        fn = AUGMENTS.get(name)
        params = {k: v for k, v in item.items() if k != "name"}
        check_keywords(f"augment {name!r}", fn, params, skip=("x", "generator", *POSITION), error=ValueError)
        params.update((extra or {}).get(name, {}))
        ops.append((name, params))
    return Augment(ops)


