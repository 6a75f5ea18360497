"""Evaluate one or two trained models on a split: metrics JSON, figures and a Markdown report.

    python -m training.evaluate runs/model_a runs/model_b --data data/faces --split test --out reports/test

Each argument is a run folder or a model folder (weights/model_a). With two, the report puts them
side by side. Every data set in the pack is reported on its own, as its spec in training/data/
says (training/evaluation/report.py). Written to --out: metrics.json, report.md and PNG figures.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from demo.checkpoint import FLIP_MODES, load_model, read_config
from training.data import spec
from training.data.pack import FacePack
from training.data.records import SPLITS
from training.evaluation.report import evaluate_model, write_report

log = logging.getLogger(__name__)


def resolve_model_folder(path: Path) -> Path:
    if (path / "config.json").is_file():
        return path
    raise SystemExit(f"{path} holds no config.json: pass a run folder or a model folder")


def report_labels(folders: list[Path]) -> list[str]:
    """Each model's name in the report and metrics.json: its own, but where names repeat (runs of one model
    compared), prefixed with its folder's name, or with its place in the list where those repeat too."""
    names = [read_config(folder).name for folder in folders]
    labels = [f"{folder.name}: {name}" if names.count(name) > 1 else name for folder, name in zip(folders, names)]
    return [f"{i + 1}. {label}" if labels.count(label) > 1 else label for i, label in enumerate(labels)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="one or two run or model folders")
    parser.add_argument("--data", type=Path, required=True, help="folder written by training.prepare")
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--out", type=Path, help="report folder (default: MODEL/eval_SPLIT)")
    parser.add_argument("--limit", type=int, help="evaluate only a fixed random N faces of the split")
    parser.add_argument("--flip", choices=["config", *FLIP_MODES], default="config",
                        help="flip averaging: as the model's config says (default), or forced on, off or to the "
                        "gender answer alone")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    folders = [resolve_model_folder(p) for p in args.models]
    out_dir = args.out or folders[0] / f"eval_{args.split}"
    out_dir.mkdir(parents=True, exist_ok=True)
    pack = FacePack(args.data)
    results = []
    for folder, label in zip(folders, report_labels(folders)):
        loaded = load_model(folder, args.device)
        loaded.config.name = label  # (this evaluation's copy of the config only)
        if args.flip != "config":
            loaded.config.flip = args.flip
        metrics, out = evaluate_model(loaded, pack, args.split, args.device, limit=args.limit)
        results.append((metrics, out, loaded))
        log.info("%s: %s", loaded.config.name,
                 json.dumps({d: metrics[d]["overall"] for d in spec.names() if d in metrics}))
    (out_dir / "metrics.json").write_text(json.dumps([m for m, _, _ in results], indent=2) + "\n")
    write_report(results, folders, out_dir, args.split, args.data)
    print(f"report written to {out_dir / 'report.md'}")


if __name__ == "__main__":
    main()
