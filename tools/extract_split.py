"""Copy one split's photos out of the downloads, bytes as they are: what the batch CLI is checked on.

    python -m tools.extract_split --data PATH/UTKFace.tar.gz --data PATH/FairFace-train-15k.tar \
        --labels data/faces/splits.csv --split test --out data/test_photos
    python -m demo.predict data/test_photos --out preds.csv --offline
    python -m tools.score_predictions preds.csv --labels data/faces/splits.csv --split test

A photo is taken when its path in the download ends with the label key of one of the split's rows
in splits.csv (training.prepare's split of record; the key is the file name for UTKFace, the path
for FairFace, as each data set's spec says); it is written under --out at its path in the
download. Archives are read front to back once (gzip has no random access).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from training.data import spec
from training.data.records import SPLITS
from training.data.sources import Source


def extract(sources: list[Path], labels: Path, split: str, out: Path) -> dict[str, int]:
    """Write the photos of `split` found in `sources` under `out`; photos written per source."""
    with labels.open() as f:
        wanted = {spec.get(row["dataset"]).label_key(row["file"]) for row in csv.DictReader(f) if row["split"] == split}
    written: dict[str, int] = {}
    for source in sources:
        with Source(source) as src:
            names = [n for n in src.names if any("/".join(PurePosixPath(n).parts[-k:]) in wanted
                                                 for k in range(1, len(PurePosixPath(n).parts) + 1))]
            for name in tqdm(names, desc=source.name, unit="photo"):
                path = out / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(src.read(name))
            written[str(source)] = len(names)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, action="append", required=True, help="a download, as prepared")
    parser.add_argument("--labels", type=Path, required=True, help="splits.csv written by training.prepare")
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    written = extract(args.data, args.labels, args.split, args.out)
    for source, n in written.items():
        print(f"{source}: {n} {args.split} photos written to {args.out}")


if __name__ == "__main__":
    main()
