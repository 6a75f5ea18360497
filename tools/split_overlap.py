"""How many faces of a split share a photo or a person with the training faces of that split, and
what that did to a model's test numbers.

    python -m tools.split_overlap data/faces --splits data/faces-hash/splits.csv \
        --models weights/model_a weights/model_b --out reports/split_overlap.json

Reads the face features `training.prepare` cached beside the parts of a prepared folder, links the
faces as the split does (training.data.groups), and counts, per data set, the validation and test
faces of `--splits` (another split of the same images, e.g. the content-hash split packs had before,
made by `prepare --split-by hash`; default: the folder's own) linked to a training face of it. The
folder's own split gives zeros by construction. With `--models`, each is scored on that split's test
faces (`--part`), all of them and those linked to no training face of `--splits`; `--part-of folder`
takes the faces of the folder's own split instead, so models trained on the old split and on the
new compare fairly on the new validation faces none of them trained on:

    python -m tools.split_overlap data/faces --splits data/faces-hash/splits.csv --part val --part-of folder \
        --models weights/model_b runs/model_b
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from training.data.groups import Grouping, close_pairs, components, links
from training.data.prepare import DEFAULT_GROUPING, OK, part_features

KINDS = ("near_copy", "same_person", "either")


def _faces(folder: Path, splits: Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The rows of `splits` of the folder's packed faces and their cached features, row for row."""
    parts = sorted((folder / "parts").glob("part_*.npz"))
    kept = np.concatenate([np.load(p)["status"] == OK for p in parts])
    with splits.open() as f:
        rows = [row for row, k in zip(csv.DictReader(f), kept) if k]
    features = part_features(parts)
    if len(rows) != len(features["crop_thumbs"]):
        raise SystemExit(f"{splits} does not list the images of {folder}")
    return rows, features


def overlap(folder: Path, splits: Path, rule: Grouping = DEFAULT_GROUPING) -> tuple[dict, np.ndarray, np.ndarray]:
    """{kind: {"split dataset": {"faces": n, "linked_to_train": k}}} for each of KINDS; and per kept
    face, whether it is linked to a training face either way, and its split in `splits`."""
    rows, features = _faces(folder, splits)
    adult = np.array([int(r["age_low"]) >= rule.adult_age for r in rows])
    near, same = links(adult, features, rule)
    split = np.array([r["split"] for r in rows])
    dataset = np.array([r["dataset"] for r in rows])
    report: dict[str, dict] = {}
    for kind, pairs in zip(KINDS, (near, same, np.concatenate([near, same]))):
        first = components(len(rows), pairs)
        with_train = np.zeros(len(rows), dtype=bool)
        np.logical_or.at(with_train, first, split == "train")
        report[kind] = {f"{s} {d}": {"faces": int(((split == s) & (dataset == d)).sum()),
                                     "linked_to_train": int(((split == s) & (dataset == d) & with_train[first]).sum())}
                        for s in ("val", "test") for d in sorted(set(dataset))}
    return report, with_train[first], split


def sweep(folder: Path, rule: Grouping = DEFAULT_GROUPING) -> list[str]:
    """How each link would group the folder's faces at thresholds around the chosen ones (why they were chosen)."""
    rows, features = _faces(folder, folder / "splits.csv")
    ages = np.array([int(r["age_low"]) for r in rows])
    photo, crop, desc = features["photo_thumbs"], features["crop_thumbs"], features["descriptors"]
    lines = []

    def grouped(pairs: np.ndarray) -> str:
        sizes = np.bincount(components(len(ages), pairs))
        return f"{len(pairs)} pairs, largest group {sizes.max()}"

    def apart(pairs: np.ndarray) -> np.ndarray:
        return np.linalg.norm(desc[pairs[:, 0]] - desc[pairs[:, 1]], axis=1)

    for name, thumbs in (("photo", photo), ("crop", crop)):
        candidates = close_pairs(thumbs, 0.85, distance=False)
        r = (thumbs[candidates[:, 0]] * thumbs[candidates[:, 1]]).sum(axis=1)
        for t in (0.95, 0.97, 0.98, 0.99):
            mine = candidates[r >= t]
            lines.append(f"{name} thumbnails >= {t}: {grouped(mine)}, {int((apart(mine) > 0.5).sum())} with "
                         f"descriptors over 0.5 apart")
        for t in (0.85, 0.88, 0.9):
            mine = candidates[(r >= t)]
            mine = mine[apart(mine) <= rule.descriptor_agrees]
            child = int((ages[mine].min(axis=1) < rule.adult_age).sum())
            lines.append(f"{name} thumbnails >= {t}, descriptors <= {rule.descriptor_agrees}: {grouped(mine)}, "
                         f"{child} with a child")
    adults = np.flatnonzero(ages >= rule.adult_age)
    for t in (0.25, 0.3, 0.33, 0.35):
        lines.append(f"adults' descriptors <= {t}: {grouped(adults[close_pairs(desc[adults], t, distance=True)])}")
    return lines


def scores(folder: Path, linked: np.ndarray, scored: np.ndarray, models: list[Path]) -> dict[str, dict]:
    """Per model, the metrics of the `scored` faces (a mask over the kept faces), all and those not `linked` to
    training."""
    from torch.utils.data import DataLoader

    from demo.checkpoint import load_model
    from training.data.dataset import FaceDataset
    from training.data.pack import FacePack
    from training.evaluation.metrics import collect_outputs, split_metrics

    pack = FacePack(folder)  # its faces are the kept images, in order
    chosen = np.flatnonzero(scored)
    result = {}
    for path in models:
        loaded = load_model(path)
        c = loaded.config
        faces = FaceDataset(pack, chosen, c.input_size, c.mean, c.std)
        out = collect_outputs(loaded.model, DataLoader(faces, batch_size=256), "cpu", flip=c.flip)
        out.age_logits = c.served_age_logits(out.age_logits)
        result[f"{c.name} ({path})"] = {  # the path too: two runs of one model share its name
            subset: split_metrics(out.subset(mask), c.age_min, c.range_rule, c.gender_temperature,
                                  c.gender_unsure_below)
            for subset, mask in (("all", np.ones(len(chosen), bool)), ("not_linked", ~linked[chosen]))}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a folder prepared by training.prepare (with its split groups)")
    parser.add_argument("--splits", type=Path, help="the splits.csv to count for (default: the folder's own)")
    parser.add_argument("--models", type=Path, nargs="*", default=[], help="model folders trained on that split")
    parser.add_argument("--part", default="test", choices=("val", "test"), help="the faces to score (default: test)")
    parser.add_argument("--part-of", default="splits", choices=("splits", "folder"),
                        help="score the --part of the --splits file (default), or of the folder's own split: e.g. "
                             "the new validation faces, all and those the old split never trained on")
    parser.add_argument("--out", type=Path, help="write the counts (and scores) here as JSON")
    parser.add_argument("--sweep", action="store_true", help="only show how the links group at other thresholds")
    args = parser.parse_args(argv)
    if args.sweep:
        print("\n".join(sweep(args.folder)))
        return
    report, linked, split = overlap(args.folder, args.splits or args.folder / "splits.csv")
    if args.models:
        if args.part_of == "folder":
            split = np.array([row["split"] for row in _faces(args.folder, args.folder / "splits.csv")[0]])
        report["scores"] = scores(args.folder, linked, split == args.part, args.models)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    for kind in KINDS:
        for key, c in report[kind].items():
            share = c["linked_to_train"] / max(1, c["faces"])
            print(f"{kind:12} {key:16} {c['linked_to_train']:5} of {c['faces']:5} ({share:.1%}) linked to training")


if __name__ == "__main__":
    main()
