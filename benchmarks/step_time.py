"""Time one training step (forward, backward, optimizer) of recipe variants, side by side.

Each variant is a recipe plus overrides, built by ``trickbag.recipes.build`` (so the net, the
optimizer with its groups, channels_last and the precision are the recipe's own); one fixed
random batch; after 3 warm-up steps, rounds of steps interleaved across the variants, so
drift in the machine's speed hits all alike. Prints JSON: the machine and, per variant, the
median ms per step, the implied seconds per 60,000-image epoch and the parameter count.

    python benchmarks/step_time.py --variant w16= --variant "w24=model.params.width=24" \\
        --variant "late=model.params.channels=[16,32,32,64,96,160,256]"
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))

from _machine import machine  # noqa: E402

from trickbag.recipes import build, load  # noqa: E402


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME=key=value;key=value`` -> (NAME, overrides); ``NAME=`` is the recipe itself."""
    name, _, rest = text.partition("=")
    return name, [o for o in rest.split(";") if o]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="fashion-mnist-95")
    ap.add_argument("--variant", action="append", default=[], help="NAME=key=value;... (repeatable)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8, help="steps per round")
    args = ap.parse_args()
    variants = [parse_variant(v) for v in args.variant] or [("recipe", [])]
    parts = {}
    for name, overrides in variants:
        recipe = load(args.recipe, [*overrides, "data.train_subset=2560", "data.val_size=0"])
        parts[name] = build(recipe)
    first = next(iter(parts.values()))
    generator = torch.Generator().manual_seed(0)
    shape = first.data.train_x.shape[1:] if first.data.train_x.dim() == 4 else (1, *first.data.train_x.shape[1:])
    x = torch.randn(first.batch_size, *shape, generator=generator).to(first.device)
    y = torch.randint(0, first.data.num_classes, (first.batch_size,), generator=generator).to(first.device)

    def step(p) -> None:
        inputs = x.contiguous(memory_format=torch.channels_last) if p.runtime.channels_last else x
        with p.runtime.autocast():
            logits = p.forward(inputs)
        F.cross_entropy(logits.float(), y).backward()
        p.optimizer.step()
        p.optimizer.zero_grad(set_to_none=True)

    for p in parts.values():
        p.model.train()
        for _ in range(3):
            step(p)
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(args.rounds):
        for name, p in parts.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step(p)
            times[name].append((time.perf_counter() - start) / args.steps)
    rows = {}
    for (name, overrides), p in zip(variants, parts.values()):
        median = statistics.median(times[name])
        rows[name] = {"overrides": overrides, "ms_per_step": round(1000 * median, 1),
                      "s_per_60k_epoch": round(median * 60000 / p.batch_size, 2),
                      "parameters": sum(q.numel() for q in p.model.parameters()), "runtime": {
                          "precision": p.runtime.precision, "channels_last": p.runtime.channels_last}}
    print(json.dumps({"benchmark": "step_time", "recipe": args.recipe, "machine": machine(), "variants": rows}, indent=1))


if __name__ == "__main__":
    main()
