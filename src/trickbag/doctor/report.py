"""Read a run's logs for the doctor and write its Markdown report with PNG plots."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trickbag.doctor.rules import Finding, Thresholds

__all__ = ["read_run", "read_outcome", "write_report", "NO_MONITOR_NOTE"]

NO_MONITOR_NOTE = ("this run has no doctor.jsonl (it was trained without train.doctor_every), so only the epoch-level "
                   "rules ran; train with --set train.doctor_every=50 for per-layer monitors")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {number} is not JSON ({exc.msg}); was the file cut off?") from None
    return rows


def read_run(run_dir: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """``(records, epochs, notes)`` of a run directory written by ``trickbag train``:
    ``doctor.jsonl`` (monitors, optional) and ``metrics.jsonl`` (epochs)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"RUN_DIR {run} is not a directory (expected a folder written by trickbag train)")
    doctor, metrics = run / "doctor.jsonl", run / "metrics.jsonl"
    if not doctor.is_file() and not metrics.is_file() and not (run / "summary.json").is_file():
        raise FileNotFoundError(f"RUN_DIR {run} has no doctor.jsonl, metrics.jsonl or summary.json; is it a trickbag run directory?")
    notes = [] if doctor.is_file() else [NO_MONITOR_NOTE]
    records = _read_jsonl(doctor) if doctor.is_file() else []
    epochs = _read_jsonl(metrics) if metrics.is_file() else []
    return records, epochs, notes


def read_outcome(run_dir: str | Path) -> dict[str, Any]:
    """How the run ended: its ``summary.json`` (``stopped``, ``steps``, ...), or ``{}`` when it
    has none yet (still running, or killed)."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON ({exc.msg}); was the file cut off?") from None
    return summary if isinstance(summary, dict) else {}


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_report(findings: Sequence[Finding], records: Sequence[dict[str, Any]], epochs: Sequence[dict[str, Any]],
                 folder: str | Path, title: str = "trickbag doctor", notes: Sequence[str] = (),
                 thresholds: Thresholds | None = None) -> Path:
    """``folder/report.md`` with the findings table and, when there are monitor records,
    ``ratios.png`` (update/weight ratio per layer over steps), ``activations.png`` and
    ``loss.png``. Returns the report's path."""
    from trickbag.report.plots import plot_doctor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    t = thresholds or Thresholds()
    plots = plot_doctor(records, folder, (t.ratio_low, t.ratio_high)) if records else {}
    lines = [f"# {title}", ""]
    lines += [f"> {n}" for n in notes] + ([""] if notes else [])
    if findings:
        lines += ["| severity | finding | layer | value | threshold | evidence | prescription |", "|---|---|---|---|---|---|---|"]
        for f in findings:
            value = "" if f.value is None or not math.isfinite(f.value) else f"{f.value:.3g}"
            threshold = "" if f.threshold is None else f"{f.threshold:.3g}"
            lines.append("| " + " | ".join(_cell(c) for c in (f.severity, f.title, f.layer or "", value, threshold,
                                                               f.evidence, f.prescription)) + " |")
    else:
        lines.append("No findings: every monitor is inside its healthy range.")
    monitored = [r for r in records if "params" in r]
    points = sum(len(r.get("losses", [])) for r in records)
    lines += ["", f"{len(monitored)} monitored steps, {points} loss points, {len(epochs)} epochs.", ""]
    for name, path in plots.items():
        lines += [f"## {name}", "", f"![{name}]({Path(path).name})", ""]
    out = folder / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out
