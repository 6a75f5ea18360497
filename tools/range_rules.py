"""Range rules side by side on the validation faces, each measured cross-fitted (fitted on one half of the
faces, measured on the other, and the other way round), so that what is reported is a measurement.

    python -m tools.range_rules weights/model_a weights/model_b --data data/faces --out reports/val/ranges

For each model (its weights, flip setting and logit adjustment as served) and each rule of RULES: per
data set the coverage, mean width, share of ranges 40 years wide or more, share at a spread rule's
cap (39 years: narrowed to it, so it says as little) and the widest, the bands and
groups outside 70-90 %, and the same numbers for the rule fitted on the faces it is measured on (what
round five reported). Writes OUT/ranges.json and OUT/ranges.md.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from demo.checkpoint import load_model
from demo.heads import AgeRangeRule, SpreadRule, decode_age
from training.data.pack import FacePack
from training.evaluation.metrics import Outputs, fit_age_range
from training.evaluation.ranges import bands_outside, cross_fitted, fit_global_spread, fit_spread_rule, range_table
from training.evaluation.report import served_outputs

Fit = Callable[[Outputs, int], AgeRangeRule]
RULES: dict[str, Fit] = {
    "percentiles by region, fitted to the bands (round five)": lambda out, age_min: fit_age_range(out, age_min),
    "spread, one pair of multiples": fit_global_spread,
    "spread by estimate, faces weighed alike": lambda out, age_min: fit_spread_rule(out, age_min, balance="faces"),
    "spread by estimate, bands weighed alike (shipped)": lambda out, age_min: fit_spread_rule(out, age_min),
    "the same, then multiples moved to the bands (4 sweeps)":
        lambda out, age_min: fit_spread_rule(out, age_min, sweeps=4),
    **{f"the shipped rule, spread to the power {power:g}":
       lambda out, age_min, power=power: fit_spread_rule(out, age_min, power=power) for power in (1.5, 2.0, 2.5)},
}


def summary(table: dict) -> dict:
    return {"sets": {name: rows["all"] for name, rows in table.items()}, "outside_70_90": bands_outside(table),
            "table": table}


def compare(out: Outputs, age_min: int, folds: int = 2) -> dict:
    """Per rule: its cross-fitted measurement and its numbers on the faces it was fitted on."""
    results = {}
    for name, fit in RULES.items():
        low, high = cross_fitted(out, age_min, lambda faces, fit=fit: fit(faces, age_min), folds)
        measured = range_table(out, low, high, age_min)
        est = decode_age(out.age_logits, age_min, fit(out, age_min))
        results[name] = {"cross_fitted": summary(measured),
                         "at_cap": float(((high - low) >= SpreadRule().max_width - 1).float().mean()),
                         "on_fitted_faces": summary(range_table(out, est.low, est.high, age_min))}
    return results


def markdown(results: dict) -> str:
    lines = ["| model | rule | UTKFace coverage / width | FairFace coverage / width | 40+ years wide | "
             "39 years wide (a spread rule's cap) | widest | bands outside 70-90 % (cross-fitted) | "
             "outside, on the faces fitted |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model, rules in results.items():
        for rule, r in rules.items():
            sets = r["cross_fitted"]["sets"]
            cells = [f"{100 * sets[s]['coverage']:.1f} % / {sets[s]['width']:.1f}" if s in sets else "-"
                     for s in ("utkface", "fairface")]
            n = sum(s["n"] for s in sets.values())
            wide = sum(s["wide_share"] * s["n"] for s in sets.values()) / n
            widest = max(s["max_width"] for s in sets.values())
            outside = ", ".join(r["cross_fitted"]["outside_70_90"]) or "none"
            fitted = ", ".join(r["on_fitted_faces"]["outside_70_90"]) or "none"
            lines.append(f"| {model} | {rule} | {cells[0]} | {cells[1]} | {100 * wide:.1f} % | "
                         f"{100 * r['at_cap']:.1f} % | {widest:.0f} | {outside} | {fitted} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=Path, nargs="+", help="model folders")
    parser.add_argument("--data", type=Path, default=Path("data/faces"))
    parser.add_argument("--split", default="val")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    pack = FacePack(args.data)
    results = {}
    for folder in args.models:
        loaded = load_model(folder)
        out = served_outputs(loaded, pack, args.split, "cpu")
        results[str(folder)] = compare(out, loaded.config.age_min, args.folds)
        print(f"{folder}: {len(out.dataset)} faces")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ranges.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "ranges.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
