"""Cost of one schedule evaluation in CPython (target: < 2 us), side by side with the
cost of a PyTorch scheduler's ``step()`` that computes the same kind of lr.

    python benchmarks/schedules.py [--number 20000] [--repeat 7]

Prints one JSON object: per schedule the best-of-``repeat`` time per call in
microseconds, and the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _machine import machine  # noqa: E402

from trickbag import schedules as S  # noqa: E402

SCHEDULES = {
    "exponential_decay": S.exponential_decay(0.1, 1000, 0.96, staircase=True),
    "inverse_time_decay": S.inverse_time_decay(0.1, 1000, 0.5),
    "natural_exp_decay": S.natural_exp_decay(0.1, 1000, 0.5),
    "piecewise_constant": S.piecewise_constant([1000, 2000, 3000], [0.1, 0.01, 0.001, 0.0001]),
    "polynomial_decay(cycle)": S.polynomial_decay(0.1, 1000, cycle=True),
    "cosine_decay": S.cosine_decay(0.1, 100_000),
    "cosine_decay_restarts": S.cosine_decay_restarts(0.1, 1000),
    "linear_cosine_decay": S.linear_cosine_decay(0.1, 100_000),
    "noisy_linear_cosine_decay": S.noisy_linear_cosine_decay(0.1, 100_000),
    "cosine(warmup)": S.cosine(0.1, 100_000, warmup_steps=1000, final_lr=1e-4),
    "one_cycle": S.one_cycle(0.1, 100_000),
    "cyclic(triangular2)": S.cyclic(0.01, 0.1, 2000, mode="triangular2"),
    "multistep": S.multistep(0.1, (30_000, 60_000, 90_000)),
}


def per_call_us(fn, number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()

    results = {}
    for name, sched in SCHEDULES.items():
        steps = iter(range(10**9))  # a fresh step each call, as in training
        results[name] = round(per_call_us(lambda s=sched, it=steps: s(next(it)), args.number, args.repeat), 3)
    counter = iter(range(10**9))
    results["_loop_overhead(next(iter))"] = round(per_call_us(lambda: next(counter), args.number, args.repeat), 3)

    import warnings

    import torch

    warnings.filterwarnings("ignore", message=".*lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)")

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    torch_cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10**9)
    torch_time = per_call_us(torch_cos.step, args.number // 4, args.repeat)
    from trickbag.schedules.torch import attach

    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    ours = attach(opt2, S.cosine_decay(0.1, 10**9))
    ours_time = per_call_us(ours.step, args.number // 4, args.repeat)
    worst = max(v for k, v in results.items() if not k.startswith("_"))
    print(
        json.dumps(
            {
                "benchmark": "schedules",
                "unit": "microseconds per call (best of repeats)",
                "schedule_call_us": results,
                "worst_schedule_us": worst,
                "target_us": 2.0,
                "meets_target": worst < 2.0,
                "optimizer_step_us": {
                    "trickbag attach(cosine_decay).step()": round(ours_time, 3),
                    "torch CosineAnnealingLR.step()": round(torch_time, 3),
                    "ratio_torch_over_trickbag": round(torch_time / ours_time, 2),
                },
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
