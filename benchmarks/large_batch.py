"""Large batches on Fashion-MNIST (Goyal et al. 2017, "Accurate, Large Minibatch SGD"): the
``fashion-mnist-large-batch`` recipe at batch 256, 2048 and 4096, and at the large batches
without its gradual warmup and without the linear scaling rule, over paired seeds.

    python benchmarks/large_batch.py --seeds 3 --json-out benchmarks/large_batch_results.json

Every run trains the same number of epochs (so a large batch takes fewer, larger steps) and is
tested once at the end; each variant is compared with batch 256 seed by seed (paired t
interval, ``trickbag.experiments.stats``). Prints one JSON object with the machine. Runs are
kept in ``--out`` by recipe and seed: a killed benchmark rerun trains only what is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine  # noqa: E402

from trickbag._json import dumps, write_json  # noqa: E402
from trickbag.experiments.stats import compare_paired, spread  # noqa: E402
from trickbag.recipes import load, override  # noqa: E402
from trickbag.recipes.config import recipe_key  # noqa: E402

RECIPE = "fashion-mnist-large-batch"


def variants(batches: list[int], whole_bn: bool, ablations: bool = True) -> list[tuple[str, dict]]:
    """(name, recipe changes): the recipe at each batch (micro-batches of 256, so BatchNorm
    always sees 256 images), and at each large batch without warmup and without the linear
    scaling rule (the lr stays the recipe's lr per 256 examples); ``whole_bn``: also the largest
    batch in one piece (BatchNorm over all of it, its running statistics updated once a step)."""
    out = []
    for b in batches:
        step = {"data.batch_size": b, "train.accumulate": max(1, b // 256)}
        out.append((f"b{b}", step))
        if b > 256 and ablations:
            out.append((f"b{b} no warmup", {**step, "schedule.params.warmup_steps": 0}))
            out.append((f"b{b} no scaling", {**step, "optim.base_batch_size": 0}))
    if whole_bn:
        out.append((f"b{batches[-1]} one piece", {"data.batch_size": batches[-1], "train.accumulate": 1}))
    return out


def run(recipe, out: Path) -> dict:
    from trickbag.train import Trainer
    from trickbag.train.rundir import finished_summary

    done = finished_summary(out)
    if done is None:
        done = Trainer(recipe, out=out, quiet=True, tensorboard=False).fit_or_continue()
    return {"test_acc": done["test_acc"], "train_time_s": done["train_time_s"], "steps": done["steps"],
            "lr_peak": recipe.optim.lr * (recipe.data.batch_size / recipe.optim.base_batch_size if recipe.optim.base_batch_size else 1)}


def markdown(results: dict) -> str:
    """The RESULTS.md table of a finished (or partial) result."""
    rows = ["| variant | steps | peak lr | test acc % (mean ± sd) | per seed | vs batch 256 [95% CI] | train s (mean) |",
            "|---|---|---|---|---|---|---|"]
    for name, entry in results["variants"].items():
        runs = [entry["runs"][s] for s in sorted(entry["runs"])]
        accs = [100 * r["test_acc"] for r in runs]
        sd = f" ± {100 * entry['std']:.2f}" if entry.get("std") is not None else ""
        delta = "—"
        if entry.get("delta_vs_smallest") is not None:
            ci = entry.get("ci95")
            delta = f"{100 * entry['delta_vs_smallest']:+.2f}" + (f" [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else "")
        rows.append(f"| {name} | {runs[0]['steps']} | {runs[0]['lr_peak']:.3g} | {100 * entry['mean']:.2f}{sd} | "
                    f"{', '.join(f'{a:.2f}' for a in accs)} | {delta} | {entry['train_time_s_mean']:.0f} |")
    return "\n".join(rows)


def summarize(results: dict, smallest: str) -> None:
    """Mean, sd, mean time and the paired comparison with ``smallest`` for every variant (in place)."""
    reference = results["variants"][smallest]["runs"]
    for name, entry in results["variants"].items():
        seeds = sorted(entry["runs"])
        accs = [entry["runs"][s]["test_acc"] for s in seeds]
        entry["mean"], entry["std"] = spread(accs).mean, spread(accs).std if len(accs) > 1 else None
        entry["train_time_s_mean"] = sum(entry["runs"][s]["train_time_s"] for s in seeds) / len(seeds)
        if name != smallest:
            paired = [s for s in seeds if s in reference]
            cmp = compare_paired([entry["runs"][s]["test_acc"] for s in paired], [reference[s]["test_acc"] for s in paired]) \
                if len(paired) > 1 else None
            entry["delta_vs_smallest"] = cmp.delta if cmp else accs[0] - reference[seeds[0]]["test_acc"]
            entry["ci95"] = list(cmp.ci) if cmp and cmp.ci else None
            entry["p_value"] = cmp.p_value if cmp else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batches", default="256,2048,4096")
    ap.add_argument("--whole-bn", action="store_true", help="also the largest batch without micro-batches")
    ap.add_argument("--recipe-only", action="store_true", help="only the recipe at each batch (no runs without warmup or scaling)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override for every run")
    ap.add_argument("--out", default="runs/large_batch")
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--from-json", default=None, help="print the markdown table of a saved result instead of running")
    args = ap.parse_args()
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        summarize(saved, next(iter(saved["variants"])))
        print(markdown(saved))
        return
    import torch

    base = load(RECIPE, args.overrides)
    batches = [int(b) for b in args.batches.split(",")]
    table = variants(batches, args.whole_bn, not args.recipe_only)
    results: dict = {"recipe": RECIPE, "overrides": args.overrides, "seeds": list(range(args.seeds)), "variants": {}}
    started = time.time()
    for seed in range(args.seeds):  # seeds outermost: a cut-short benchmark still has whole seeds to compare
        for name, changes in table:
            recipe = override(base, {**changes, "train.seed": seed})
            r = run(recipe, Path(args.out) / f"{recipe_key(recipe)}-s{seed}")
            entry = results["variants"].setdefault(name, {"changes": changes, "runs": {}})
            entry["runs"][str(seed)] = r
            print(f"{name} seed {seed}: test {r['test_acc']:.4f} ({r['steps']} steps, peak lr {r['lr_peak']:.3g}, "
                  f"{r['train_time_s']:.0f} s)", file=sys.stderr, flush=True)
            if args.json_out:
                write_json(args.json_out, results)
    summarize(results, f"b{batches[0]}")
    results["machine"] = machine()
    results["precision"] = "auto"
    results["torch_threads"] = torch.get_num_threads()
    results["wall_s"] = time.time() - started
    if args.json_out:
        write_json(args.json_out, results)
    print(dumps(results))


if __name__ == "__main__":
    main()
