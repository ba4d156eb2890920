"""Hand-written batched flip and pad-crop vs kornia's equivalents on 28x28 batches
(the hot path of the default recipe). One run, side by side.

    python benchmarks/augment.py [--batch 256] [--repeats 50]
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from _machine import machine  # noqa: E402

from trickbag.data import pad_crop, random_flip  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    import kornia.augmentation as K

    x = torch.rand(args.batch, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    kflip = K.RandomHorizontalFlip(p=0.5)
    kcrop = K.RandomCrop((28, 28), padding=2)
    cases = {
        "flip: trickbag": lambda: random_flip(x, g),
        "flip: kornia": lambda: kflip(x),
        "pad_crop: trickbag": lambda: pad_crop(x, g, pad=2),
        "pad_crop: kornia": lambda: kcrop(x),
    }
    ms = {k: round(min(timeit.repeat(f, number=args.repeats, repeat=5)) / args.repeats * 1e3, 4) for k, f in cases.items()}
    print(json.dumps({"benchmark": "augment", "unit": "ms per batch", "batch": args.batch, "ms": ms,
                      "speedup_flip": round(ms["flip: kornia"] / ms["flip: trickbag"], 2),
                      "speedup_pad_crop": round(ms["pad_crop: kornia"] / ms["pad_crop: trickbag"], 2),
                      "machine": machine()}, indent=1))


if __name__ == "__main__":
    main()
