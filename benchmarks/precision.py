"""Training throughput on CPU: fp32 vs fp32 + channels_last vs bf16 autocast + channels_last,
for the default recipe's model and for a wider ResNet, side by side in one run.

    python benchmarks/precision.py [--steps 20] [--batch 256]

Each mode runs ``--steps`` steps or 15 s (at least 3 steps), whichever ends first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))

from _machine import machine  # noqa: E402

from trickbag.models import build_model  # noqa: E402
from trickbag.recipes import load  # noqa: E402
from trickbag.train.runtime import cpu_has_native_bf16  # noqa: E402

MODELS = {  # the models of the two Fashion-MNIST recipes, and a ResNet at full 28x28 resolution
    f"{name} recipe: {load(name).model.name}": (load(name).model.name, dict(load(name).model.params, in_channels=1, num_classes=10))
    for name in ("fashion-mnist", "fashion-mnist-resnet")
}
MODELS["resnet(2,2,2) w32, 28x28 stages"] = ("resnet", {"layers": (2, 2, 2), "width": 32, "stem": "mnist", "in_channels": 1, "num_classes": 10})


def images_per_s(name, params, mode, steps, batch, seconds: float = 15.0) -> float:
    torch.manual_seed(0)
    model = build_model(name, **params)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    if mode != "fp32":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16+channels_last"):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    t0, done = time.perf_counter(), 0
    while done < steps and (done < 3 or time.perf_counter() - t0 < seconds):  # slow modes stop after `seconds`
        step()
        done += 1
    return done * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    out = {}
    for label, (name, params) in MODELS.items():
        res = {mode: round(images_per_s(name, params, mode, args.steps, args.batch), 1)
               for mode in ("fp32", "fp32+channels_last", "bf16+channels_last")}
        res["speedup_bf16_cl_vs_fp32"] = round(res["bf16+channels_last"] / res["fp32"], 3)
        res["speedup_fp32_cl_vs_fp32"] = round(res["fp32+channels_last"] / res["fp32"], 3)
        out[label] = res
    print(json.dumps({"benchmark": "precision", "unit": "training images/s", "cpu_has_native_bf16": cpu_has_native_bf16(),
                      "results": out, "machine": machine()}, indent=1))


if __name__ == "__main__":
    main()
