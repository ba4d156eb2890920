"""``trickbag ablate``: what each trick is worth, measured over paired seeds.

1. **Plan** (pure): the mode turns the studied tricks into variants, the baseline first:

   * ``cumulative`` — the paper's table: baseline (all studied tricks off), then each row adds
     one more trick (``+t1``, ``+t1+t2``, ...); each row's delta is against the baseline,
     and its ``step`` against the row above (what that row's own trick adds);
   * ``one-at-a-time`` — baseline, then the baseline plus each trick alone;
   * ``leave-one-out`` — all tricks on (the baseline of this mode), then all but each one: a
     negative delta is what dropping that trick costs.

   Variants are made only through ``tricks.with_tricks`` from the user's recipe.
2. **Runs**: one per (variant recipe, seed), in ``OUT/runs/<key>-s<seed>/`` where ``key``
   is ``recipes.config.recipe_key`` of the resolved recipe (seed aside), so identical recipes share runs across modes
   and reruns. A finished run has ``summary.json``; an interrupted one (Ctrl-C, kill -9)
   continues from its checkpoint; a rerun with more seeds or tricks runs only what is
   missing. ``jobs`` worker processes share the cores (``threads = cores // jobs`` each).
3. **Statistics** (``experiments.stats``): per variant the per-seed test accuracies, mean,
   sample std, delta to the baseline, the 95% interval of the mean paired difference
   (Student t) and the paired t-test p-value; how many seeds an unresolved delta would need.

``budget="time"`` gives every variant the baseline's wall-clock training time: a short probe
(the same steps, in one process) measures each variant's time per step against the
baseline's, and the variant trains ``round(epochs * baseline_step / variant_step)`` epochs
(at least 1), so a trick that slows training is charged for it. The probed epochs are
stored in ``OUT/budget.json`` and reused, so a resumed ablation makes the same recipes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trickbag._checks import did_you_mean
from trickbag._json import write_json
from trickbag.experiments.stats import compare_paired, spread
from trickbag.experiments.tricks import TRICKS, with_tricks
from trickbag.recipes.config import Recipe, RecipeError, from_dict, override, recipe_key, to_dict

__all__ = ["MODES", "BUDGETS", "Variant", "plan", "Ablation", "to_markdown", "to_csv", "plot_deltas", "threads_per_job"]

MODES = ("cumulative", "one-at-a-time", "leave-one-out")
BUDGETS = ("epochs", "time")


@dataclass(frozen=True)
class Variant:
    """A row of the ablation: its name and the studied tricks it has on."""

    name: str
    tricks: tuple[str, ...]


def plan(tricks: Sequence[str], mode: str) -> list[Variant]:
    """The variants of ``mode`` over ``tricks`` (in the given order), the baseline first."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}{did_you_mean(mode, MODES)}")
    tricks = list(tricks)
    if not tricks:
        raise ValueError("tricks: name at least one trick (trickbag tricks lists them)")
    for name in tricks:
        TRICKS.get(name)  # unknown names fail here, with a did-you-mean
    if len(set(tricks)) != len(tricks):
        raise ValueError(f"tricks: each trick once, got {tricks}")
    if mode == "cumulative":
        return [Variant("baseline", ())] + [Variant("+" + "+".join(tricks[: i + 1]), tuple(tricks[: i + 1]))
                                            for i in range(len(tricks))]
    if mode == "one-at-a-time":
        return [Variant("baseline", ())] + [Variant(f"+{t}", (t,)) for t in tricks]
    return [Variant("all", tuple(tricks))] + [Variant(f"-{t}", tuple(x for x in tricks if x != t)) for t in tricks]


def threads_per_job(jobs: int) -> int:
    """torch threads for each of ``jobs`` processes sharing this process's cores (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // jobs)


def train_one(recipe_dict: dict, out: str, threads: int, data: Any = None) -> dict:
    """Train one run (in a worker process or in this one) and return what the table needs.
    A run directory holding a checkpoint is continued from it (bit-exact), else started."""
    import torch

    from trickbag.train import Trainer
    from trickbag.train.errors import DivergedError

    torch.set_num_threads(threads)
    recipe = from_dict(recipe_dict)
    trainer = Trainer(recipe, out=out, quiet=True, data=data, tensorboard=False)
    try:
        summary = trainer.fit_or_continue()
    except DivergedError as exc:  # a trick that breaks training: its accuracy is a result too
        summary = getattr(exc, "summary", {}) or {}
    if str(summary.get("stopped", "")).startswith("interrupted"):  # Ctrl-C: the run saved interrupt.pt; stop the ablation
        raise KeyboardInterrupt
    return _result(summary)


def _result(summary: dict) -> dict:
    return {"test_acc": summary.get("test_acc"), "train_time_s": summary.get("train_time_s"),
            "stopped": summary.get("stopped"), "epochs": summary.get("epochs")}


class Ablation:
    """See the module docstring.

    Args:
        recipe: the recipe the variants are made from.
        tricks: trick names (``trickbag tricks``), in table order.
        mode: ``cumulative`` | ``one-at-a-time`` | ``leave-one-out``.
        seeds: the seeds every variant runs (paired across variants).
        out: output directory (runs, tables, plot).
        budget: ``epochs`` (every variant trains the recipe's epochs) or ``time``.
        data: an ``ImageData`` to train on instead of loading ``data.name`` (tests).
    """

    def __init__(self, recipe: Recipe, tricks: Sequence[str], mode: str, seeds: Sequence[int], out: str | Path,
                 budget: str = "epochs", data: Any = None) -> None:
        if budget not in BUDGETS:
            raise ValueError(f"budget must be one of {', '.join(BUDGETS)}; got {budget!r}")
        seeds = [int(s) for s in seeds]
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds: at least one, each once; got {seeds}")
        self.tricks, self.mode, self.seeds, self.budget = list(tricks), mode, seeds, budget
        self.variants = plan(self.tricks, mode)
        self.out = Path(out)
        self.data = data
        self.recipes = [self._variant_recipe(recipe.member(), v) for v in self.variants]  # one net each
        if budget == "time":
            self.recipes = self._time_budgeted(self.recipes)
        self._runs = [(i, seed, self.run_dir(recipe, seed), to_dict(override(recipe, {"train.seed": seed})))
                      for i, recipe in enumerate(self.recipes) for seed in self.seeds]

    def _variant_recipe(self, recipe: Recipe, variant: Variant) -> Recipe:
        """``recipe`` with the variant's tricks; a variant the recipe checks refuse (tricks that
        cannot run together) fails here, naming the variant, before any run trains."""
        try:
            return with_tricks(recipe, self.tricks, variant.tricks)
        except RecipeError as exc:
            raise RecipeError(f"ablation variant {variant.name!r}: {exc}") from None

    # --- runs -----------------------------------------------------------------------------

    def run_dir(self, recipe: Recipe, seed: int) -> Path:
        return self.out / "runs" / f"{recipe_key(recipe)}-s{seed}"

    def runs(self) -> list[tuple[int, int, Path, dict]]:
        """``(variant index, seed, run directory, recipe dict)`` for every run of the table;
        identical recipes map to one directory."""
        return list(self._runs)

    @staticmethod
    def finished(run_dir: Path) -> dict | None:
        """The stored result of a finished run (``train.rundir.finished_summary``), or None."""
        from trickbag.train.rundir import finished_summary

        summary = finished_summary(run_dir)
        return None if summary is None else _result(summary)

    def missing(self) -> list[tuple[Path, dict]]:
        """The runs without a stored result, each once."""
        seen: dict[Path, dict] = {}
        for _, _, run_dir, recipe_dict in self.runs():
            if run_dir not in seen and self.finished(run_dir) is None:
                seen[run_dir] = recipe_dict
        return list(seen.items())

    def run(self, jobs: int = 1, progress: Callable[[str], None] | None = None) -> dict:
        """Train what is missing (``jobs`` processes), then return ``result()``."""
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.out.mkdir(parents=True, exist_ok=True)
        todo = self.missing()
        say = progress or (lambda text: None)
        say(f"{len(todo)} of {len(set(r[2] for r in self.runs()))} runs to train ({jobs} at a time)")
        threads = threads_per_job(jobs)
        if jobs == 1:
            for k, (run_dir, recipe_dict) in enumerate(todo):
                train_one(recipe_dict, str(run_dir), threads, self.data)
                say(f"run {k + 1}/{len(todo)} done: {run_dir.name}")
        else:
            import multiprocessing

            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(train_one, recipe_dict, str(run_dir), threads, self.data) for run_dir, recipe_dict in todo]
                for k, future in enumerate(futures):
                    future.result()
                    say(f"run {k + 1}/{len(todo)} done")
        result = self.result()
        write_json(self.out / "ablation.json", result)
        (self.out / "table.md").write_text(to_markdown(result))
        (self.out / "table.csv").write_text(to_csv(result))
        return result

    # --- statistics ---------------------------------------------------------------------------

    def result(self) -> dict:
        """The ablation's JSON object (issue #11's schema); runs not finished yet are left out
        of their variant's lists, and a variant is compared on the seeds both have."""
        per_variant: list[dict[int, dict]] = [dict() for _ in self.variants]
        for i, seed, run_dir, _ in self.runs():
            done = self.finished(run_dir)
            if done is not None and done["test_acc"] is not None:
                per_variant[i][seed] = done
        base = per_variant[0]
        rows = []
        for i, (variant, recipe, runs) in enumerate(zip(self.variants, self.recipes, per_variant)):
            seeds = [s for s in self.seeds if s in runs]
            accs = [runs[s]["test_acc"] for s in seeds]
            row: dict[str, Any] = {"name": variant.name, "tricks": list(variant.tricks), "seeds": seeds, "test_acc": accs,
                                   "mean": None, "std": None, "delta": None, "ci95": None, "p_value": None,
                                   "resolved": False, "seeds_needed": None,
                                   "train_time_s": [runs[s]["train_time_s"] for s in seeds],
                                   "epochs": recipe.train.epochs}
            if accs:
                summary = spread(accs)
                row.update(mean=summary.mean, std=summary.std)
            row.update(_paired(runs, base, seeds))
            if self.mode == "cumulative" and i > 0:  # what this row's own trick adds to the row above
                row["step"] = _paired(runs, per_variant[i - 1], seeds)
            rows.append(row)
        return {"mode": self.mode, "baseline": self.variants[0].name, "metric": "test_acc", "budget": self.budget,
                "seeds": self.seeds, "tricks": self.tricks, "variants": rows}

    # --- time budget ------------------------------------------------------------------------

    def _time_budgeted(self, recipes: list[Recipe]) -> list[Recipe]:
        path = self.out / "budget.json"
        keys = [recipe_key(r) for r in recipes]
        stored = json.loads(path.read_text()) if path.exists() else {}
        if not all(k in stored for k in keys):
            seconds = [probe_step_time(r, self.data) for r in recipes]
            base_epochs = recipes[0].train.epochs
            for key, s in zip(keys, seconds):
                stored.setdefault(key, {"step_s": s, "epochs": max(1, round(base_epochs * seconds[0] / s))})
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(path, stored)
        return [override(r, {"train.epochs": stored[k]["epochs"]}) for r, k in zip(recipes, keys)]


def _paired(runs: dict[int, dict], reference: dict[int, dict], seeds: Sequence[int]) -> dict:
    """delta, ci95, p_value, resolved, seeds_needed of ``runs`` against ``reference`` on the
    seeds both have (empty when none)."""
    paired = [s for s in seeds if s in reference]
    if not paired:
        return {}
    cmp = compare_paired([runs[s]["test_acc"] for s in paired], [reference[s]["test_acc"] for s in paired])
    return {"delta": cmp.delta, "ci95": list(cmp.ci) if cmp.ci else None, "p_value": cmp.p_value,
            "resolved": cmp.resolved, "seeds_needed": cmp.seeds_needed}


def probe_step_time(recipe: Recipe, data: Any = None, steps: int = 10, warmup: int = 3) -> float:
    """Seconds per optimizer step of ``recipe`` (median of ``steps`` after ``warmup``)."""
    import statistics

    import torch

    from trickbag.recipes.parts import build
    from trickbag.train import Trainer

    parts = build(recipe, data=data)
    trainer = Trainer(parts, out=None, quiet=True, tensorboard=False)
    order = torch.randperm(len(parts.data.train_y), generator=torch.Generator().manual_seed(0))
    bs = parts.batch_size
    times = []
    for k in range(warmup + steps):
        idx = order[(k * bs) % max(1, len(order) - bs):][:bs]
        t0 = time.perf_counter()
        trainer.train_step(parts.data.train_x[idx], parts.data.train_y[idx], index=idx)
        trainer.runtime.synchronize()  # a GPU step is done when the device is, not when it is queued
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --- reports ---------------------------------------------------------------------------------


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def _verdict(cmp: dict) -> str:
    if cmp.get("resolved"):
        return "real gain" if cmp["delta"] > 0 else "real loss"
    if cmp.get("seeds_needed"):
        return f"inside the noise (~{cmp['seeds_needed']} seeds to resolve)"
    return "inside the noise"


def _ci(cmp: dict) -> str:
    return f"[{_pct(cmp['ci95'][0], True)}, {_pct(cmp['ci95'][1], True)}]" if cmp.get("ci95") else "—"


def to_markdown(result: dict) -> str:
    """The table: one row per variant. Cumulative mode (the paper's table: each row adds one
    trick) also says what each row's own trick adds to the row above, paired by seed."""
    cumulative = result["mode"] == "cumulative"
    head = f"| {result['mode']} | seeds | test acc % (mean ± sd) | delta | 95% CI | p | verdict |"
    rule = "|---|---|---|---|---|---|---|"
    if cumulative:
        head += " this trick (vs the row above) | its 95% CI | its verdict |"
        rule += "---|---|---|"
    lines = [head, rule]
    for i, row in enumerate(result["variants"]):
        sd = f" ± {_pct(row['std'])}" if row["std"] is not None else ""
        verdict, ci = ("baseline", "—") if i == 0 else (_verdict(row), _ci(row))
        p = f"{row['p_value']:.3g}" if row["p_value"] is not None else "—"
        line = (f"| {row['name']} | {len(row['seeds'])} | {_pct(row['mean'])}{sd} | "
                f"{_pct(row['delta'], True) if i else '0'} | {ci} | {p} | {verdict} |")
        if cumulative:
            step = row.get("step") or {}
            line += (f" {_pct(step.get('delta'), True)} | {_ci(step)} | {_verdict(step) if step else '—'} |" if i
                     else " — | — | — |")
        lines.append(line)
    return "\n".join(lines) + "\n"


def to_csv(result: dict) -> str:
    """One line per (variant, seed): variant, tricks, seed, test_acc, train_time_s."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["variant", "tricks", "seed", "test_acc", "train_time_s"])
    for row in result["variants"]:
        for seed, acc, secs in zip(row["seeds"], row["test_acc"], row["train_time_s"]):
            writer.writerow([row["name"], "+".join(row["tricks"]), seed, acc, secs])
    return buf.getvalue()


def plot_deltas(result: dict, path: str | os.PathLike) -> str:
    """A PNG of each variant's delta (percentage points) with its 95% interval."""
    from trickbag.report.plots import _pyplot, save_figure

    plt = _pyplot()
    rows = result["variants"][1:]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.5))
    for y, row in enumerate(rows):
        if row["delta"] is None:
            continue
        lo, hi = row["ci95"] if row["ci95"] else (row["delta"], row["delta"])
        color = "tab:green" if row["resolved"] and row["delta"] > 0 else "tab:red" if row["resolved"] else "tab:gray"
        ax.errorbar(100 * row["delta"], y, xerr=[[100 * (row["delta"] - lo)], [100 * (hi - row["delta"])]], fmt="o",
                    color=color, capsize=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [r["name"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"test accuracy vs {result['baseline']} (points, 95% CI, {len(result['seeds'])} seeds)")
    ax.grid(axis="x", alpha=0.3)
    out = save_figure(fig, path, "deltas.png")
    plt.close(fig)
    return out
