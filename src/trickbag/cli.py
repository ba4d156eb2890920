"""The ``trickbag`` command line: thin commands over the library modules.

Every command that reports takes ``--json`` and then prints exactly one JSON object
on stdout. Bad input ends with ``error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@contextmanager
def _user_errors() -> Iterator[None]:
    """User errors (bad names, parameters, ranges, missing data) raised inside become one clean line."""
    from trickbag.registry import UnknownNameError

    try:
        yield
    except (ValueError, TypeError, UnknownNameError, FileNotFoundError) as exc:
        _fail(str(exc))


def _print_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return str(value)


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
    from trickbag.schedules import SCHEDULES, evaluate

    if name == "join" or name == "scale":
        _fail(f"{name!r} combines other schedules; build it in Python (trickbag.schedules.{name})")
    with _user_errors():
        builder = SCHEDULES.get(name)
        sched = builder(**parse_params(builder, param or [], what=f"schedule {name!r}"))
    values = evaluate(sched, steps)
    path = _plot_schedule(values, plot, repr(sched), log_y) if plot else None
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
    for s in shown:
        table.add_row(str(s), f"{values[s]:.6g}")
    console = _console()
    console.print(repr(sched), soft_wrap=True, highlight=False)
    console.print(table)
    console.print(f"min {min(values):.6g}  max {max(values):.6g}  final {values[-1]:.6g}")
    if path:
        console.print(f"plot written to {path}")


def _plot_schedule(values: list[float], path: str, title: str, log_y: bool) -> str:
    from trickbag.report.plots import plot_schedule

    return plot_schedule(values, path, title=title, log_y=log_y)


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


def _parse_init_spec(spec: str) -> tuple[str, list[str]]:
    """``name`` or ``name:k=v,k=v`` -> (name, ["k=v", ...])."""
    name, _, rest = spec.partition(":")
    return name.strip(), [p for p in rest.split(",") if p.strip()]


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
    import torch

    from trickbag._params import parse_params
    from trickbag.init import INITIALIZERS, apply_init, inspect_init
    from trickbag.init.lsuv import lsuv
    from trickbag.models import MODELS

    specs = init or DEFAULT_INITS
    with _user_errors():
        builder = MODELS.get(model)
    net_params = {"depth": depth, "width": width, "activation": activation}
    # Inputs: standard-normal "standardized data", drawn with a seed distinct from the init's.
    gen = torch.Generator().manual_seed(seed + 1_000_003)
    shape = (batch_size, 784) if model == "plain_mlp" else (batch_size, 1, 28, 28)
    batch = torch.randn(shape, generator=gen)
    results: dict[str, Any] = {}
    for spec in specs:
        name, pairs = _parse_init_spec(spec)
        with _user_errors():
            target = lsuv if name == "lsuv" else INITIALIZERS.get(name)
            skip = ("tensor", "generator", "model", "batch", "seed")
            params = parse_params(target, pairs, skip=skip, what=f"init {name!r}")
            net = builder(**net_params)
            lsuv_report = apply_init(net, name, batch, seed=seed, **params)
        layers = inspect_init(net, batch)
        label = name + (f"({', '.join(pairs)})" if pairs else "")
        results[label] = {"layers": layers, "lsuv": lsuv_report, "verdict": _verdict(layers)}
    path = None
    if plot:
        from trickbag.report.plots import plot_init

        title = f"{model} depth={depth} width={width} {activation}"
        path = plot_init({k: v["layers"] for k, v in results.items()}, plot, title)
    if as_json:
        from dataclasses import asdict

        _print_json(
            {
                "model": model,
                "depth": depth,
                "width": width,
                "activation": activation,
                "inits": {
                    k: {
                        "verdict": v["verdict"],
                        "layers": [asdict(layer) for layer in v["layers"]],
                        "lsuv": [asdict(x) for x in v["lsuv"]] if v["lsuv"] else None,
                    }
                    for k, v in results.items()
                },
                "plot": path,
            }
        )
        return
    _print_init_tables(results, path)


def _verdict(layers) -> str:
    """vanishing / exploding / healthy from the last layer's output std."""
    last = layers[-1].act_std
    if last < 1e-3:
        return f"vanishing: output std {last:.2g} at layer {len(layers)}"
    if last > 1e3:
        return f"exploding: output std {last:.2g} at layer {len(layers)}"
    return f"healthy: output std {last:.3g} at layer {len(layers)}"


def _print_init_tables(results: dict[str, Any], path: str | None) -> None:
    from rich.table import Table

    console = _console()
    for label, res in results.items():
        table = Table(title=f"{label}: {res['verdict']}", title_justify="left")
        for col in ("layer", "name", "shape", "w mean", "w std", "out mean", "out std"):
            table.add_column(col, justify="right")
        if res["lsuv"]:
            table.add_column("lsuv iters", justify="right")
        for i, layer in enumerate(res["layers"]):
            row = [
                str(i + 1),
                layer.name,
                "x".join(map(str, layer.shape)),
                f"{layer.weight_mean:+.2e}",
                f"{layer.weight_std:.3e}",
                f"{layer.act_mean:+.2e}",
                f"{layer.act_std:.3e}",
            ]
            if res["lsuv"]:
                row.append(str(res["lsuv"][i].iterations))
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


@app.command("train")
def train_cmd(
    recipe: Annotated[str, typer.Option(help="Recipe name (see `trickbag recipes`) or a YAML file.")] = "fashion-mnist",
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a recipe key: a.b=value; repeat.")] = None,
    out: Annotated[str | None, typer.Option(help="Run directory (default runs/<data>-<model>-<time>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its newest checkpoint (bit-exact).")] = False,
    data_dir: Annotated[str | None, typer.Option(help="Folder holding the data set's files (looked at first).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a recipe; writes config.yaml, metrics.jsonl, checkpoints/, TensorBoard events and summary.json."""
    from pathlib import Path

    from trickbag.recipes import load
    from trickbag.train import NonFiniteLossError, Trainer

    overrides = list(set_ or [])
    if data_dir:
        overrides.append(f"data.data_dir={data_dir}")
    if resume:
        if not out:
            _fail("--resume needs --out RUN_DIR (the run to continue)")
        saved = Path(out) / "config.yaml"
        if not saved.is_file():
            _fail(f"--resume: {saved} does not exist; nothing to resume")
        recipe = str(saved)
    with _user_errors():  # DataUnavailableError is a FileNotFoundError, DataFormatError a ValueError
        trainer = Trainer(load(recipe, overrides), out=out, quiet=quiet or as_json)
    try:
        summary = trainer.fit(resume=resume)
    except NonFiniteLossError as exc:
        _fail(str(exc))
    if as_json:
        _print_json(summary)
        return
    acc = summary.get("test_acc")
    line = f"{summary['stopped']}: {summary['epochs']} epochs, {summary['train_time_s']:.0f}s training, {summary['images_per_s']:.0f} img/s"
    if acc is not None:
        line += f", test accuracy {acc:.4f}"
    typer.echo(line)
    typer.echo(f"run written to {summary['out']}")


def _probe_trainer(recipe: str, overrides: list[str] | None, purpose: str):
    """A ``Trainer`` for a recipe's model, optimizer and data, not for training (its run
    directory is a temporary folder)."""
    import tempfile

    from trickbag.recipes import load
    from trickbag.train import Trainer

    with _user_errors():
        return Trainer(load(recipe, list(overrides or [])), out=tempfile.mkdtemp(prefix=f"trickbag-{purpose}-"), quiet=True)


@app.command("find-lr")
def find_lr_cmd(
    recipe: Annotated[str, typer.Option(help="Recipe name or YAML file: its model, optimizer, data and loss.")] = "fashion-mnist",
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a recipe key: a.b=value; repeat.")] = None,
    rule: Annotated[str, typer.Option(help="fall (default: closest to the best lr in benchmarks/lr_finder.py), valley, steepest, minimum or consensus.")] = "fall",
    start_lr: Annotated[float, typer.Option(help="Sweep start.")] = 1e-7,
    end_lr: Annotated[float, typer.Option(help="Sweep end.")] = 10.0,
    num_iter: Annotated[int, typer.Option(help="Optimizer updates in the sweep.", min=3)] = 100,
    plot: Annotated[str | None, typer.Option(help="Write loss vs lr with the suggestions marked (PNG).")] = None,
    apply: Annotated[str | None, typer.Option(help="Write the recipe with optim.lr set to the suggestion to this YAML file.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """LR range test on a recipe's model and data; prints every rule's suggestion with its reason."""
    from dataclasses import asdict

    import yaml

    from trickbag.find import trainer_range_test
    from trickbag.find.rules import RULES
    from trickbag.recipes import to_dict

    if rule not in RULES:
        _fail(f"--rule must be one of {', '.join(RULES)}, got {rule!r}")
    trainer = _probe_trainer(recipe, set_, "find")
    r = trainer.recipe
    with _user_errors():
        result = trainer_range_test(trainer, start_lr=start_lr, end_lr=end_lr, num_iter=num_iter)
        suggestions = result.suggestions()
    chosen = suggestions["minimum" if rule == "minimum/10" else rule]
    path = result.plot(plot) if plot else None
    if apply:
        config = to_dict(r)
        config["optim"]["lr"] = float(chosen.lr)
        config["optim"]["base_batch_size"] = 0
        with open(apply, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
    if as_json:
        _print_json({"recipe": recipe, "rule": rule, "lr": chosen.lr, "suggestions": {k: asdict(v) for k, v in suggestions.items()},
                     "stopped": result.stopped, "lrs": result.lrs, "losses": result.losses, "plot": path, "applied": apply})
        return
    from rich.table import Table

    table = Table("rule", "lr", "reason")
    for name, s in suggestions.items():
        table.add_row(("* " if name == chosen.rule else "  ") + name, f"{s.lr:.3g}", s.reason)
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
    from dataclasses import asdict

    from trickbag.check import gradient_check, overfit_batch

    trainer = _probe_trainer(recipe, set_, "check")
    x = trainer.prepare(trainer.data.train_x[:batch], train=False).contiguous()
    y = trainer.data.train_y[:batch].to(trainer.device)
    grads = gradient_check(trainer.model, x, y)
    overfit = overfit_batch(trainer.model, x, y, steps=steps)
    ok = all(layer.passed for layer in grads) and overfit.passed
    if as_json:
        _print_json({"recipe": recipe, "passed": ok, "gradient_check": [asdict(layer) for layer in grads],
                     "overfit": {k: v for k, v in asdict(overfit).items() if k != "losses"}})
        return
    from rich.table import Table

    table = Table("parameter", "entries", "max relative error", "ok")
    for layer in grads:
        table.add_row(layer.name, str(layer.checked), f"{layer.max_rel_error:.2e}", "yes" if layer.passed else "NO")
    console = _console()
    console.print(table)
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
    from pathlib import Path

    from trickbag.doctor import SEVERITIES, diagnose, probe, read_run, write_report
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
            folder = Path(run_dir)
        else:
            result = probe(load(recipe, list(set_ or [])), steps=steps, every=every, quiet=as_json)
            records, epochs, folder = result.records, result.epochs, result.out
            notes.append(f"probe of {recipe}: {result.summary['steps']} steps ({result.summary['stopped']}), run in {folder}")
    findings = diagnose(records, epochs)
    path = write_report(findings, records, epochs, Path(report) if report else folder / "doctor", notes=notes)
    failed = fail_on is not None and any(SEVERITIES.index(f.severity) >= SEVERITIES.index(fail_on) for f in findings)
    if as_json:
        _print_json({"run": str(folder), "findings": [f.to_dict() for f in findings], "notes": notes, "report": str(path),
                     "monitored_steps": sum(1 for r in records if "params" in r), "epochs": len(epochs)})
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
