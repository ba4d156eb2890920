"""Trainer overhead: the same model, data, batches and steps through ``Trainer.train_step``
vs a hand-written loop doing the same work (augment, standardize, label-smoothed CE,
Nesterov SGD with an lr written per step). Interleaved repeats, one run; reports the
ratio. Target: <= 2% slower.

    python benchmarks/trainer_overhead.py [--steps 40] [--repeats 5]
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

from _machine import benchmark_data, machine  # noqa: E402

from trickbag.data import pad_crop, random_flip  # noqa: E402
from trickbag.recipes import load  # noqa: E402
from trickbag.train import Trainer  # noqa: E402

SET = ["train.ema_decay=0", "train.checkpoint=false", "data.augment=[{name: flip}, {name: pad_crop, pad: 2}]"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    data = benchmark_data(val_size=1000)
    trainer = Trainer(load("fashion-mnist", SET), out="runs/bench-overhead", quiet=True, data=data)
    bs = trainer.batch_size
    batches = [torch.arange(i * bs, (i + 1) * bs) for i in range(args.steps)]

    # the hand-written loop: the same model object family, rebuilt with the same seed
    torch.manual_seed(0)
    hand = Trainer(load("fashion-mnist", SET), out="runs/bench-overhead", quiet=True, data=data)
    model, sched = hand.model, hand.schedule
    opt = torch.optim.SGD([{"params": g["params"], "weight_decay": g["weight_decay"]} for g in hand.optimizer.param_groups],
                          lr=0.1, momentum=0.9, nesterov=True)
    mean, std = hand.inputs.mean, hand.inputs.std
    gen = torch.Generator().manual_seed(0)

    def hand_epoch():
        for step, idx in enumerate(batches):
            x = data.train_x[idx].float().div_(255)
            x = pad_crop(random_flip(x, gen), gen, pad=2)
            x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
            for g in opt.param_groups:
                g["lr"] = sched(step)
            loss = F.cross_entropy(model(x), data.train_y[idx], label_smoothing=0.1)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            float(loss.detach())

    def trainer_epoch():
        for idx in batches:
            trainer.train_step(data.train_x[idx], data.train_y[idx])

    times = {"hand": [], "trainer": []}
    hand_epoch()
    trainer_epoch()  # warm-up both
    for _ in range(args.repeats):
        for name, fn in (("hand", hand_epoch), ("trainer", trainer_epoch)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    ratio = statistics.median(times["trainer"]) / statistics.median(times["hand"])
    print(json.dumps({"benchmark": "trainer_overhead", "steps": args.steps, "batch": bs,
                      "hand_s_median": statistics.median(times["hand"]), "trainer_s_median": statistics.median(times["trainer"]),
                      "ratio_trainer_over_hand": round(ratio, 4), "overhead_pct": round(100 * (ratio - 1), 2),
                      "times": times, "machine": machine()}, indent=1))


if __name__ == "__main__":
    main()
