"""How good are the LR finder's suggestions? Train each task for a fixed short budget at a
grid of peak lrs (factors of sqrt(10)) and at each rule's suggestion, side by side with
torch-lr-finder's own suggestion (its steepest-gradient pick; a benchmark-only
dependency: ``pip install torch-lr-finder``).

Tasks (Fashion-MNIST; a 12,800-image training subset, batch 128, warmup + cosine to 0,
label smoothing 0.1, flip + translate; accuracy on the 10,000 test images, mean of the
seeds):

- ``cnn_sgd``: the default recipe's small CNN with Nesterov SGD (momentum 0.9, wd 5e-4);
- ``cnn_adamw``: the same model with AdamW (wd 0.05);
- ``resnet_sgd``: ResNet-D 2-2-2 (width 16, BN, zero-gamma) with Nesterov SGD;
- ``lstm_adam``: the row-LSTM (hidden 128, forget bias 1, clip 5) with Adam;
- ``mlp_sgd`` (held out: added after ``fall`` was chosen on the four above): a 4-layer
  ReLU MLP (width 256, He init, no normalization) with Nesterov SGD.

Both finders sweep 1e-7 -> 10 over 100 updates on the same batches of the same freshly
built model (our finder restores it exactly afterwards; torch-lr-finder gets its own copy).
The report gives, per task, the grid, each rule's lr and accuracy, and the gap to the
grid's best; then the mean gap per rule over the tasks.

    python benchmarks/lr_finder.py [--seeds 2] [--steps 200] [--tasks cnn_sgd,lstm_adam]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from _machine import benchmark_data, machine  # noqa: E402

from trickbag.find import parts_batches, parts_range_test  # noqa: E402
from trickbag.losses import soft_target_cross_entropy  # noqa: E402
from trickbag.recipes import build, load  # noqa: E402
from trickbag.train import NonFiniteLossError, Trainer  # noqa: E402

SQRT10 = math.sqrt(10)
TASKS = {
    "cnn_sgd": ("fashion-mnist", ["optim.name=nesterov"], -3),
    "cnn_adamw": ("fashion-mnist", ["optim.name=adamw", "optim.weight_decay=0.05"], -4.5),
    "resnet_sgd": ("fashion-mnist-resnet", ["model.params={layers: [2, 2, 2], width: 16, stem: mnist, stem_pool: true, variant: D}"], -3),
    "lstm_adam": ("fashion-mnist-lstm", ["data.augment=[]", "loss.label_smoothing=0.1"], -4.5),
    # held out: added after the "fall" rule was chosen on the four above
    "mlp_sgd": ("fashion-mnist", ["model.name=plain_mlp", "model.params={depth: 4, width: 256}", "model.init=he_normal",
                                  "optim.name=nesterov", "data.augment=[]"], -3.5),
}
GRID_POINTS = 8  # from 10**low in steps of sqrt(10): 3.5 decades
RULES = ("fall", "valley", "steepest", "minimum", "consensus")


def recipe_for(task: str, lr: float, seed: int, steps: int):
    name, extra, _ = TASKS[task]
    batch = 128
    return load(name, extra + [
        f"optim.lr={lr}", "optim.base_batch_size=0", f"data.batch_size={batch}", f"data.train_subset={steps * batch}",
        "data.val_size=0", "train.epochs=1", f"train.seed={seed}", "train.ema_decay=0", "train.tta_flip=false",
        "train.checkpoint=false", "schedule.name=cosine", "schedule.params={total_steps: 1dur, warmup_steps: 0.1dur}",
    ])


def train_acc(data, task: str, lr: float, seeds: int, steps: int) -> float:
    accs = []
    for seed in range(seeds):
        try:
            summary = Trainer(recipe_for(task, lr, seed, steps), out=tempfile.mkdtemp(prefix="bench-lrf-"), quiet=True, data=data).fit()
            accs.append(summary["test_acc"])
        except NonFiniteLossError:  # diverged: as good as guessing
            accs.append(1.0 / data.num_classes)
    return statistics.mean(accs)


def torch_lr_finder_suggestion(data, task: str, steps: int) -> float | str:
    try:
        from torch_lr_finder import LRFinder
    except ImportError:
        return "not installed (pip install torch-lr-finder)"
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    trainer = build(recipe_for(task, 1e-7, 0, steps), data=data)
    batches = parts_batches(trainer, 100)
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=trainer.batch_size, shuffle=False)
    smoothing = trainer.recipe.loss.label_smoothing
    finder = LRFinder(trainer.model, trainer.optimizer, lambda z, t: soft_target_cross_entropy(z.float(), t, smoothing), device="cpu")
    finder.range_test(loader, start_lr=1e-7, end_lr=10, num_iter=100)  # its defaults: exp steps, smooth 0.05, diverge 5x
    fig, ax = plt.subplots()
    try:
        _, lr = finder.plot(ax=ax, suggest_lr=True)  # prints "LR suggestion: steepest gradient"
    except RuntimeError as exc:  # too few points before divergence
        lr = f"no suggestion: {exc}"
    plt.close(fig)
    return lr


def run_task(data, task: str, seeds: int, steps: int, known: dict[float, float] | None = None) -> dict:
    t0 = time.perf_counter()
    low = TASKS[task][2]
    grid = [10 ** low * SQRT10 ** i for i in range(GRID_POINTS)]
    finder = parts_range_test(build(recipe_for(task, 1e-7, 0, steps), data=data), start_lr=1e-7, end_lr=10, num_iter=100)
    picks: dict[str, float | str] = {rule: finder.suggestion(rule).lr for rule in RULES}
    with contextlib.redirect_stdout(io.StringIO()):  # torch-lr-finder prints its progress and pick
        picks["torch-lr-finder"] = torch_lr_finder_suggestion(data, task, steps)
    cache: dict[float, float] = dict(known or {})

    def acc(lr: float) -> float:
        # the same lr to 3 significant digits (how earlier runs printed their grids) is the same training
        key = next((k for k in cache if abs(k / lr - 1) < 2e-3), None)
        if key is None:
            key = lr
            cache[key] = train_acc(data, task, lr, seeds, steps)
        return cache[key]

    grid_acc = {f"{lr:.3g}": acc(lr) for lr in grid}
    best = max(grid_acc.values())
    rules = {}
    for rule, lr in picks.items():
        if isinstance(lr, str):
            rules[rule] = {"lr": None, "note": lr}
            continue
        a = acc(lr)
        rules[rule] = {"lr": float(f"{lr:.4g}"), "acc": round(a, 4), "gap_to_grid_best_pts": round(100 * (best - a), 2)}
    return {"grid": {k: round(v, 4) for k, v in grid_acc.items()}, "grid_best": round(best, 4),
            "grid_best_lr": max(grid_acc, key=grid_acc.get), "rules": rules, "finder_stopped": finder.stopped,
            "seconds": round(time.perf_counter() - t0, 1)}


def _known_accuracies(path: str, seeds: int, steps: int) -> dict[str, dict[float, float]]:
    """(task -> {lr: accuracy}) measured by an earlier run with the same seeds and budget."""
    old = json.loads(Path(path).read_text())
    if old["seeds"] != seeds or old["steps"] != steps:
        raise SystemExit(f"--reuse {path}: it used {old['seeds']} seeds and {old['steps']} steps; this run {seeds} and {steps}")
    known: dict[str, dict[float, float]] = {}
    for task, r in old["tasks"].items():
        acc = known.setdefault(task, {})
        acc.update({float(f"{float(lr):.4g}"): a for lr, a in r["grid"].items()})
        acc.update({float(f"{v['lr']:.4g}"): v["acc"] for v in r["rules"].values() if v.get("lr") is not None})
    return known


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--reuse", help="an earlier run's JSON output: its measured (task, lr) accuracies are not trained again")
    args = ap.parse_args()
    data = benchmark_data(val_size=0)
    tasks = [t for t in args.tasks.split(",") if t]
    known = _known_accuracies(args.reuse, args.seeds, args.steps) if args.reuse else {}
    results = {}
    for task in tasks:
        results[task] = run_task(data, task, args.seeds, args.steps, known.get(task))
        print(json.dumps({task: results[task]}), file=sys.stderr, flush=True)  # progress
    names = list(RULES) + ["torch-lr-finder"]
    mean_gap = {}
    for name in names:
        gaps = [r["rules"][name].get("gap_to_grid_best_pts") for r in results.values()]
        gaps = [g for g in gaps if g is not None]
        mean_gap[name] = {"mean_gap_pts": round(statistics.mean(gaps), 2) if gaps else None,
                          "worst_gap_pts": max(gaps) if gaps else None, "tasks": len(gaps)}
    print(json.dumps({"benchmark": "lr_finder", "seeds": args.seeds, "steps": args.steps, "data": data.name, "tasks": results,
                      "summary": mean_gap, "machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
