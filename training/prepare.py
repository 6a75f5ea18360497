"""Crop every face of data-set downloads with the app's own detector and alignment, and pack them.

    python -m training.prepare --data PATH/UTKFace.tar.gz --data PATH/FairFace-train-15k.tar \
        --data PATH/FairFace-train-15001-36000.tar.gz --out data/faces

Each --data is an archive or a folder, as downloaded; which data set it is (UTKFace, FairFace, or
any other registered in training/data/), is recognised from its content. Writes splits.csv,
faces.npz and prepare.json to --out (see training/data/prepare.py). Resumable: re-running the
same command only does what is missing.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from training.data.prepare import prepare


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, action="append", required=True,
                        help="a data set's archive or folder, as downloaded; repeat for several")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0: the project's split)")
    parser.add_argument("--device", default="cpu", help="device for MTCNN")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    missing = [str(p) for p in args.data if not p.exists()]
    if missing:
        raise SystemExit(f"--data {', '.join(missing)} does not exist")
    try:
        summary = prepare(args.data, args.out, seed=args.seed, device=args.device)
    except ValueError as error:  # a source no data set recognises, no labelled images, a changed --out
        raise SystemExit(str(error)) from None
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
