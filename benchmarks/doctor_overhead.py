"""Doctor overhead on the default recipe's training step.

One trainer, one process: blocks of 20 optimizer steps alternate between "doctor off"
and "doctor on, monitoring every 10 steps" (the monitor's hooks attached for the block
and removed after), so the machine's slow drifts (this shared machine's step time moves
by 30% over minutes) hit both alike. Each step is timed. Reported:

- ``monitored_step_cost_ms``: median monitored step minus median unmonitored step of
  the same blocks (forward hooks, a parameter copy, norms, activation statistics);
- ``idle_vs_off``: median unmonitored step with the doctor attached / with it off; the
  idle hooks do nothing, so this shows the noise level of the comparison;
- ``overhead``: the monitoring cost as a fraction of training time at every N steps,
  ``cost / (N * median step)``. Target: <= 5% at the default interval (50).

    python benchmarks/doctor_overhead.py [--blocks 24]
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

from _machine import benchmark_data, machine  # noqa: E402

from trickbag.doctor import DoctorMonitor  # noqa: E402
from trickbag.recipes import load  # noqa: E402
from trickbag.train import Trainer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=24)
    ap.add_argument("--block-steps", type=int, default=20)
    args = ap.parse_args()
    data = benchmark_data(val_size=500)
    trainer = Trainer(load("fashion-mnist", ["train.checkpoint=false"]), quiet=True, data=data)  # steps only: nothing is written
    bs, n = trainer.batch_size, len(trainer.data.train_y)
    times: dict[str, list[float]] = {"off": [], "on, unmonitored": [], "monitored": []}
    for block in range(args.blocks):
        monitor = DoctorMonitor(every=10, write=False) if block % 2 else None
        if monitor is not None:
            monitor.on_fit_start(trainer)
        for i in range(args.block_steps):
            idx = torch.arange(trainer.step * bs, (trainer.step + 1) * bs) % n
            t0 = time.perf_counter()
            loss = trainer.train_step(trainer.data.train_x[idx], trainer.data.train_y[idx])
            if monitor is not None:
                monitor.on_step_end(trainer, loss)
            elapsed = time.perf_counter() - t0
            if i >= 2:  # the first steps of a block settle caches
                kind = "off" if monitor is None else "monitored" if (trainer.step - 1) % 10 == 0 else "on, unmonitored"
                times[kind].append(elapsed)
        if monitor is not None:
            monitor.on_fit_end(trainer, {})
    med = {k: statistics.median(v) for k, v in times.items()}
    cost = med["monitored"] - med["on, unmonitored"]
    print(json.dumps({
        "benchmark": "doctor_overhead", "recipe": "fashion-mnist", "blocks": args.blocks, "block_steps": args.block_steps,
        "median_step_ms": {k: round(1000 * v, 2) for k, v in med.items()},
        "monitored_step_cost_ms": round(1000 * cost, 2),
        "idle_vs_off": round(med["on, unmonitored"] / med["off"], 3),
        "overhead": {f"every {k}": round(cost / (k * med["off"]), 4) for k in (10, 50, 200)},
        "samples": {k: len(v) for k, v in times.items()},
        "machine": machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
