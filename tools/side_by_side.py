"""Several models' answers on the same faces, as the app serves them: what the tools that compare models share.

`tools.paired_difference` and `tools.ensemble` take the same arguments (two or more model folders, a pack, a split,
CPU threads) and read each model's served outputs on that split's faces the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from demo.checkpoint import LoadedModel, load_model
from training.data.pack import FacePack
from training.evaluation.metrics import Outputs
from training.evaluation.report import served_outputs


def parse_models(argv: list[str] | None, description: str, models_help: str, too_few: str) -> argparse.Namespace:
    """`models` (two or more folders; `too_few` is the error under two), `--data`, `--split`, `--threads`; the
    torch threads set."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help=models_help)
    parser.add_argument("--data", type=Path, required=True, help="folder written by training.prepare")
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        parser.error(too_few)
    torch.set_num_threads(args.threads)
    return args


def served_on_split(folders: list[Path], data: Path, split: str) -> list[tuple[LoadedModel, Outputs]]:
    """Each model loaded on the CPU with its raw outputs on `split`'s faces of the pack at `data`, as the app reads
    them (its flip, its logit adjustment)."""
    pack = FacePack(data)
    loaded = [load_model(folder, "cpu", engine="torch") for folder in folders]
    return [(model, served_outputs(model, pack, split, "cpu")) for model in loaded]
