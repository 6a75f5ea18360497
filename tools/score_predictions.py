"""Score a `demo.predict` CSV against the labels of the photos, as a user of the batch CLI would.

    python -m demo.predict data/test_photos --out preds.csv
    python -m tools.score_predictions preds.csv --labels data/faces/splits.csv [--split test]

Photos are matched to the labels of splits.csv by the key each data set's spec gives
(`DatasetSpec.label_key`: the file name for UTKFace, whose names carry the labels; the path within
the download for FairFace), found at the end of the predicted path. Of the faces found in a photo,
the one nearest the photo's centre is scored, as `training.prepare` labels it; a photo with no face
counts as missed. Prints, per model and data set: photos, missed, and the metrics of
`training.evaluate` that its kind of age label allows (years: age MAE, CS@5; groups: age group exact
and within one), gender accuracy on every face (from `p_female`), the share answered "unsure" and the
accuracy on the rest, and how the 80 % ranges hold (overall and per true age band or group).
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from demo.heads import AGE_MAX, AGE_MIN, UNSURE
from training.data import spec
from training.data.prepare import centre_distance
from training.data.records import SPLITS
from training.data.spec import YEAR
from training.evaluation.metrics import AGE_BREAKDOWNS, range_coverage, range_summary


def read_labels(path: Path, split: str | None) -> dict[str, dict]:
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if split is None or r["split"] == split]
    return {spec.get(r["dataset"]).label_key(r["file"]): r for r in rows}


def _key(file: str, labels: dict[str, dict]) -> str | None:
    """The labels key of a predicted file: its name (UTKFace) or its path ending (FairFace)."""
    path = Path(file)
    for n in range(1, len(path.parts) + 1):
        key = "/".join(path.parts[-n:])
        if key in labels:
            return key
    return None


def central_rows(rows: list[dict]) -> dict[str, dict]:
    """model -> the row of the face nearest the photo's centre, as `training.prepare` picks it."""
    with Image.open(rows[0]["file"]) as im:
        size = im.size
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["model"]:
            by_model[r["model"]].append(r)
    return {model: min(rs, key=lambda r: centre_distance(tuple(float(r[k]) for k in ("x1", "y1", "x2", "y2")), size))
            for model, rs in by_model.items()}


def score(predictions: Path, labels: dict[str, dict]) -> dict:
    by_file: dict[str, list[dict]] = defaultdict(list)
    with predictions.open() as f:
        for r in csv.DictReader(f):
            by_file[r["file"]].append(r)
    results: dict = defaultdict(lambda: defaultdict(list))
    models = sorted({r["model"] for rows in by_file.values() for r in rows if r["model"]})
    for file, rows in by_file.items():
        key = _key(file, labels)
        if key is None:
            continue
        label = labels[key]
        found = central_rows(rows) if any(r["model"] for r in rows) else {}
        for model in models:
            results[(model, label["dataset"])]["rows"].append((label, found.get(model)))
    report = {}
    for (model, dataset), parts in sorted(results.items()):
        pairs = [(lab, r) for lab, r in parts["rows"] if r is not None]
        entry = {"photos": len(parts["rows"]), "missed": len(parts["rows"]) - len(pairs)}
        if pairs:
            age = np.array([float(r["age"]) for _, r in pairs])
            low = np.array([int(lab["age_low"]) for lab, _ in pairs])
            # Accuracy on every face from P(female), as before "unsure" existed; and the unsure share, the rest's.
            female = np.array([float(r["p_female"]) >= 0.5 for _, r in pairs])
            right = female == np.array([lab["gender"] == "1" for lab, _ in pairs])
            sure = np.array([r["gender"] != UNSURE for _, r in pairs])
            entry.update(gender_accuracy=float(right.mean()), gender_unsure_share=float(1 - sure.mean()),
                         gender_accuracy_sure=float(right[sure].mean()) if sure.any() else None)
            entry.update(range_scores(pairs))
            labels = spec.get(dataset)
            if labels.age_kind == YEAR:
                err = np.abs(age - low)
                entry.update(age_mae=float(err.mean()), age_cs5=float((err <= 5).mean()))
            else:
                off = labels.groups_apart(age, low)
                entry.update(age_group_exact=float((off == 0).mean()), age_group_within_one=float((off <= 1).mean()))
        report[f"{model}/{dataset}"] = entry
    return report


def range_scores(pairs: list[tuple[dict, dict]]) -> dict:
    """How the 80 % ranges the CLI wrote hold the labels: coverage (a group label by the share of its years
    inside), mean width, the share 40 years wide or more, the widest, how many do not hold their own rounded age,
    and the coverage per true age band or group of the data set."""
    low_label = torch.tensor([int(lab["age_low"]) for lab, _ in pairs])
    high_label = torch.tensor([int(lab["age_high"]) for lab, _ in pairs])
    low = torch.tensor([float(r["age_low"]) for _, r in pairs])
    high = torch.tensor([float(r["age_high"]) for _, r in pairs])
    shown = torch.tensor([round(float(r["age"])) for _, r in pairs])
    covered = range_coverage(low, high, low_label, high_label, AGE_MIN, AGE_MAX - AGE_MIN + 1)
    dataset = spec.get(pairs[0][0]["dataset"])
    bands = next(b for b in dataset.breakdowns if b.key in AGE_BREAKDOWNS)
    groups = bands.groups(low_label.numpy(), np.array([int(lab["race"]) for lab, _ in pairs]))
    return {**range_summary(covered, low, high, shown),
            f"age_range_coverage_{bands.key}": {name: round(float(covered.numpy()[mask].mean()), 4)
                                                 for name, mask in groups.items() if mask.any()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path, help="CSV written by python -m demo.predict")
    parser.add_argument("--labels", type=Path, required=True, help="splits.csv written by training.prepare")
    parser.add_argument("--split", choices=SPLITS, help="only photos of this split")
    args = parser.parse_args(argv)
    print(json.dumps(score(args.predictions, read_labels(args.labels, args.split)), indent=2))


if __name__ == "__main__":
    main()
