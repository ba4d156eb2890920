"""Fashion-MNIST race: a skilled user's hand-written loop against trickbag recipes, side by
side in one invocation on one machine.

The reference loop (issue #10's facts, our own code): all 60,000 training images, scaled to
[0, 1] and standardized with the global mean/std; a 7-conv BN/ReLU net of width W = 16
(1→W, W→2W, pool, 2W→2W, 2W→4W, pool, 4W→4W, 4W→8W, pool, 8W→8W, global max pool,
linear), channels_last; SGD Nesterov 0.9, weight decay 5e-4 on tensors with ndim > 1,
batch 256, peak lr 0.2, linear warmup over the first epoch then cosine to 0; cross-entropy
with label smoothing 0.1; a random horizontal flip per image and one random 28x28 crop
offset per batch from a 2-pixel zero pad (zero = black in standardized units); bf16
autocast on CPUs with native bf16 (and on CUDA, with the data resident on the GPU), fp32
elsewhere. Test accuracy with flip TTA (logits of image + mirror) after every epoch, for
reporting only; the clock counts training only.

Contenders are trickbag recipes trained by ``Trainer`` on the same 60,000 images
(``data.val_size=0``) and tested the same way after every epoch (``train.eval_test``).

    python benchmarks/race.py --seeds 3                          # 94% race: reference 12 epochs vs fashion-mnist
    python benchmarks/race.py --target 95 --seeds 3              # 95% race: reference 40 epochs vs fashion-mnist-95
    python benchmarks/race.py --recipes fashion-mnist --set train.epochs=8 --no-reference   # a tuning run
    python benchmarks/race.py --device cuda --contender "b1024=fashion-mnist;data.batch_size=1024;optim.lr=0.4"  # variants

Prints one JSON object: the machine (CPU flags, GPU), each contender's accuracy-vs-time
curve per seed, times to 93/94/95%, final accuracy, and the ratios trickbag / reference of
the mean time to the target.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from _machine import machine  # noqa: E402

from trickbag.data import load_dataset  # noqa: E402
from trickbag.recipes import load  # noqa: E402
from trickbag.train import Trainer  # noqa: E402
from trickbag.train.ensemble import fit_members  # noqa: E402
from trickbag.train.runtime import cpu_has_native_bf16  # noqa: E402

TARGETS = (0.93, 0.94, 0.95)
RACES = {94: {"reference_epochs": 12, "recipes": ["fashion-mnist"]}, 95: {"reference_epochs": 40, "recipes": ["fashion-mnist-95"]}}


def time_to(history: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, acc in history if acc >= target), None)


# --- the reference loop ------------------------------------------------------------------


def reference_net(width: int = 16) -> nn.Sequential:
    def cbr(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    w = width
    return nn.Sequential(*cbr(1, w), *cbr(w, 2 * w), nn.MaxPool2d(2), *cbr(2 * w, 2 * w), *cbr(2 * w, 4 * w), nn.MaxPool2d(2),
                         *cbr(4 * w, 4 * w), *cbr(4 * w, 8 * w), nn.MaxPool2d(2), *cbr(8 * w, 8 * w),
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(8 * w, 10))


@torch.no_grad()
def tta_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, autocast) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(y), 1000):
        xb = x[i : i + 1000]
        with autocast():
            logits = model(xb).float() + model(xb.flip(-1)).float()
        correct += int((logits.argmax(1) == y[i : i + 1000]).sum())
    model.train()
    return correct / len(y)


def reference_run(data, epochs: int, seed: int, device: torch.device) -> dict:
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    offsets = torch.Generator().manual_seed(seed + 1)  # crop offsets drawn on the CPU: no device sync per step
    bf16 = device.type == "cuda" or cpu_has_native_bf16()

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    unit = data.train_x.float().div(255)
    mean, std = float(unit.mean()), float(unit.std())
    train_x = ((unit - mean) / std).to(device)
    black = (0.0 - mean) / std
    padded = F.pad(train_x, (2, 2, 2, 2), value=black).contiguous(memory_format=torch.channels_last)
    train_y = data.train_y.to(device)
    test_x = ((data.test_x.float().div(255) - mean) / std).to(device).contiguous(memory_format=torch.channels_last)
    test_y = data.test_y.to(device)
    model = reference_net().to(device, memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=0.0, momentum=0.9, nesterov=True)
    batch, n = 256, len(train_y)
    steps_per_epoch = n // batch
    total, warm = epochs * steps_per_epoch, steps_per_epoch

    def lr_at(step: int) -> float:
        if step < warm:
            return 0.2 * step / warm
        return 0.2 * 0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))

    history, train_time, step = [], 0.0, 0
    for _ in range(epochs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen, device=device)
        for b in range(steps_per_epoch):
            idx = perm[b * batch : (b + 1) * batch]
            dy, dx = torch.randint(0, 5, (2,), generator=offsets).tolist()
            x = padded[idx, :, dy : dy + 28, dx : dx + 28]
            flip = torch.rand(batch, generator=gen, device=device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            with autocast():
                loss = F.cross_entropy(model(x).float(), train_y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_time += time.perf_counter() - t0
        history.append((train_time, tta_accuracy(model, test_x, test_y, autocast)))
        print(f"reference seed {seed} epoch {len(history)}: {history[-1][1]:.4f} at {train_time:.1f}s", file=sys.stderr, flush=True)
    return {"seed": seed, "epochs": epochs, "history": history, "final_test_acc": history[-1][1], "train_time_s": train_time}


# --- trickbag contenders ------------------------------------------------------------------------


def parse_contender(spec: str) -> tuple[str, str, list[str]]:
    """``LABEL=RECIPE;key=value;key=value`` (or ``RECIPE;key=value``) -> (label, recipe, overrides)."""
    head, *overrides = [part.strip() for part in spec.split(";") if part.strip()]
    label, sep, recipe = head.partition("=")
    if not sep:
        label, recipe = Path(head).stem, head
    return label, recipe, overrides


def trickbag_run(data, recipe: str, overrides: list[str], seed: int, device: str, label: str) -> dict:
    r = load(recipe, [*overrides, f"train.seed={seed}", "train.eval_test=true", "train.checkpoint=false", "data.val_size=0",
                      f"train.device={device}"])
    t0 = time.perf_counter()
    out = f"runs/race-{label}-seed{seed}"
    if r.train.members > 1:  # an ensemble recipe: its members one after another; the clock is their sum
        summary = fit_members(r, out, overwrite=True, quiet=True, data=data, tensorboard=False)
    else:
        summary = Trainer(r, out=out, quiet=True, data=data, tensorboard=False).fit(overwrite=True)
    wall = time.perf_counter() - t0
    history = [tuple(p) for p in summary["test_acc_by_train_time"]]
    print(f"{label} seed {seed}: {summary['test_acc']:.4f} in {summary['train_time_s']:.1f}s (wall {wall:.1f}s)", file=sys.stderr, flush=True)
    return {"seed": seed, "epochs": summary["epochs"], "history": history, "final_test_acc": summary["test_acc"],
            "train_time_s": summary["train_time_s"], "wall_s": wall, "runtime": summary["runtime"],
            "parameters": summary["parameters"], "adapted_for_device": summary.get("adapted_for_device"),
            "batch_size": summary["config"]["data"]["batch_size"],
            # the same final weights without EMA / with fewer test-time views: those tricks' deltas for free
            "final_test_acc_no_ema": summary.get("test_acc_no_ema"), "final_test_acc_by_tta": summary.get("test_acc_by_tta", {})}


def guarded(label: str, seed: int, run) -> dict:
    """``run()``, or ``{"seed", "error"}`` when it fails: one contender's failure (a GPU path
    that breaks, a bad variant) must not lose the others' figures."""
    try:
        return run()
    except Exception as exc:
        print(f"{label} seed {seed}: FAILED {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return {"seed": seed, "error": f"{type(exc).__name__}: {exc}"}


def summarize(runs: list[dict]) -> dict:
    failed = [r for r in runs if "error" in r]
    runs = [r for r in runs if "error" not in r]
    if not runs:
        return {"failed": len(failed), "error": failed[0]["error"] if failed else "no runs"}
    out: dict = {"failed": len(failed),"final_test_acc_mean": statistics.mean(r["final_test_acc"] for r in runs),
                 "final_test_acc_std": statistics.stdev(r["final_test_acc"] for r in runs) if len(runs) > 1 else 0.0,
                 "train_time_s_mean": statistics.mean(r["train_time_s"] for r in runs)}
    for target in TARGETS:
        times = [time_to(r["history"], target) for r in runs]
        key = f"time_to_{round(target * 100)}_s"
        for r, t in zip(runs, times):
            r[key] = t
        out[key + "_mean"] = statistics.mean(times) if all(t is not None for t in times) else None
        out[key + "_reached"] = sum(t is not None for t in times)
        # a run that never got there counts with its whole training time: a lower bound on its time to the target
        out[key + "_lower_bound_mean"] = statistics.mean(t if t is not None else r["train_time_s"] for r, t in zip(runs, times))
    return out


def finish(results: dict, target: int) -> dict:
    """Summaries per contender and the ratios to the reference, from the runs in ``results``."""
    for entry in results["contenders"].values():
        entry.update(summarize(entry["runs"]))
    ref = results["contenders"].get("reference")
    key = f"time_to_{target}_s_mean"
    for name, entry in results["contenders"].items():
        if name != "reference" and ref is not None and "error" not in ref:
            mine, theirs = entry.get(key), ref.get(key)
            entry["ratio_to_reference"] = mine / theirs if mine is not None and theirs else None
            # where some reference runs never reached the target: ours / (a lower bound of theirs), an upper bound of the ratio
            bound = ref[key.replace("_mean", "_lower_bound_mean")]
            entry["ratio_to_reference_upper_bound"] = mine / bound if mine is not None else None
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", type=int, choices=sorted(RACES), default=94, help="which race: 94 or 95")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--recipes", default=None, help="comma-separated trickbag recipes (default: the race's)")
    ap.add_argument("--contender", action="append", default=[],
                    help="LABEL=RECIPE;key=value;... : a trickbag contender with its own overrides (repeatable)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override for every contender")
    ap.add_argument("--reference-epochs", type=int, default=None)
    ap.add_argument("--no-reference", action="store_true", help="trickbag contenders only (tuning runs)")
    ap.add_argument("--from-json", default=None, help="recompute the summaries of a saved result instead of running")
    ap.add_argument("--json-out", default=None, help="also write the JSON here, rewritten after every run (a killed race keeps its runs)")
    args = ap.parse_args()
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        print(json.dumps(finish(saved, round(saved["target"] * 100)), indent=1))
        return
    race = RACES[args.target]
    device = torch.device(args.device)
    data = load_dataset("fashion-mnist", val_size=0)
    contenders = [parse_contender(c) for c in args.contender]
    if args.recipes or not contenders:
        contenders = [(Path(r).stem, r, []) for r in (args.recipes.split(",") if args.recipes else race["recipes"])] + contenders
    epochs = args.reference_epochs or race["reference_epochs"]
    results: dict = {"benchmark": "race", "target": args.target / 100, "device": str(device), "machine": machine(),
                     "native_bf16": cpu_has_native_bf16(), "overrides": args.overrides,
                     "contenders": {}}
    # seeds interleaved, so drift in the machine's speed hits every contender alike
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        if not args.no_reference:
            ref = guarded("reference", seed, lambda: reference_run(data, epochs, seed, device))
            results["contenders"].setdefault("reference", {"runs": []})["runs"].append(ref)
            save_partial(results, args.json_out)
        for label, recipe, overrides in contenders:
            run = guarded(label, seed, lambda: trickbag_run(data, recipe, [*args.overrides, *overrides], seed, args.device, label))
            entry = results["contenders"].setdefault(label, {"recipe": recipe, "overrides": [*args.overrides, *overrides], "runs": []})
            entry["runs"].append(run)
            save_partial(results, args.json_out)
    finish(results, args.target)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


def save_partial(results: dict, path: str | None) -> None:
    """The race so far, summarized, at ``path`` (written whole, then renamed)."""
    if not path:
        return
    import copy

    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(finish(copy.deepcopy(results), round(results["target"] * 100)), indent=1))
    tmp.replace(path)


if __name__ == "__main__":
    main()
