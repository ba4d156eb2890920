"""PNG plots with matplotlib's non-interactive Agg backend (imported lazily)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["plot_schedule", "plot_init", "plot_doctor", "plot_path", "save_figure", "PLOT_FORMATS"]

#: file endings matplotlib writes without extra packages
PLOT_FORMATS = (".png", ".pdf", ".svg")


def plot_path(path: str | os.PathLike, default_name: str) -> str:
    """Where a ``--plot PATH`` goes: into ``PATH/default_name`` when PATH is a folder (an
    existing one, or written with a trailing slash), else PATH itself, which must end in
    .png, .pdf or .svg. Checked before any work is done, so a typo costs nothing."""
    text = os.fspath(path)
    if os.path.isdir(text) or text.endswith(("/", os.sep)):
        return os.path.join(text, default_name)
    ext = os.path.splitext(text)[1].lower()
    if ext not in PLOT_FORMATS:
        raise ValueError(f"--plot {text}: the file must end in {', '.join(PLOT_FORMATS)} (or name a folder), got {ext or 'no ending'!r}")
    return text


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, default_name: str = "plot.png") -> str:
    """Save ``fig`` to ``plot_path(path, default_name)`` (folders created); returns the path."""
    path = plot_path(path, default_name)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_schedule(values: Sequence[float], path: str | os.PathLike, title: str = "", log_y: bool = False) -> str:
    """Draw ``lr`` against the step; returns the path written."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(range(len(values)), values, lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    if log_y:
        ax.set_yscale("log", nonpositive="mask")  # lr = 0 (e.g. warmup start) is left out
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    path = save_figure(fig, path, "schedule.png")
    plt.close(fig)
    return path


def plot_init(reports: Mapping[str, Any], path: str | os.PathLike, title: str = "") -> str:
    """Activation std through depth for each init (log scale), and weight histograms of
    the first, middle and last layer under each init.

    ``reports`` maps an init label to its list of ``LayerStats``.
    """
    plt = _pyplot()
    n = len(reports)
    fig = plt.figure(figsize=(11, 3.2 + 2.2 * n))
    grid = fig.add_gridspec(1 + n, 3)
    ax = fig.add_subplot(grid[0, :])
    for label, layers in reports.items():
        ax.plot(range(1, len(layers) + 1), [max(l.act_std, 1e-30) for l in layers], marker="o", ms=3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("layer (forward order)")
    ax.set_ylabel("std of layer output")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize=8)
    ax.set_title(title or "signal through depth", fontsize=9)
    for row, (label, layers) in enumerate(reports.items(), start=1):
        picks = sorted({0, len(layers) // 2, len(layers) - 1})
        for col, i in enumerate(picks):
            layer = layers[i]
            h = fig.add_subplot(grid[row, col])
            edges = layer.hist_edges
            h.stairs(layer.hist_counts, edges, fill=True, alpha=0.7)
            h.set_title(f"{label}: layer {i + 1} ({layer.name}) std={layer.weight_std:.3g}", fontsize=8)
            h.tick_params(labelsize=7)
    path = save_figure(fig, path, "init.png")
    plt.close(fig)
    return path


def _step_series(records: Sequence[Mapping[str, Any]], section: str, names: Sequence[str], key: str) -> dict[str, list]:
    """``{name: [(step, value), ...]}`` of ``record[section][name][key]`` where it is a positive number."""
    out = {}
    for name in names:
        pts = [(r["step"], r[section][name][key]) for r in records if name in r.get(section, {})
               and isinstance(r[section][name].get(key), (int, float)) and r[section][name][key] > 0]
        if pts:
            out[name] = pts
    return out


def _plot_log_series(series: Mapping[str, list], ylabel: str, path: str, lines: Sequence[float] = (),
                     band: tuple[float, float, str] | None = None) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, pts in series.items():
        ax.plot(*zip(*pts), lw=1, label=name)
    if band:
        ax.axhspan(band[0], band[1], color="green", alpha=0.08, label=band[2])
    for y in lines:
        ax.axhline(y, color="red", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    path = save_figure(fig, path)
    plt.close(fig)
    return path


def plot_doctor(records: Sequence[Mapping[str, Any]], folder: str | os.PathLike,
                ratio_limits: tuple[float, float] = (1e-4, 0.1)) -> dict[str, str]:
    """The doctor's plots in ``folder``: update/weight ratio per weight tensor over steps
    (log scale; seed 001's typical band 1e-4..1e-2 shaded, the doctor's flag limits
    ``ratio_limits`` dashed), activation std per layer over steps, and the step loss.
    Returns ``{title: path}``."""
    monitored = [r for r in records if "params" in r]
    out: dict[str, str] = {}
    weights = list(dict.fromkeys(n for r in monitored for n, p in r["params"].items() if p.get("ndim", 0) >= 2))
    ratios = _step_series(monitored, "params", weights, "ratio")
    if ratios:
        out["update/weight ratio per layer"] = _plot_log_series(
            ratios, "||update|| / ||weight||", os.path.join(folder, "ratios.png"), ratio_limits, (1e-4, 1e-2, "seed 001's typical band"))
    acts = _step_series(monitored, "acts", list(dict.fromkeys(n for r in monitored for n in r.get("acts", {}))), "std")
    if acts:
        out["activation std per layer"] = _plot_log_series(acts, "activation std", os.path.join(folder, "activations.png"))
    losses = [x for r in records for x in r.get("losses", [])]
    if losses:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.plot(range(len(losses)), losses, lw=0.8)
        ax.set_xlabel("loss point (optimizer step)")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        out["training loss"] = save_figure(fig, os.path.join(folder, "loss.png"))
        plt.close(fig)
    return out
