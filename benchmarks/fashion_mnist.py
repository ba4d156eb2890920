"""Fashion-MNIST time-to-accuracy: a plain PyTorch baseline vs ``trickbag train``, in one
invocation on the same machine.

(a) baseline: the TensorFlow-tutorial CNN (conv5x5-32, pool, conv5x5-64, pool, fc1024,
    dropout 0.4), Adam 1e-3, batch 64, fp32, no augmentation, hand-written loop;
(b) trickbag: ``Trainer`` on the default recipe (``fashion-mnist``), one run per seed.

Both train on the same 55,000 images (5,000 held out for validation) and are tested on
the official 10,000 after every epoch; times are cumulative *training* seconds (test
evaluations excluded). Prints one JSON object.

    python benchmarks/fashion_mnist.py [--seeds 3] [--baseline-minutes 9] [--recipe fashion-mnist] [--set k=v ...]
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

from trickbag.data import load_dataset  # noqa: E402
from trickbag.models import tf_tutorial_cnn  # noqa: E402
from trickbag.recipes import load  # noqa: E402
from trickbag.train import Trainer  # noqa: E402


def time_to(history: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, acc in history if acc >= target), None)


def times_to(history: list[tuple[float, float]]) -> dict:
    """Training seconds until the test accuracy first reaches 90, 91, 92, 93 and 94%."""
    return {f"time_to_{t}_s": time_to(history, t / 100) for t in (90, 91, 92, 93, 94)}


@torch.no_grad()
def test_accuracy(model, x, y, mean, std) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(y), 1000):
        xb = (x[i : i + 1000].float() / 255 - mean) / std
        correct += int((model(xb).argmax(1) == y[i : i + 1000]).sum())
    model.train()
    return correct / len(y)


def baseline(data, minutes: float, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = tf_tutorial_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = data.train_x, data.train_y
    mean, std = float(x.float().div(255).mean()), float(x.float().div(255).std())
    history, train_time, epoch = [], 0.0, 0
    gen = torch.Generator().manual_seed(seed)
    while train_time < minutes * 60:
        t0 = time.perf_counter()
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y) - 63, 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(model((x[idx].float() / 255 - mean) / std), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        train_time += time.perf_counter() - t0
        epoch += 1
        history.append((train_time, test_accuracy(model, data.test_x, data.test_y, mean, std)))
        print(f"baseline epoch {epoch}: {history[-1][1]:.4f} at {train_time:.0f}s", file=sys.stderr, flush=True)
    return {"epochs": epoch, "final_test_acc": history[-1][1], "train_time_s": train_time, "history": history,
            **times_to(history)}


def trickbag_run(data, recipe: str, overrides: list[str], seed: int) -> dict:
    r = load(recipe, overrides + [f"train.seed={seed}", "train.eval_test=true", "train.checkpoint=false"])
    summary = Trainer(r, out=f"runs/bench-fmnist-seed{seed}", quiet=True, data=data).fit(overwrite=True)
    history = summary["test_acc_by_train_time"]
    print(f"trickbag seed {seed}: {summary['test_acc']:.4f} in {summary['train_time_s']:.0f}s", file=sys.stderr, flush=True)
    return {"seed": seed, "final_test_acc": summary["test_acc"], "train_time_s": summary["train_time_s"], "history": history,
            **times_to(history),
            "images_per_s": summary["images_per_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--baseline-minutes", type=float, default=9.0)
    ap.add_argument("--recipe", default="fashion-mnist")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    data = load_dataset("fashion-mnist", val_size=5000, seed=0)
    runs = [trickbag_run(data, args.recipe, args.overrides, s) for s in range(args.seeds)]
    base = baseline(data, args.baseline_minutes) if args.baseline_minutes > 0 else None
    accs = [r["final_test_acc"] for r in runs]
    import resource

    print(json.dumps({
        "benchmark": "fashion_mnist",
        "recipe": args.recipe, "overrides": args.overrides,
        "trickbag": {
            "runs": runs,
            "final_test_acc_mean": statistics.mean(accs),
            "final_test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "train_time_s_mean": statistics.mean(r["train_time_s"] for r in runs),
        },
        "baseline": base,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # whole process, data included
        "machine": machine(),
    }, indent=1))


if __name__ == "__main__":
    main()
