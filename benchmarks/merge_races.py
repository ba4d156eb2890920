"""Merge the race JSON files of a GPU call's parallel runs (``race.py --json-out DIR/NAME.json``,
one per seed) into one file, with every run directory's per-epoch metrics, so a run cut short
keeps its epochs: the device tool returns at most eight files from a call.

    python benchmarks/merge_races.py DIR OUT.json --runs "race-w64*"

Prints one line per run: the file, the final test accuracy, the training seconds and any error.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def merge(race_dir: Path, runs_glob: str, runs_root: Path = Path("runs")) -> dict:
    """``{"races": {file stem: its JSON}, "metrics_by_run": {run directory: its metrics.jsonl rows}}``."""
    merged: dict = {"races": {f.stem: json.loads(f.read_text()) for f in sorted(race_dir.glob("*.json"))}, "metrics_by_run": {}}
    for d in sorted(runs_root.glob(runs_glob)):
        metrics = d / "metrics.jsonl"
        if metrics.exists():
            merged["metrics_by_run"][d.name] = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return merged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("race_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--runs", required=True, help="glob of the run directories under runs/ whose metrics to keep")
    args = ap.parse_args()
    merged = merge(args.race_dir, args.runs)
    args.out.write_text(json.dumps(merged))
    for name, race in merged["races"].items():
        contenders = race.get("contenders")
        for c in contenders.values() if isinstance(contenders, dict) else []:
            for r in c.get("runs", []):
                print(name, r.get("final_test_acc"), r.get("train_time_s"), r.get("error", ""))


if __name__ == "__main__":
    main()
