"""The numbers a retraining round chooses by, one row per model, from training.evaluate's metrics.json files.

    python -m tools.compare_runs reports/val/round6_b/metrics.json reports/val/round6_a/metrics.json

Per model: UTKFace age MAE, MAE at 60+ and gender accuracy; FairFace age group exact, within one and
gender accuracy; FairFace gender from its worst race group to its best (and the gap); the signed age
error of FairFace's 3-9 and 10-19 groups (the estimate less the group's middle: above 0, made older);
the 80 % range's coverage and mean width on each set. Prints a Markdown table; the same models may
appear in several files (each file's rows are printed in turn).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.evaluation.markdown import pct
from training.evaluation.report import signed_cell

HEADER = ["model", "UTKFace MAE", "60+", "gender", "FairFace exact", "within one", "gender",
          "worst race to best (FairFace gender)", "signed error 3-9 / 10-19", "range holds (UTK / FF)",
          "range width"]


def row(metrics: dict) -> list[str]:
    utk, ff = metrics.get("utkface", {}), metrics.get("fairface", {})
    u, f = utk.get("overall", {}), ff.get("overall", {})
    races = {name: g["gender_accuracy"] for name, g in ff.get("by_race", {}).items()}
    worst = min(races, key=races.get) if races else None
    best = max(races, key=races.get) if races else None
    groups = ff.get("by_age_group", {})
    return [
        metrics.get("model", "?"),
        _num(u.get("age_mae"), 2), _num(u.get("age_mae_60_plus"), 2), _pct(u.get("gender_accuracy")),
        _pct(f.get("age_group_exact")), _pct(f.get("age_group_within_one")), _pct(f.get("gender_accuracy")),
        f"{worst} {_pct(races[worst])} to {best} {_pct(races[best])} ({100 * (races[best] - races[worst]):.1f})"
        if races else "",
        f"{signed_cell(groups.get('3-9', {}))} / {signed_cell(groups.get('10-19', {}))}",
        f"{_pct(u.get('age_range_coverage'))} / {_pct(f.get('age_range_coverage'))}",
        f"{_num(u.get('age_range_width'), 1)} / {_num(f.get('age_range_width'), 1)}",
    ]


def _num(value, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _pct(value) -> str:
    return "" if value is None else pct(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", nargs="+", type=Path, help="metrics.json files written by training.evaluate")
    args = parser.parse_args(argv)
    print("| " + " | ".join(HEADER) + " |")
    print("| " + " | ".join("---" for _ in HEADER) + " |")
    for path in args.metrics:
        for metrics in json.loads(path.read_text()):
            print("| " + " | ".join(row(metrics)) + " |")


if __name__ == "__main__":
    main()
