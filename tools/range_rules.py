"""Range rules side by side on the validation faces, each measured cross-fitted (fitted on one half of the
faces, measured on the other, and the other way round), so that what is reported is a measurement.

    python -m tools.range_rules weights/model_a weights/model_b --data data/faces --out reports/val/ranges

For each model (its weights, flip setting and logit adjustment as served) and each rule of RULES: per
data set the coverage, mean width, share of ranges 40 years wide or more, share at a spread rule's
cap (39 years: narrowed to it, so it says as little) and the widest, the bands and
groups outside 70-90 %, and the same numbers for the rule fitted on the faces it is measured on (what
round five reported), and the coverage per region of the estimate (the least held region in the table).
Writes OUT/ranges.json and OUT/ranges.md.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch

from demo.checkpoint import load_model
from demo.heads import AgeRangeRule, SpreadRule, decode_age, point_estimate
from training.data.pack import FacePack
from training.evaluation.metrics import Outputs, fit_age_range, range_coverage
from training.evaluation.ranges import (
    SPREAD_KNOTS,
    bands_outside,
    cross_fitted,
    fit_global_spread,
    fit_spread_rule,
    range_table,
)
from training.evaluation.report import served_outputs

# Each fit takes the faces, the age head's first year and the model's age shown (its mean or median).
Fit = Callable[[Outputs, int, str], AgeRangeRule]
RULES: dict[str, Fit] = {
    "percentiles by region, fitted to the bands (round five; around the mean)":
        lambda out, age_min, estimate: fit_age_range(out, age_min),
    "spread, one pair of multiples": lambda out, age_min, estimate: fit_global_spread(out, age_min, estimate=estimate),
    "spread by estimate, faces weighed alike":
        lambda out, age_min, estimate: fit_spread_rule(out, age_min, balance="faces", estimate=estimate),
    "spread by estimate, bands weighed alike (round six)":
        lambda out, age_min, estimate: fit_spread_rule(out, age_min, estimate=estimate),
    "the same, then multiples moved to the bands (4 sweeps)":
        lambda out, age_min, estimate: fit_spread_rule(out, age_min, sweeps=4, estimate=estimate),
    **{f"spread by estimate, spread to the power {power:g}":
       lambda out, age_min, estimate, power=power: fit_spread_rule(out, age_min, power=power, estimate=estimate)
       for power in (1.5, 2.0, 2.5)},
    "belt: multiples by true age, bands weighed alike, the estimate's 8 knots":
        lambda out, age_min, estimate: fit_spread_rule(out, age_min, knots=SPREAD_KNOTS, multiples_at="age",
                                                       estimate=estimate),
    "belt, knots added at 13 and 18 (9 knots; shipped)":
        lambda out, age_min, estimate: fit_spread_rule(out, age_min, multiples_at="age", estimate=estimate),
    "belt, 9 knots, faces weighed alike":
        lambda out, age_min, estimate: fit_spread_rule(out, age_min, multiples_at="age", balance="faces",
                                                       estimate=estimate),
    **{f"belt, 9 knots, spread to the power {power:g}":
       lambda out, age_min, estimate, power=power: fit_spread_rule(out, age_min, multiples_at="age", power=power,
                                                                   estimate=estimate)
       for power in (0.5, 1.5, 2.0)},
}


# Regions of the estimate (years, from each start to the next) over which coverage is also reported: a rule
# fitted by true age (a belt) serves every true age band, and may serve some estimates less.
ESTIMATE_REGIONS = (0.0, 3.0, 8.0, 15.0, 25.0, 40.0, 55.0, 65.0, 75.0)


def by_estimate(out: Outputs, low: torch.Tensor, high: torch.Tensor, age_min: int, estimate: str) -> dict:
    """Coverage and mean width of ranges [low, high] per ESTIMATE_REGIONS region of the age shown, both data sets
    together: {"lo-hi": {"n", "coverage", "width"}} (the last region open: "75+")."""
    shown = point_estimate(torch.softmax(out.age_logits.float(), dim=-1), age_min, estimate)
    covered = range_coverage(low, high, out.age_low, out.age_high, age_min, out.age_logits.shape[-1])
    table = {}
    for start, end in zip(ESTIMATE_REGIONS, (*ESTIMATE_REGIONS[1:], float("inf"))):
        mine = (shown >= start) & (shown < end)
        if mine.any():
            name = f"{start:g}-{end:g}" if end < float("inf") else f"{start:g}+"
            table[name] = {"n": int(mine.sum()), "coverage": float(covered[mine].float().mean()),
                           "width": float((high - low)[mine].float().mean())}
    return table


def summary(table: dict) -> dict:
    return {"sets": {name: rows["all"] for name, rows in table.items()}, "outside_70_90": bands_outside(table),
            "table": table}


def compare(out: Outputs, age_min: int, estimate: str, folds: int = 2) -> dict:
    """Per rule: its cross-fitted measurement and its numbers on the faces it was fitted on, around the
    model's `estimate` (the age it shows)."""
    results = {}
    for name, fit in RULES.items():
        low, high = cross_fitted(out, age_min, lambda faces, fit=fit: fit(faces, age_min, estimate), folds)
        measured = range_table(out, low, high, age_min)
        est = decode_age(out.age_logits, age_min, fit(out, age_min, estimate))
        results[name] = {"cross_fitted": summary(measured),
                         "by_estimate": by_estimate(out, low, high, age_min, estimate),
                         "at_cap": float(((high - low) >= SpreadRule().max_width - 1).float().mean()),
                         "on_fitted_faces": summary(range_table(out, est.low, est.high, age_min))}
    return results


def markdown(results: dict) -> str:
    lines = ["| model | rule | UTKFace coverage / width | FairFace coverage / width | 40+ years wide | "
             "39 years wide (a spread rule's cap) | widest | bands outside 70-90 % (cross-fitted) | "
             "outside, on the faces fitted | least held estimates (cross-fitted) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
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
            region, least = min(r["by_estimate"].items(), key=lambda item: item[1]["coverage"])
            lines.append(f"| {model} | {rule} | {cells[0]} | {cells[1]} | {100 * wide:.1f} % | "
                         f"{100 * r['at_cap']:.1f} % | {widest:.0f} | {outside} | {fitted} | "
                         f"{region}: {100 * least['coverage']:.0f} % |")
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
        results[str(folder)] = compare(out, loaded.config.age_min, loaded.config.age_estimate, args.folds)
        print(f"{folder}: {len(out.dataset)} faces")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ranges.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "ranges.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
