"""Score a `demo.predict` CSV against the labels of the photos, as a user of the batch CLI would.

    python -m demo.predict data/test_photos --out preds.csv
    python -m tools.score_predictions preds.csv --labels data/faces/splits.csv [--split test]

Photos are matched to the labels of splits.csv by the key each data set's spec gives
(`DatasetSpec.label_key`: the file name for UTKFace, whose names carry the labels; the path within
the download for FairFace), found at the end of the predicted path. Of the faces found in a photo,
the one nearest the photo's centre is scored, as `training.prepare` labels it; a photo with no face
counts as missed. Prints, per model and data set: photos, missed, and the metrics of
`training.evaluate` that its kind of age label allows (years: age MAE, CS@5, gender accuracy;
groups: age group exact and within one, gender accuracy).
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from training.data import spec
from training.data.prepare import centre_distance
from training.data.records import SPLITS
from training.data.spec import YEAR


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
            female = np.array([r["gender"] == "female" for _, r in pairs])
            entry["gender_accuracy"] = float((female == np.array([lab["gender"] == "1" for lab, _ in pairs])).mean())
            labels = spec.get(dataset)
            if labels.age_kind == YEAR:
                err = np.abs(age - low)
                entry.update(age_mae=float(err.mean()), age_cs5=float((err <= 5).mean()))
            else:
                off = np.abs(np.array([labels.group_of(a) for a in age]) - np.array([labels.group_of(a) for a in low]))
                entry.update(age_group_exact=float((off == 0).mean()), age_group_within_one=float((off <= 1).mean()))
        report[f"{model}/{dataset}"] = entry
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path, help="CSV written by python -m demo.predict")
    parser.add_argument("--labels", type=Path, required=True, help="splits.csv written by training.prepare")
    parser.add_argument("--split", choices=SPLITS, help="only photos of this split")
    args = parser.parse_args(argv)
    print(json.dumps(score(args.predictions, read_labels(args.labels, args.split)), indent=2))


if __name__ == "__main__":
    main()
