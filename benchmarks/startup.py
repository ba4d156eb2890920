"""Where a run's time goes besides training: start-up and evaluation (issue #10, item 3: wall
minus training <= 5 s on a GPU).

Two measurements, each in fresh processes (nothing warm from this one):

1. The main job as a user runs it, ``python -m trickbag train --recipe R --json`` (one epoch by
   default): the process's wall clock against the trainer's own ``train_time_s`` and
   ``wall_time_s``, so ``process_wall - train_time`` is everything a user waits for that is not
   training (interpreter, imports, data, build, evaluation, checkpoints).
2. The same start-up taken apart in a child process that stamps each phase: the interpreter
   (parent's launch to the child's first line), ``import torch``, trickbag's training modules,
   the device's first use (the CUDA context), the data set, and ``recipes.build`` (model,
   pipeline, optimizer).
3. What a hand-written loop pays before its first step, the floor under any of it, in a fresh
   child: ``import torch``, the device's first use, and the first ``torch.optim`` optimizer
   (torch wraps ``Optimizer.__init__``'s ``add_param_group`` in ``torch._disable_dynamo``,
   whose first call imports the compiler stack, ``torch._dynamo``).
4. The end-of-run test evaluation (every subset of the test-time views, for the summary's
   ``test_acc_by_tta``): one pass that computes each view once, against one pass per subset.

    python benchmarks/startup.py                       # CPU, fashion-mnist, 1 epoch
    python benchmarks/startup.py --device cuda --repeats 3

Prints one JSON object with the machine and the median of ``--repeats`` runs of each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _machine import machine  # noqa: E402

#: both children's first lines: ``mark(name)`` stamps the seconds since the previous mark, and
#: the interpreter's start-up is measured from the parent's launch time (argv[1])
_STAMPS = r"""
import json, sys, time
t = [time.time()]
marks = {}
def mark(name):
    now = time.time(); marks[name] = now - t[0]; t[0] = now
launched = float(sys.argv[1]); marks["interpreter"] = t[0] - launched
import torch
mark("import_torch")
"""

#: the child of measurement 2: prints {"phase": seconds, ...} as JSON on its last line
_PHASES = _STAMPS + r"""
from trickbag.recipes import build, load
from trickbag.train import Trainer
from trickbag.data import load_dataset
mark("import_trickbag")
device = torch.device(sys.argv[2])
torch.ones(1, device=device).sum().item()
mark("device_first_use")
data = load_dataset("fashion-mnist", val_size=0)
mark("data")
recipe = load(sys.argv[3], overrides=[f"train.device={sys.argv[2]}", "data.val_size=0"])
parts = build(recipe, data)
mark("build")
print(json.dumps(marks))
"""

#: the child of measurement 3: a bare loop's start-up, {"phase": seconds, ...} on its last line
_BARE = _STAMPS + r"""
device = torch.device(sys.argv[2])
torch.ones(1, device=device).sum().item()
mark("device_first_use")
torch.optim.SGD([torch.zeros(2, device=device, requires_grad=True)], lr=0.1)
mark("first_optimizer")
print(json.dumps(marks))
"""


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def user_run(recipe: str, device: str, epochs: int, env: dict) -> dict:
    """``python -m trickbag train`` once: process wall vs the trainer's training time."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "trickbag", "train", "--recipe", recipe, "--out", out, "--overwrite", "--quiet",
               "--json", "--set", f"train.epochs={epochs}", "--set", f"train.device={device}"]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"trickbag train failed ({done.returncode}): {done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    return {"process_wall_s": wall, "trainer_wall_s": summary["wall_time_s"], "train_time_s": summary["train_time_s"],
            "test_acc": summary.get("test_acc")}


def phase_run(recipe: str, device: str, env: dict, child: str = _PHASES) -> dict:
    """The start-up phases, stamped inside a fresh child process (``child``: trickbag's start-up,
    or ``_BARE``, a hand-written loop's)."""
    done = subprocess.run([sys.executable, "-c", child, repr(time.time()), device, recipe], capture_output=True,
                          text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"start-up child failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def final_evaluation(recipe: str, device: str, repeats: int) -> dict:
    """The end-of-run test evaluation: the recipe's test-time views and every subset of them
    (the summary's ``test_acc_by_tta``) in one pass (``Trainer.evaluate_views``, what the
    trainer does) against one ``evaluate`` per subset (each view recomputed per subset),
    interleaved; untrained weights (the cost does not depend on them)."""
    import torch

    from trickbag.data import load_dataset
    from trickbag.data.tta import view_subsets
    from trickbag.recipes import load
    from trickbag.train import Trainer

    r = load(recipe, [f"train.device={device}", "train.checkpoint=false"])
    data = load_dataset("fashion-mnist", val_size=r.data.val_size)
    sets = view_subsets(r.train.tta_flip, r.train.tta_translate)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(r, out=out, quiet=True, data=data, tensorboard=False)
        x, y = data.test_x, data.test_y

        def sync():
            if torch.cuda.is_available() and trainer.device.type == "cuda":
                torch.cuda.synchronize()

        one_pass, per_set = [], []
        for _ in range(repeats + 1):  # the first round warms up
            t0 = time.perf_counter(); trainer.evaluate_views(x, y, None, sets); sync(); one_pass.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); [trainer.evaluate(x, y, flip=f, shift=s) for f, s in sets]; sync()
            per_set.append(time.perf_counter() - t0)
    return {"view_sets": [list(v) for v in sets], "test_images": len(y), "one_pass_s": _median(one_pass[1:]),
            "one_set_at_a_time_s": _median(per_set[1:]), "ratio": round(_median(one_pass[1:]) / _median(per_set[1:]), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--recipe", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=1, help="epochs of the user-level run (>= 1)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each measurement; the medians are printed (>= 1)")
    args = ap.parse_args()
    if args.epochs < 1 or args.repeats < 1:
        ap.error("--epochs and --repeats must be >= 1")
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    bare = [phase_run(args.recipe, args.device, env, _BARE) for _ in range(args.repeats)]
    phases = [phase_run(args.recipe, args.device, env) for _ in range(args.repeats)]
    users = [user_run(args.recipe, args.device, args.epochs, env) for _ in range(args.repeats)]
    user = {k: _median([u[k] for u in users]) for k in ("process_wall_s", "trainer_wall_s", "train_time_s")}
    user["not_training_s"] = _median([u["process_wall_s"] - u["train_time_s"] for u in users])
    user["before_trainer_s"] = _median([u["process_wall_s"] - u["trainer_wall_s"] for u in users])
    user["inside_trainer_not_training_s"] = _median([u["trainer_wall_s"] - u["train_time_s"] for u in users])
    evaluation = final_evaluation(args.recipe, args.device, args.repeats)
    import torch

    print(json.dumps({
        "benchmark": "startup", "machine": machine(), "device": args.device, "recipe": args.recipe,
        "epochs": args.epochs, "repeats": args.repeats, "torch": torch.__version__,
        "startup_phases_s": {k: _median([p[k] for p in phases]) for k in phases[0]},
        "startup_phases_each_run": [{k: round(v, 3) for k, v in p.items()} for p in phases],
        "bare_loop_startup_s": {k: _median([p[k] for p in bare]) for k in bare[0]},
        "user_run": user, "final_evaluation": evaluation,
    }, indent=1))


if __name__ == "__main__":
    main()
