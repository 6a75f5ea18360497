"""Turn the UTKFace download into the packed face crops the models train on.

    python -m training.prepare --data PATH/UTKFace.tar.gz --out data/utkface

Writes to --out:
  splits.csv   every kept image with its labels, content hash and split (the split of record)
  faces.npz    WebP-encoded 128 px crops + labels, loaded by training.dataset.FacePack
  prepare.json counts: files, malformed names, duplicates, unreadable images, no-face fallbacks
Work is done in parts of PART_SIZE images under parts/; an interrupted run picks up where it
stopped, so re-running the same command only does what is missing.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from demo.faces import CROP_MARGIN, CROP_SIZE, FaceDetector, align_crop
from training.utkface import SPLITS, Record, scan

log = logging.getLogger(__name__)

PART_SIZE = 512
WEBP_QUALITY = 80
# UTKFace chips are cropped tight: a face touching the border throws MTCNN's landmarks off
# (their spread across chips is 4x larger). A black border of a quarter of the side fixes that.
CHIP_PAD = 0.25
PACK_NAME = "faces.npz"


def crop_chip(detector: FaceDetector, images: list[Image.Image]) -> list[tuple[Image.Image, bool]]:
    """Crop each chip the way the app crops a photo; (crop, detected) per image.

    Fallback when MTCNN finds no face: the chip itself, resized. The chips are already aligned
    by UTKFace's authors to the framing of LANDMARK_TEMPLATE, so this is the same framing.
    """
    padded = [ImageOps.expand(im, round(CHIP_PAD * max(im.size)), fill=(0, 0, 0)) for im in images]
    results = []
    for image, pad_image, faces in zip(images, padded, detector.detect_batch(padded)):
        if faces:
            results.append((align_crop(pad_image, faces[0], CROP_SIZE, CROP_MARGIN), True))
        else:
            results.append((image.resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BILINEAR), False))
    return results


def encode_webp(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=WEBP_QUALITY, method=4)
    return buffer.getvalue()


def _process_part(detector: FaceDetector, records: list[Record], data: dict[str, bytes], path: Path) -> None:
    images, keep = [], []
    for i, record in enumerate(records):
        try:
            with Image.open(io.BytesIO(data[record.file])) as im:
                images.append(im.convert("RGB"))
            keep.append(i)
        except (OSError, ValueError) as error:  # corrupt or truncated file: skip, keep going
            log.warning("unreadable image %s skipped: %s", record.file, error)
    # Same-size chips go through MTCNN together; odd sizes are grouped by detect_batch.
    crops = crop_chip(detector, images) if images else []
    blobs = [encode_webp(crop) for crop, _ in crops]
    ok = np.zeros(len(records), dtype=bool)
    ok[keep] = True
    detected = np.zeros(len(records), dtype=bool)
    detected[keep] = [d for _, d in crops]
    lengths = np.zeros(len(records), dtype=np.int64)
    lengths[keep] = [len(b) for b in blobs]
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, ok=ok, detected=detected, lengths=lengths, blob=np.frombuffer(b"".join(blobs), dtype=np.uint8))
    os.replace(tmp, path)  # a part exists only once complete


def _write_splits(path: Path, records: list[Record]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "sha256", "age", "gender", "race", "split"])
        for r in records:
            writer.writerow([r.file, r.sha256, r.labels.age, r.labels.gender, r.labels.race, r.split])


def _check_splits(path: Path, records: list[Record]) -> None:
    """An existing splits.csv must describe the same images and split, or parts would mix."""
    with path.open() as f:
        rows = [(row["file"], row["sha256"], row["split"]) for row in csv.DictReader(f)]
    if rows != [(r.file, r.sha256, r.split) for r in records]:
        raise SystemExit(f"{path} describes another data set or seed; choose a new --out folder")


def prepare(source: Path, out: Path, seed: int = 0, device: str = "cpu") -> dict:
    out.mkdir(parents=True, exist_ok=True)
    records, data, stats = scan(source, seed)
    if not records:
        raise SystemExit(f"no labelled UTKFace images found in {source}")
    splits_path = out / "splits.csv"
    if splits_path.exists():
        _check_splits(splits_path, records)
    else:
        _write_splits(splits_path, records)

    parts_dir = out / "parts"
    parts_dir.mkdir(exist_ok=True)
    chunks = [records[i : i + PART_SIZE] for i in range(0, len(records), PART_SIZE)]
    todo = [i for i in range(len(chunks)) if not (parts_dir / f"part_{i:05d}.npz").exists()]
    if len(todo) < len(chunks):
        log.info("resuming: %d of %d parts already done", len(chunks) - len(todo), len(chunks))
    detector = FaceDetector(device=device) if todo else None
    done = sum(len(c) for i, c in enumerate(chunks) if i not in todo)
    with tqdm(total=len(records), initial=done, desc="cropping", unit="img") as bar:
        for i in todo:
            _process_part(detector, chunks[i], data, parts_dir / f"part_{i:05d}.npz")
            bar.update(len(chunks[i]))

    summary = _pack(records, [parts_dir / f"part_{i:05d}.npz" for i in range(len(chunks))], out / PACK_NAME)
    summary.update(
        files=stats.files, malformed_names=stats.malformed, duplicates_dropped=stats.duplicates,
        seed=seed, crop_size=CROP_SIZE, crop_margin=CROP_MARGIN, chip_pad=CHIP_PAD, webp_quality=WEBP_QUALITY,
    )
    (out / "prepare.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _pack(records: list[Record], parts: list[Path], path: Path) -> dict:
    ok, detected, lengths, blobs = [], [], [], []
    for part in parts:
        with np.load(part) as z:
            ok.append(z["ok"])
            detected.append(z["detected"])
            lengths.append(z["lengths"])
            blobs.append(z["blob"])
    ok = np.concatenate(ok)
    kept = [r for r, k in zip(records, ok) if k]
    lengths = np.concatenate(lengths)[ok]
    detected = np.concatenate(detected)[ok]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    split_index = {name: i for i, name in enumerate(SPLITS)}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        blob=np.concatenate(blobs),
        offsets=offsets,
        age=np.array([r.labels.age for r in kept], dtype=np.int16),
        gender=np.array([r.labels.gender for r in kept], dtype=np.int8),
        race=np.array([r.labels.race for r in kept], dtype=np.int8),
        split=np.array([split_index[r.split] for r in kept], dtype=np.int8),
        detected=detected,
        files=np.array([r.file for r in kept]),
    )
    os.replace(tmp, path)
    counts = {s: sum(r.split == s for r in kept) for s in SPLITS}
    return {
        "images": len(kept),
        "unreadable": int((~ok).sum()),
        "no_face_fallback": int((~detected).sum()),
        "splits": counts,
        "pack_bytes": path.stat().st_size,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="UTKFace.tar.gz as downloaded, or its folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0: the project's split)")
    parser.add_argument("--device", default="cpu", help="device for MTCNN")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not args.data.exists():
        raise SystemExit(f"--data {args.data} does not exist")
    summary = prepare(args.data, args.out, seed=args.seed, device=args.device)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
