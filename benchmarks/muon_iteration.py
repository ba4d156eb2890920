"""Muon's Newton–Schulz iteration in bf16 vs fp32, for one recipe's conv filters, side by side.

What one optimizer step spends orthogonalizing the filters' updates (``trickbag.optim.muon.
orthogonalize`` on every 4-D parameter of the recipe's net, as Muon calls it on this device),
in each dtype, in interleaved rounds; and the dtype ``iteration_dtype`` picks here. Prints JSON
with the machine. Run it under an instruction-set cap to see an AVX2-only CPU:

    python benchmarks/muon_iteration.py [--recipe fashion-mnist] [--rounds 5]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/muon_iteration.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from _machine import machine  # noqa: E402

from trickbag.models import build_model  # noqa: E402
from trickbag.optim.muon import iteration_dtype, orthogonalize  # noqa: E402
from trickbag.recipes import RecipeError, load  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="fashion-mnist")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps-per-round", type=int, default=10)
    ap.add_argument("--ns-steps", type=int, default=5)
    args = ap.parse_args()
    if min(args.rounds, args.steps_per_round, args.ns_steps) < 1:
        ap.error("--rounds, --steps-per-round and --ns-steps must be >= 1")
    try:
        recipe = load(args.recipe)
    except RecipeError as exc:
        ap.error(f"--recipe: {exc}")
    net = build_model(recipe.model.name, **dict(recipe.model.params, in_channels=1, num_classes=10))
    gen = torch.Generator().manual_seed(0)
    updates = [torch.randn(p.shape, generator=gen).reshape(p.size(0), -1) for p in net.parameters() if p.dim() == 4]
    times: dict[str, list[float]] = {name: [] for name in DTYPES}
    for name, dtype in DTYPES.items():  # warm-up
        orthogonalize(updates, args.ns_steps, dtype=dtype)
    for _ in range(args.rounds):
        for name, dtype in DTYPES.items():
            t0 = time.perf_counter()
            for _ in range(args.steps_per_round):
                orthogonalize(updates, args.ns_steps, dtype=dtype)
            times[name].append((time.perf_counter() - t0) / args.steps_per_round * 1e3)
    ms = {name: round(statistics.median(t), 2) for name, t in times.items()}
    print(json.dumps({
        "benchmark": "muon_iteration", "recipe": args.recipe, "filters": [list(u.shape) for u in updates],
        "ns_steps": args.ns_steps, "ms_per_optimizer_step": ms, "bf16_over_fp32": round(ms["bf16"] / ms["fp32"], 3),
        "iteration_dtype_here": str(iteration_dtype(torch.device("cpu"))).removeprefix("torch."),
        "machine": machine(),
    }, indent=1))


if __name__ == "__main__":
    main()
