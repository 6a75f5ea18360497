"""Batch prediction without the UI: one CSV row per (image, face, model).

    python -m demo.predict photos/ more.jpg --out results.csv [--device cpu|cuda] [--models a,b] [--offline]
        [--min-score 0.95]

Folders are searched recursively for images. Faces are numbered by descending detection score.
An image with no face (or none big enough) gets one row with an empty `face` and a `note`;
an unreadable file gets one row with `error` set. Neither stops the run.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from demo.faces import MIN_SCORE
from demo.images import ImageError, load_image
from demo.predictor import ImageResult, Predictor

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
COLUMNS = ["file", "face", "x1", "y1", "x2", "y2", "det_score", "model", "age", "age_low", "age_high",
           "gender", "p_female", "note", "error"]

log = logging.getLogger(__name__)


def iter_paths(inputs: list[Path]) -> Iterator[Path]:
    for path in inputs:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


def rows_for(file: str, result: ImageResult, model_names: dict[str, str]) -> list[dict]:
    rows = []
    for face in result.faces:
        x1, y1, x2, y2 = (round(v, 1) for v in face.face.box)
        base = {"file": file, "face": face.number, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                "det_score": round(face.face.score, 4)}
        if not face.judged:
            rows.append({**base, "note": "face too small to judge"})
            continue
        for key, answer in face.answers.items():
            rows.append({**base, "model": key, "age": _rounded(answer.age, 1), "age_low": answer.age_low,
                         "age_high": answer.age_high, "gender": answer.gender,
                         "p_female": _rounded(answer.p_female, 4)})
    if not result.faces:
        rows.append({"file": file, "note": result.note})
    return rows


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)  # None: a task the model was not trained on


def run(paths: list[Path], out: Path, predictor: Predictor) -> tuple[int, int]:
    """Writes the CSV; returns (images read, files that could not be read)."""
    names = {k: m.config.name for k, m in predictor.models.items()}
    files = list(iter_paths(paths))
    done = failed = 0
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for path in tqdm(files, desc="images", unit="img", file=sys.stderr):
            try:
                image = load_image(path)
            except (ImageError, OSError) as error:
                failed += 1
                log.warning("skipped %s: %s", path, error)
                writer.writerow({"file": str(path), "error": str(error)})
                continue
            writer.writerows(rows_for(str(path), predictor.predict(image), names))
            done += 1
    return done, failed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="images or folders")
    parser.add_argument("--out", type=Path, required=True, help="CSV file to write")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="a,b", help="which models, comma-separated: a, b or a,b")
    parser.add_argument("--offline", action="store_true", help="use weights/ and never contact the Hub")
    parser.add_argument("--min-score", type=float, default=MIN_SCORE,
                        help=f"leave out detections scoring below this (default {MIN_SCORE})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from demo.faces import FaceDetector
    from demo.sources import load_models, offline_from_env, specs_from_env

    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    if not keys or any(k not in ("a", "b") for k in keys):
        parser.error("--models takes a, b or a,b")
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        parser.error("not found: " + ", ".join(map(str, missing)))
    models, _ = load_models(specs_from_env(keys), offline=args.offline or offline_from_env(), device=args.device)
    if not 0.0 <= args.min_score <= 1.0:
        parser.error("--min-score is a detection probability between 0 and 1")
    predictor = Predictor(models, FaceDetector(device=args.device), min_score=args.min_score)
    done, failed = run(args.paths, args.out, predictor)
    print(f"{done} image(s) written to {args.out}" + (f"; {failed} unreadable file(s) skipped" if failed else ""))


if __name__ == "__main__":
    main()
