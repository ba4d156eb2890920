"""Where a GPU run's time goes: ``recipes.build`` under cProfile (start-up, issue #10's wall
minus training), then training steps under ``torch.profiler`` (the host's time per op: on a
launch-bound step that is the step's time).

Run in a fresh process on a CUDA machine:

    python benchmarks/gpu_profile.py --recipe fashion-mnist --set train.cuda_graph=true --steps 20

Prints one JSON object: the machine, build's top functions by cumulative time, the steps'
median host time (cuda-synchronized), and the profiler's top ops by self CPU time and by
CUDA time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from _machine import machine  # noqa: E402

from trickbag.data import load_dataset  # noqa: E402
from trickbag.recipes import build, load  # noqa: E402
from trickbag.train import Trainer  # noqa: E402


def top_functions(profile: cProfile.Profile, n: int) -> list[str]:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(n)
    return [line for line in out.getvalue().splitlines() if line.strip()][-n:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="fashion-mnist")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--device", default="cuda", help="cuda (cpu: to try the script where no GPU is)")
    args = ap.parse_args()

    def sync() -> None:
        if args.device == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    torch.ones(1, device=args.device).sum().item()
    context_s = time.perf_counter() - t0
    data = load_dataset("fashion-mnist", val_size=0)
    recipe = load(args.recipe, [f"train.device={args.device}", "data.val_size=0", "train.checkpoint=false", *args.overrides])
    profile = cProfile.Profile()
    t0 = time.perf_counter()
    profile.enable()
    parts = build(recipe, data)
    profile.disable()
    build_s = time.perf_counter() - t0
    trainer = Trainer(parts, quiet=True)
    trainer.model.train()
    batch = parts.batch_size
    x_all, y_all = trainer.data.train_x, trainer.data.train_y

    def step(i: int) -> None:
        start = (i * batch) % (len(y_all) - batch)
        idx = torch.arange(start, start + batch, device=x_all.device)
        trainer.train_step(x_all[idx], y_all[idx], index=idx)

    t0 = time.perf_counter()
    step(0)
    sync()
    first_step_s = time.perf_counter() - t0
    for i in range(1, 6):
        step(i)
    times = []
    for i in range(6, 6 + args.steps):
        sync()
        t0 = time.perf_counter()
        step(i)
        sync()
        times.append(time.perf_counter() - t0)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if args.device == "cuda" else [])) as prof:
        for i in range(args.steps):
            step(i)
        sync()
    averages = prof.key_averages()
    print(json.dumps({
        "benchmark": "gpu_profile", "machine": machine(), "recipe": args.recipe, "overrides": args.overrides,
        "cuda_context_s": round(context_s, 3), "build_s": round(build_s, 3), "first_step_s": round(first_step_s, 3),
        "step_ms_median": round(1000 * statistics.median(times), 3), "batch_size": batch,
        "build_top": top_functions(profile, args.top),
        "ops_by_self_cpu": averages.table(sort_by="self_cpu_time_total", row_limit=args.top).splitlines(),
        "ops_by_cuda": averages.table(sort_by="self_device_time_total", row_limit=15).splitlines(),
    }, indent=1))


if __name__ == "__main__":
    main()
