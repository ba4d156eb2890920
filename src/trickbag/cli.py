"""The ``trickbag`` command line: thin commands over the library modules.

Every command that reports takes ``--json`` and then prints exactly one strict JSON
object on stdout (non-finite numbers as ``null``). Bad input ends with ``error: ...`` on
stderr and exit status 2; a run that fails (diverged, disk full) exits 1; Ctrl-C 130.
Each command parses, calls one library function and prints: the logic lives in the
modules.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from trickbag import __version__

app = typer.Typer(
    name="trickbag",
    help="The tricks of training neural networks as tested, composable parts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamOpt = Annotated[list[str] | None, typer.Option("--param", "-p", help="key=value parameter; repeat for several.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _user_errors(training_errors: bool = True) -> Iterator[None]:
    """User errors (bad names, parameters, ranges, YAML, missing data, refused run
    directories) raised inside become one clean line; ``training_errors=False`` lets a
    run's ``TrainingError`` through to a caller that reports its summary."""
    from trickbag.registry import UnknownNameError
    from trickbag.train.errors import TrainingError

    try:
        yield
    except TrainingError as exc:
        if not training_errors:
            raise
        _fail(str(exc), exc.exit_code)
    except (ValueError, TypeError, UnknownNameError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        _fail(str(exc))


def _print_json(obj: dict[str, Any]) -> None:
    from trickbag._json import dumps

    sys.stdout.write(dumps(obj) + "\n")


def _load_recipe(recipe: str, overrides: list[str] | None, data_dir: str | None = None):
    """A recipe name or file with ``--set`` overrides (and ``--data-dir``), or one error line."""
    from trickbag.recipes import load, override

    with _user_errors():
        loaded = load(recipe, list(overrides or []))
        return override(loaded, {"data.data_dir": data_dir}) if data_dir else loaded


def _build_parts(recipe, out: str | None = None):
    """``recipes.build`` of a loaded recipe (``_load_recipe``); a recipe-named distillation
    teacher is kept beside ``out``."""
    from trickbag.recipes import build

    with _user_errors():
        return build(recipe, teacher_cache=Path(out).parent if out else None)


def _console():
    from rich.console import Console

    # Piped output (CI logs, files) gets wide tables instead of rich's 80-column default.
    return Console(width=None if sys.stdout.isatty() else 160)


@app.callback()
def _main() -> None:
    """trickbag: exact LR schedules, initializers, a fast trainer, and tools to find and
    diagnose hyperparameters."""


@app.command()
def version() -> None:
    """Print the trickbag version."""
    typer.echo(__version__)


@app.command("schedule")
def schedule_cmd(
    name: Annotated[str, typer.Argument(help="Schedule name, e.g. cosine, exponential_decay (see `trickbag schedules`).")],
    param: ParamOpt = None,
    steps: Annotated[int, typer.Option(help="Number of steps to evaluate (0 .. steps-1).", min=1)] = 100,
    every: Annotated[int, typer.Option(help="Print every k-th step (default: about 20 rows).", min=0)] = 0,
    plot: Annotated[str | None, typer.Option(help="Write a PNG plot of lr vs step here.")] = None,
    log_y: Annotated[bool, typer.Option("--log-y", help="Logarithmic lr axis in the plot.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Print (and plot) the values of any schedule over STEPS steps."""
    from trickbag._params import parse_params
    from trickbag.report.plots import plot_path, plot_schedule
    from trickbag.schedules import SCHEDULES, evaluate

    if name == "join" or name == "scale":
        _fail(f"{name!r} combines other schedules; build it in Python (trickbag.schedules.{name})")
    with _user_errors():
        plot = plot_path(plot, f"{name}.png") if plot else None
        builder = SCHEDULES.get(name)
        sched = builder(**parse_params(builder, param or [], what=f"schedule {name!r}"))
    try:
        values = evaluate(sched, steps)
    except OverflowError:
        _fail(f"schedule {name!r} overflows the float range within {steps} steps ({sched!r}); use smaller parameters "
              "(e.g. a decay_rate nearer 1) or fewer --steps")
    path = plot_schedule(values, plot, title=repr(sched), log_y=log_y) if plot else None
    if as_json:
        _print_json(
            {
                "schedule": name,
                "config": sched.get_config(),
                "steps": steps,
                "values": values,
                "min": min(values),
                "max": max(values),
                "final": values[-1],
                "plot": path,
            }
        )
        return
    from rich.table import Table

    stride = every or max(1, steps // 20)
    shown = sorted(set(range(0, steps, stride)) | {steps - 1})
    table = Table()
    table.add_column("step", justify="right")
    table.add_column("lr", justify="right")
    for step in shown:
        table.add_row(str(step), f"{values[step]:.6g}")
    console = _console()
    console.print(repr(sched), soft_wrap=True, highlight=False)
    console.print(table)
    console.print(f"min {min(values):.6g}  max {max(values):.6g}  final {values[-1]:.6g}")
    if path:
        console.print(f"plot written to {path}")


@app.command("schedules")
def schedules_cmd(as_json: JsonOpt = False) -> None:
    """List the schedule names with their parameters."""
    import inspect

    from trickbag.schedules import SCHEDULES

    rows = {}
    for name in SCHEDULES.names():
        builder = SCHEDULES.get(name)
        doc = (inspect.getdoc(builder) or "").splitlines()[0]
        rows[name] = {"parameters": list(inspect.signature(builder).parameters), "summary": doc}
    if as_json:
        _print_json({"schedules": rows})
        return
    from rich.table import Table

    table = Table("name", "parameters", "summary")
    for name, row in rows.items():
        table.add_row(name, ", ".join(row["parameters"]), row["summary"])
    _console().print(table)


DEFAULT_INITS = ["random_normal:stddev=0.01", "glorot_normal", "he_normal", "lsuv"]


@app.command("inspect-init")
def inspect_init_cmd(
    init: Annotated[
        list[str] | None,
        typer.Option(
            "--init",
            "-i",
            help="Initializer, optionally with parameters: NAME or NAME:k=v,k=v (e.g. random_normal:stddev=0.01); "
            "'lsuv' runs LSUV. Repeat to compare. Default: random_normal(0.01), glorot_normal, he_normal, lsuv.",
        ),
    ] = None,
    model: Annotated[str, typer.Option(help="Model name: plain_mlp or plain_cnn.")] = "plain_mlp",
    depth: Annotated[int, typer.Option(help="Number of weighted layers.", min=1)] = 20,
    width: Annotated[int, typer.Option(help="Units (mlp) or channels (cnn) per layer.", min=1)] = 256,
    activation: Annotated[str, typer.Option(help="relu, tanh, gelu, selu or linear.")] = "relu",
    batch_size: Annotated[int, typer.Option(help="Inputs in the probe batch.", min=2)] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the init and of the batch.")] = 0,
    plot: Annotated[str | None, typer.Option(help="Write a PNG (signal through depth, weight histograms) here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Per-layer weight statistics and the signal through depth of a model under one or more inits."""
    from trickbag.init import compare_inits
    from trickbag.models import MODELS
    from trickbag.report.plots import plot_init, plot_path

    with _user_errors():
        plot = plot_path(plot, "init.png") if plot else None
        builder = MODELS.get(model)
        net_params = {"depth": depth, "width": width, "activation": activation}
        builder(**net_params)  # bad parameters fail here, before any init runs
        reports = compare_inits(lambda: builder(**net_params), init or DEFAULT_INITS, seed=seed, batch_size=batch_size)
    path = plot_init({report.label: report.layers for report in reports}, plot, f"{model} depth={depth} width={width} {activation}") if plot else None
    if as_json:
        _print_json({"model": model, "depth": depth, "width": width, "activation": activation,
                     "inits": {report.label: report.to_dict() for report in reports}, "plot": path})
        return
    _print_init_tables(reports, path)


def _print_init_tables(reports, path: str | None) -> None:
    from rich.table import Table

    console = _console()
    for report in reports:
        table = Table(title=f"{report.label}: {report.verdict}", title_justify="left")
        for col in ("layer", "name", "shape", "w mean", "w std", "out mean", "out std"):
            table.add_column(col, justify="right")
        if report.lsuv:
            table.add_column("lsuv iters", justify="right")
        for i, layer in enumerate(report.layers):
            row = [
                str(i + 1),
                layer.name,
                "x".join(map(str, layer.shape)),
                f"{layer.weight_mean:+.2e}",
                f"{layer.weight_std:.3e}",
                f"{layer.act_mean:+.2e}",
                f"{layer.act_std:.3e}",
            ]
            if report.lsuv:
                row.append(str(report.lsuv[i].iterations))
            table.add_row(*row)
        console.print(table)
    if path:
        console.print(f"plot written to {path}")


@app.command("recipes")
def recipes_cmd(as_json: JsonOpt = False) -> None:
    """List the shipped recipes, one line each."""
    from trickbag.recipes import available

    names = available()
    if as_json:
        _print_json({"recipes": names})
        return
    from rich.table import Table

    table = Table("recipe", "description")
    for name, text in names.items():
        table.add_row(name, text)
    _console().print(table)


@app.command("tricks")
def tricks_cmd(as_json: JsonOpt = False) -> None:
    """List the tricks an ablation can toggle: what each changes and what it needs."""
    from trickbag.experiments.tricks import TRICKS

    rows = [{"name": name, "changes": TRICKS.get(name).summary, "needs": TRICKS.get(name).needs or "any recipe"}
            for name in TRICKS.names()]
    if as_json:
        _print_json({"tricks": rows})
        return
    from rich.table import Table

    table = Table("trick", "what it changes", "needs")
    for row in rows:
        table.add_row(row["name"], row["changes"], row["needs"])
    _console().print(table)


@app.command("ablate")
def ablate_cmd(
    tricks: Annotated[str, typer.Option(help="Comma-separated tricks to toggle, in table order (see `trickbag tricks`).")],
    recipe: Annotated[str, typer.Option(help="Recipe name or YAML file the variants are made from.")] = "fashion-mnist",
    seeds: Annotated[int, typer.Option(help="Seeds per variant (0..N-1), the same for every variant (paired).")] = 3,
    mode: Annotated[str, typer.Option(help="cumulative (the paper's table) | one-at-a-time | leave-one-out.")] = "cumulative",
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a recipe key for every variant: a.b=value; repeat.")] = None,
    jobs: Annotated[int, typer.Option(help="Runs in parallel (worker processes sharing the cores).")] = 1,
    budget: Annotated[str, typer.Option(help="epochs: the recipe's epochs for all; time: every variant the baseline's training time.")] = "epochs",
    out: Annotated[str, typer.Option(help="Output directory: runs, table.md, table.csv, deltas.png, ablation.json. Rerun to resume.")] = "runs/ablate",
    as_json: JsonOpt = False,
) -> None:
    """What is each trick worth? Every variant on the same seeds; mean ± sd, the paired delta's 95% CI and p."""
    from trickbag.experiments.ablate import Ablation, plot_deltas, to_markdown
    from trickbag.recipes import load

    if seeds < 1:
        _fail(f"--seeds must be >= 1, got {seeds}")
    if jobs < 1:
        _fail(f"--jobs must be >= 1, got {jobs}")
    with _user_errors():
        base = load(recipe, list(set_ or []))
        ablation = Ablation(base, [t.strip() for t in tricks.split(",") if t.strip()], mode, list(range(seeds)), out, budget)
    say = (lambda text: None) if as_json else (lambda text: typer.echo(text, err=True))
    try:
        with _user_errors():
            result = ablation.run(jobs, progress=say)
    except KeyboardInterrupt:
        _fail(f"interrupted: finished runs are kept; rerun the same command to continue ({out})", 130)
    plot = plot_deltas(result, Path(out) / "deltas.png") if len(result["variants"]) > 1 else None
    if as_json:
        _print_json(result)
        return
    typer.echo(to_markdown(result))
    typer.echo(f"written to {out}: table.md, table.csv, ablation.json{', ' + Path(plot).name if plot else ''}")


@app.command("tune")
def tune_cmd(
    recipe: Annotated[str, typer.Option(help="Recipe name or YAML file; its search: section is the space.")] = "fashion-mnist",
    trials: Annotated[int, typer.Option(help="Finished trials (complete or pruned) the study should hold.")] = 20,
    timeout: Annotated[float | None, typer.Option(help="Seconds after which no new trial starts (a running one finishes).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes (they share the cores).")] = 1,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL (postgresql://user@host/db) or journal file; default OUT/study.journal.")] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default: the recipe's name).")] = None,
    sampler: Annotated[str, typer.Option(help="tpe | random | cmaes.")] = "tpe",
    pruner: Annotated[str, typer.Option(help="median | hyperband | none (fed each epoch's validation accuracy).")] = "median",
    space: Annotated[str | None, typer.Option(help="YAML file with the search space (recipe key: {log_uniform|uniform|int|choice: ...}), instead of the recipe's.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a recipe key for every trial: a.b=value; repeat.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampler (trials train with the recipe's train.seed).")] = 0,
    final: Annotated[bool, typer.Option(help="Train the best trial's recipe once more and test it.")] = True,
    out: Annotated[str | None, typer.Option(help="Output directory (default runs/tune-<study>). Rerun the same command to continue.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a recipe's hyperparameters with Optuna; writes the best as a recipe `trickbag train` runs."""
    from trickbag.experiments.tune import TuneConfig, TuneError, format_params, tune
    from trickbag.recipes import load, override, to_dict
    from trickbag.recipes.search import read_space

    with _user_errors():
        base = load(recipe, list(set_ or []))
        if space:
            base = override(base, {"search": read_space(space)})
        name = study or Path(recipe).stem
        config = TuneConfig(to_dict(base), trials, out or f"runs/tune-{name}", name, storage, timeout, workers, sampler, pruner,
                            seed, final=final, extra={"recipe_name": recipe}).validate()
    say = (lambda text: None) if as_json else (lambda text: typer.echo(text, err=True))
    try:
        with _user_errors():
            result = tune(config, progress=say, bar=not as_json and sys.stderr.isatty())
    except TuneError as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail(f"interrupted: finished trials are kept, the running ones saved checkpoints; rerun the same command to continue ({config.out})", 130)
    if as_json:
        _print_json(result)
        return
    best = result["best"]
    if best is None:
        typer.echo(f"no trial completed ({result['trials']})")
        return
    typer.echo(f"best: validation accuracy {best['value']:.4f} (trial {best['trial']}): {format_params(best['params'])}")
    if result["test_acc"] is not None:
        typer.echo(f"the best recipe trained once more: test accuracy {result['test_acc']:.4f} ({result['final_run']})")
    typer.echo(f"trials: {result['trials']}; recipe written to {result['recipe']} (trickbag train --recipe {result['recipe']})")
    if result["plots"]:
        typer.echo(f"plots: {', '.join(result['plots'].values())}")


@app.command("ensemble")
def ensemble_cmd(
    members: Annotated[list[str], typer.Argument(help="Run directories (their final weights) or checkpoint files.")],
    tta: Annotated[str, typer.Option(help="recipe: each member's own test-time views; flip: mirror on for all; none: off for all.")] = "recipe",
    device: Annotated[str | None, typer.Option(help="Evaluate on this device (default: each recipe's).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Test accuracy of the average of several nets' predicted probabilities, beside each member's."""
    from trickbag.train.ensemble import ensemble_accuracy

    choices = {"recipe": None, "flip": True, "none": False}
    if tta not in choices:
        _fail(f"--tta must be one of {', '.join(choices)}; got {tta!r}")
    with _user_errors():
        result = ensemble_accuracy(members, choices[tta], device=device)
    if as_json:
        _print_json(result)
        return
    for m in result["members"]:
        typer.echo(f"member {m['test_acc']:.4f}  {m['source']}")
    typer.echo(f"ensemble of {result['n']}: test accuracy {result['ensemble_test_acc']:.4f} "
               f"(members: mean {result['member_test_acc_mean']:.4f}, best {result['member_test_acc_best']:.4f})")


@app.command("train")
def train_cmd(
    recipe: Annotated[str, typer.Option(help="Recipe name (see `trickbag recipes`) or a YAML file.")] = "fashion-mnist",
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a recipe key: a.b=value; repeat.")] = None,
    out: Annotated[str | None, typer.Option(help="Run directory (default runs/<data>-<model>-<time>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its newest checkpoint (bit-exact).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace the run already in --out (without it, that is refused).")] = False,
    data_dir: Annotated[str | None, typer.Option(help="Folder holding the data set's files (the only place looked at when given).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a recipe; writes config.yaml, metrics.jsonl, checkpoints/, TensorBoard events and summary.json."""
    from trickbag.train import Trainer, TrainingError
    from trickbag.train.rundir import default_run_dir

    if resume:
        if not out:
            _fail("--resume needs --out RUN_DIR (the run to continue)")
        if overwrite:
            _fail("--resume continues the run in --out and --overwrite replaces it: give one of them")
        saved = Path(out) / "config.yaml"
        if not saved.is_file():
            _fail(f"--resume: {saved} does not exist; nothing to resume")
        recipe = str(saved)
    loaded = _load_recipe(recipe, set_, data_dir)
    out = out or str(default_run_dir(loaded))
    trainer = None
    try:
        if loaded.train.members > 1:  # an ensemble: the members one after another, then their mean prediction
            from trickbag.train.ensemble import fit_members

            with _user_errors(training_errors=False):  # a member's recipe or data error: one line, as for one net
                summary = fit_members(loaded, out, resume=resume, overwrite=overwrite, quiet=quiet or as_json)
        else:
            trainer = Trainer(_build_parts(loaded, out), out=out, quiet=quiet or as_json)
            summary = trainer.fit(resume=resume, overwrite=overwrite)
    except TrainingError as exc:
        if as_json and exc.summary is not None:
            _print_json(exc.summary)
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail(f"interrupted twice: stopped at once; continue from the newest checkpoint with --resume --out {out}", 130)
    if trainer is not None and not trainer.is_main:  # under torchrun rank 0 reports for the job
        return
    if as_json:
        _print_json(summary)
    else:
        acc = summary.get("test_acc")
        line = f"{summary['stopped']}: {summary['epochs']} epochs, {summary['train_time_s']:.0f}s training, {summary['images_per_s']:.0f} img/s"
        if summary.get("pruned_samples"):  # train.prune_easy: fewer steps than the epochs' whole data
            line += f" ({summary['steps']} steps, {summary['pruned_samples']} samples pruned)"
        if acc is not None:
            line += f", test accuracy {acc:.4f}"
            without = [f"{what} {value:.4f}" for what, value in (("without test-time views", summary.get("test_acc_by_tta", {}).get("none")),
                                                                  ("without EMA", summary.get("test_acc_no_ema"))) if value is not None]
            line += f" ({', '.join(without)})" if without else ""
            if summary.get("members"):  # train.members > 1: the figure is the ensemble's
                accs = ", ".join(f"{m['test_acc']:.4f}" for m in summary["members"])
                line += f"; the ensemble of {len(summary['members'])} members ({accs} alone)"
        typer.echo(line)
        typer.echo(f"run written to {summary['out']}")
    if summary["stopped"].startswith("interrupted"):
        raise typer.Exit(130)


@app.command("find-lr")
def find_lr_cmd(
    recipe: Annotated[str, typer.Option(help="Recipe name or YAML file: its model, optimizer, data and loss.")] = "fashion-mnist",
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a recipe key: a.b=value; repeat.")] = None,
    rule: Annotated[str, typer.Option(help="fall (default: closest to the best lr in benchmarks/lr_finder.py), valley, steepest, minimum (/10) or consensus.")] = "fall",
    start_lr: Annotated[float, typer.Option(help="Sweep start.")] = 1e-7,
    end_lr: Annotated[float, typer.Option(help="Sweep end.")] = 10.0,
    num_iter: Annotated[int, typer.Option(help="Optimizer updates in the sweep.", min=3)] = 100,
    plot: Annotated[str | None, typer.Option(help="Write loss vs lr with the suggestions marked (.png/.pdf/.svg, or a folder).")] = None,
    apply: Annotated[str | None, typer.Option(help="Write the recipe with optim.lr set to the suggestion to this YAML file.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """LR range test on a recipe's model and data; prints every rule's suggestion with its reason."""
    from dataclasses import asdict

    from trickbag.find import RULES, parts_range_test
    from trickbag.recipes import override, save
    from trickbag.report.plots import plot_path

    if rule not in RULES:
        _fail(f"--rule must be one of {', '.join(RULES)}, got {rule!r}")
    with _user_errors():  # every argument is checked before the sweep runs
        plot = plot_path(plot, "lr_finder.png") if plot else None
        if apply and not Path(apply).resolve().parent.is_dir():
            raise ValueError(f"--apply {apply}: folder {Path(apply).resolve().parent} does not exist")
    parts = _build_parts(_load_recipe(recipe, set_))
    with _user_errors():
        result = parts_range_test(parts, start_lr=start_lr, end_lr=end_lr, num_iter=num_iter)
        suggestions = result.suggestions()
        chosen = result.suggestion(rule)
        path = result.plot(plot) if plot else None
        if apply:
            save(override(parts.recipe, {"optim.lr": float(chosen.lr), "optim.base_batch_size": 0}), apply)
    if as_json:
        _print_json({"recipe": recipe, "rule": rule, "lr": chosen.lr, "suggestions": {k: asdict(v) for k, v in suggestions.items()},
                     "stopped": result.stopped, "lrs": result.lrs, "losses": result.losses, "plot": path, "applied": apply})
        return
    from rich.table import Table

    table = Table("rule", "lr", "reason")
    for name, suggestion in suggestions.items():
        table.add_row(("* " if name == chosen.rule else "  ") + name, f"{suggestion.lr:.3g}", suggestion.reason)
    console = _console()
    console.print(table)
    console.print(f"{len(result.lrs)} updates; {result.stopped}")
    if path:
        console.print(f"plot written to {path}")
    if apply:
        console.print(f"recipe with optim.lr={chosen.lr:.3g} written to {apply}")


@app.command("check")
def check_cmd(
    recipe: Annotated[str, typer.Option(help="Recipe name or YAML file: its model and data.")] = "fashion-mnist",
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a recipe key: a.b=value; repeat.")] = None,
    batch: Annotated[int, typer.Option(help="Examples in the checked batch.", min=2)] = 16,
    steps: Annotated[int, typer.Option(help="Overfit-one-batch steps.", min=1)] = 300,
    as_json: JsonOpt = False,
) -> None:
    """Gradient check (float64, finite differences) and overfit-one-batch on a recipe's model."""
    from trickbag.check import check_parts

    parts = _build_parts(_load_recipe(recipe, set_))
    with _user_errors():
        result = check_parts(parts, batch=batch, steps=steps)
    if as_json:
        _print_json({"recipe": recipe, **result.to_dict()})
        return
    from rich.table import Table

    table = Table("parameter", "entries", "max relative error", "ok")
    for layer in result.gradients:
        table.add_row(layer.name, str(layer.checked), f"{layer.max_rel_error:.2e}", "yes" if layer.passed else "NO")
    console = _console()
    console.print(table)
    overfit = result.overfit
    verdict = "passed" if overfit.passed else "FAILED"
    console.print(f"overfit one batch of {batch}: {verdict} — loss {overfit.initial_loss:.3f} -> {overfit.final_loss:.3f} "
                  f"in {overfit.steps} steps, batch accuracy {overfit.accuracy:.2f}")
    for tip in overfit.advice:
        console.print(f"  - {tip}")


@app.command("doctor")
def doctor_cmd(
    run_dir: Annotated[str | None, typer.Argument(help="A run directory written by trickbag train (reads doctor.jsonl, metrics.jsonl).")] = None,
    recipe: Annotated[str | None, typer.Option(help="Instead of RUN_DIR: probe this recipe with a short monitored run.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a recipe key for the probe: a.b=value; repeat.")] = None,
    steps: Annotated[int, typer.Option(help="Optimizer steps of the probe.", min=1)] = 300,
    every: Annotated[int, typer.Option(help="Monitor every N steps in the probe.", min=1)] = 10,
    report: Annotated[str | None, typer.Option(help="Folder for report.md and the PNG plots (default <run>/doctor).")] = None,
    fail_on: Annotated[str | None, typer.Option(help="Exit with status 1 when a finding is at least this severe: warning or error.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Diagnose training: findings (severity, evidence, prescription) from a run's logs or a short probe."""
    from trickbag.doctor import SEVERITIES, diagnose, probe, read_outcome, read_run, write_report
    from trickbag.recipes import load

    if (run_dir is None) == (recipe is None):
        _fail("give either RUN_DIR (a trained run) or --recipe R (a short probe run), not both" if run_dir else
              "give RUN_DIR (a run written by trickbag train) or --recipe R to probe a recipe")
    if fail_on is not None and fail_on not in ("warning", "error"):
        _fail(f"--fail-on must be warning or error, got {fail_on!r}")
    notes: list[str] = []
    with _user_errors():
        if run_dir is not None:
            records, epochs, notes = read_run(run_dir)
            outcome = read_outcome(run_dir)
            folder = Path(run_dir)
        else:
            result = probe(load(recipe, list(set_ or [])), steps=steps, every=every, quiet=as_json)
            records, epochs, folder, outcome = result.records, result.epochs, result.out, result.summary
            notes.append(f"probe of {recipe}: {result.summary['steps']} steps ({result.summary['stopped']}), run in {folder}")
    findings = diagnose(records, epochs, outcome=outcome)
    path = write_report(findings, records, epochs, Path(report) if report else folder / "doctor", notes=notes)
    failed = fail_on is not None and any(SEVERITIES.index(f.severity) >= SEVERITIES.index(fail_on) for f in findings)
    if as_json:
        _print_json({"run": str(folder), "findings": [f.to_dict() for f in findings], "notes": notes, "report": str(path),
                     "monitored_steps": sum(1 for record in records if "params" in record), "epochs": len(epochs)})
    else:
        from rich.table import Table

        console = _console()
        for note in notes:
            console.print(f"note: {note}")
        if findings:
            table = Table("severity", "finding", "layer", "evidence", "prescription")
            style = {"error": "bold red", "warning": "yellow", "info": "dim"}
            for f in findings:
                table.add_row(f"[{style[f.severity]}]{f.severity}[/]", f.title, f.layer or "-", f.evidence, f.prescription)
            console.print(table)
        else:
            console.print("no findings: every monitor is inside its healthy range")
        console.print(f"report written to {path}")
    if failed:
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
