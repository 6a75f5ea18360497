"""Turn data-set downloads into the packed face crops the models train on (`python -m training.prepare`).

Each source is an archive or a folder; which data set it is, is asked of the registered specs.
Writes to the output folder:
  splits.csv   every kept image with its data set, labels, content hash and split (the split of record)
  faces.npz    WebP-encoded 128 px crops + labels (training.data.pack)
  prepare.json counts: files, skipped rows by reason, duplicates, unreadable images, faces found
Work is done in parts of PART_SIZE images under parts/; an interrupted run picks up where it
stopped, so re-running the same command only does what is missing, and a source added after the
others (another --data at the end) only costs its own images.

Faces are found and cropped by the app's own `FaceDetector` and `align_crop`. Where MTCNN finds
several faces, the one nearest the centre is the labelled one (data sets centre their face).
Where it finds none, a photo of a data set whose spec says `keep_undetected` (UTKFace's aligned
chips) is kept as it is; any other is left out and counted.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from demo.faces import CROP_MARGIN, CROP_SIZE, Face, FaceDetector, align_crop
from demo.files import atomic_write
from training.data import spec
from training.data.groups import Describer, Grouping, group_splits, photo_thumbnails, thumbnails
from training.data.pack import PACK_NAME, write_pack
from training.data.records import AGE_KINDS, SPLITS, Record, ScanStats

log = logging.getLogger(__name__)

PART_SIZE = 512
# Crops are stored as lossless WebP (about 18 KB a 128 px face): the models then train and are
# evaluated on exactly the pixels the app gives them. Lossy WebP at quality 80 (2 KB a face), as
# packs were before, changed the shipped models' test numbers by up to 0.7 years at 60+ and a point of
# FairFace age groups (docs/training.md); `crop_quality` still makes such a pack, small enough to carry
# to another machine, and says so in prepare.json.
LOSSLESS = "lossless"
DEFAULT_GROUPING = Grouping()
# Status of each image in a part.
OK, UNREADABLE, NO_FACE = 0, 1, 2


def centre_distance(box: tuple[float, float, float, float], size: tuple[int, int]) -> float:
    """Squared distance from a box's centre to the image centre."""
    return ((box[0] + box[2]) / 2 - size[0] / 2) ** 2 + ((box[1] + box[3]) / 2 - size[1] / 2) ** 2


def central_face(faces: list[Face], size: tuple[int, int]) -> Face:
    """The face whose box centre is nearest the image centre: the labelled face of a data set photo."""
    return min(faces, key=lambda f: centre_distance(f.box, size))


def crop_faces(detector: FaceDetector, images: list[Image.Image], datasets: list[str]) -> list[dict]:
    """Crop each image the way the app crops a photo.

    Per image: crop (or None), status, whether a face was detected, its detection score, how many
    faces were found, and the scores of the others (for choosing the app's detection threshold).
    """
    results = []
    for image, dataset, faces in zip(images, datasets, detector.detect_batch(images)):
        if faces:
            face = central_face(faces, image.size)
            results.append({"crop": align_crop(image, face, CROP_SIZE, CROP_MARGIN), "status": OK, "detected": True,
                            "score": face.score, "n_faces": len(faces),
                            "others": [f.score for f in faces if f is not face]})
        elif spec.get(dataset).keep_undetected:
            crop = image.resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BILINEAR)
            results.append({"crop": crop, "status": OK, "detected": False, "score": 0.0, "n_faces": 0, "others": []})
        else:
            results.append({"crop": None, "status": NO_FACE, "detected": False, "score": 0.0, "n_faces": 0,
                            "others": []})
    return results


def encode_crop(image: Image.Image, quality: int | str = LOSSLESS) -> bytes:
    """A crop as WebP: lossless, or lossy at `quality` (1-100)."""
    buffer = io.BytesIO()
    if quality == LOSSLESS:
        image.save(buffer, format="WEBP", lossless=True, method=0)  # method 0: fastest, 15 % larger than 4
    else:
        image.save(buffer, format="WEBP", quality=int(quality), method=4)
    return buffer.getvalue()


def crop_encoding(quality: int | str) -> str:
    """How a pack's crops are encoded, as prepare.json records it."""
    return LOSSLESS if quality == LOSSLESS else f"webp-q{int(quality)}"


def _process_part(detector: FaceDetector, records: list[Record], data: dict[str, bytes], path: Path) -> None:
    n = len(records)
    status = np.full(n, UNREADABLE, dtype=np.int8)
    detected = np.zeros(n, dtype=bool)
    score = np.zeros(n, dtype=np.float32)
    n_faces = np.zeros(n, dtype=np.int16)
    lengths = np.zeros(n, dtype=np.int64)
    images, keep = [], []
    for i, record in enumerate(records):
        try:
            with Image.open(io.BytesIO(data[record.key])) as im:
                images.append(im.convert("RGB"))
            keep.append(i)
        except (OSError, ValueError) as error:  # corrupt or truncated file: skip, keep going
            log.warning("unreadable image %s skipped: %s", record.file, error)
    crops = crop_faces(detector, images, [records[i].dataset for i in keep]) if images else []
    blobs, others = [], []
    for i, c in zip(keep, crops):
        status[i], detected[i], score[i], n_faces[i] = c["status"], c["detected"], c["score"], c["n_faces"]
        others.append(np.array(c["others"], dtype=np.float32))
        if c["crop"] is not None:
            blob = encode_crop(c["crop"])
            blobs.append(blob)
            lengths[i] = len(blob)
    others_at = np.zeros(n, dtype=np.int64)
    others_at[keep] = [len(o) for o in others]
    with atomic_write(path) as tmp:  # a part exists only once complete
        np.savez(tmp, encoding=np.str_(LOSSLESS), status=status, detected=detected, score=score, n_faces=n_faces,
                 lengths=lengths, blob=np.frombuffer(b"".join(blobs), dtype=np.uint8),
                 other_scores=np.concatenate(others) if others else np.zeros(0, np.float32), other_counts=others_at)


SPLITS_HEADER = ["dataset", "file", "sha256", "age_low", "age_high", "gender", "race", "split"]


def _write_splits(path: Path, records: list[Record]) -> None:
    # Atomic: a splits.csv cut short by a crash would not match the next run's records.
    with atomic_write(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SPLITS_HEADER)
        for r in records:
            writer.writerow([r.dataset, r.file, r.sha256, r.age_low, r.age_high, r.gender, r.race, r.split])


def _reusable_records(path: Path, records: list[Record]) -> int:
    """How many leading `records` an existing splits.csv already describes, image for image.

    All of them when the command is re-run; fewer when a source was added after the others (its
    records come last), and then the parts wholly inside that prefix are still valid. Splits may
    differ (another seed, other grouping): parts hold crops, not splits. Anything else (other data,
    a source removed or put first) would mix parts, and is refused.
    """
    with path.open() as f:
        rows = [(row.get("dataset"), row["file"], row["sha256"]) for row in csv.DictReader(f)]
    if rows != [(r.dataset, r.file, r.sha256) for r in records[: len(rows)]]:
        raise ValueError(f"{path} describes other data; choose a new output folder")
    return len(rows)


def scan_sources(sources: list[Path], seed: int) -> tuple[list[Record], dict[str, bytes], dict[str, dict]]:
    """All records of all sources, byte-identical images across sources dropped, and per-source counts."""
    records: list[Record] = []
    data: dict[str, bytes] = {}
    seen: set[str] = set()
    counts: dict[str, dict] = {}
    for source in sources:
        dataset = spec.recognise(source)
        found, blobs, stats = dataset.scan(source, seed)
        if not found:
            raise ValueError(f"no labelled {dataset.title} images found in {source}")
        fresh = [r for r in found if r.sha256 not in seen]
        seen.update(r.sha256 for r in fresh)
        records += fresh
        data.update((r.key, blobs[r.key]) for r in fresh)
        counts[str(source)] = _source_counts(dataset.name, stats, len(found) - len(fresh))
    return records, data, counts


def _source_counts(kind: str, stats: ScanStats, cross_duplicates: int) -> dict:
    return {"kind": kind, "files": stats.files, "skipped": dict(stats.skipped),
            "duplicates_dropped": stats.duplicates + cross_duplicates}


def prepare(sources: Path | list[Path], out: Path, seed: int = 0, device: str = "cpu",
            describe: Describer | None = None, grouping: Grouping | None = DEFAULT_GROUPING,
            crop_quality: int | str = LOSSLESS) -> dict:
    """Scan, crop, split and pack `sources` into `out`; returns the summary written to prepare.json.

    Splits keep near-copies (and, with `describe`, one adult's photos) together (training.data.groups);
    `grouping=None` splits by content hash alone. `crop_quality` is how the pack stores crops.
    """
    sources = [sources] if isinstance(sources, Path) else list(sources)
    out.mkdir(parents=True, exist_ok=True)
    records, data, source_counts = scan_sources(sources, seed)
    splits_path = out / "splits.csv"
    parts_dir = out / "parts"
    parts_dir.mkdir(exist_ok=True)
    chunks = [records[i : i + PART_SIZE] for i in range(0, len(records), PART_SIZE)]
    parts = [parts_dir / f"part_{i:05d}.npz" for i in range(len(chunks))]
    known = _reusable_records(splits_path, records) if splits_path.exists() else 0
    if known < len(records):
        if known:
            log.info("%d images added to the %d already prepared in %s", len(records) - known, known, out)
        for i in range(known // PART_SIZE, len(chunks) + 1):  # parts that straddle the old end are made again
            for stale in parts_dir.glob(f"*_{i:05d}.npz"):
                stale.unlink()
    _write_splits(splits_path, records)  # the records a resumed run must match (their splits come below)

    todo = [i for i, part in enumerate(parts) if not _is_current(part)]
    if len(todo) < len(chunks):
        log.info("resuming: %d of %d parts already done", len(chunks) - len(todo), len(chunks))
    detector = FaceDetector(device=device) if todo else None
    done = sum(len(c) for i, c in enumerate(chunks) if i not in todo)
    with tqdm(total=len(records), initial=done, desc="cropping", unit="img") as bar:
        for i in todo:
            _process_part(detector, chunks[i], data, parts[i])
            bar.update(len(chunks[i]))

    group_summary = None
    if grouping is not None:
        ok = np.concatenate([np.load(part)["status"] == OK for part in parts])
        features = [_part_features(part, [data[r.key] for r in chunk], describe)
                    for part, chunk in tqdm(list(zip(parts, chunks)), desc="face features", unit="part")]
        joined = {k: np.concatenate([f[k] for f in features]) for k in features[0]}
        if describe is None:
            joined.pop("descriptors", None)
        kept = [r for r, k in zip(records, ok) if k]
        grouped, group_summary = group_splits(kept, joined, seed, grouping)
        regrouped = iter(grouped)
        records = [next(regrouped) if k else r for r, k in zip(records, ok)]
        _write_splits(splits_path, records)

    summary = _pack(records, parts, out / PACK_NAME, crop_quality)
    summary.update(sources=source_counts, seed=seed, crop_size=CROP_SIZE, crop_margin=CROP_MARGIN,
                   crop_encoding=crop_encoding(crop_quality), split_groups=group_summary)
    (out / "prepare.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _is_current(part: Path) -> bool:
    """Whether a part exists and holds lossless crops (parts of older versions held lossy ones)."""
    if not part.exists():
        return False
    with np.load(part) as z:
        return "encoding" in z.files and str(z["encoding"]) == LOSSLESS


def _decoded(blob: np.ndarray, lengths: np.ndarray) -> Iterator[Image.Image]:
    """The RGB images encoded one after another in `blob`, `lengths` bytes each."""
    ends = np.cumsum(lengths)
    for start, end in zip(ends - lengths, ends):
        with Image.open(io.BytesIO(blob[start:end].tobytes())) as im:
            yield im.convert("RGB")


def _part_crops(part: Path) -> list[np.ndarray]:
    """The crops of a part's kept faces, in order, as H x W x 3 uint8 arrays."""
    with np.load(part) as z:
        blob, lengths = z["blob"], z["lengths"][z["status"] == OK]
    return [np.asarray(crop) for crop in _decoded(blob, lengths)]


def _features_path(part: Path) -> Path:
    """Where a part's face features are cached: features_NNNNN.npz beside part_NNNNN.npz."""
    return part.with_name(part.name.replace("part_", "features_"))


def _part_features(part: Path, photos: list[bytes], describe: Describer | None) -> dict[str, np.ndarray]:
    """Row for row with a part's kept faces: thumbnails of their photos (`photos`, the part's
    records' bytes) and crops, and descriptors with `describe`; cached beside the part, so a
    re-run computes only what is missing (descriptors take most of the time)."""
    path = _features_path(part)
    features: dict[str, np.ndarray] = {}
    if path.exists():
        with np.load(path) as z:
            features = {k: z[k] for k in z.files if k != "thumbs"}  # "thumbs": the crops', as first cached
    wanted = {"photo_thumbs", "crop_thumbs"} | ({"descriptors"} if describe is not None else set())
    if wanted <= set(features):
        return features
    with np.load(part) as z:
        kept = z["status"] == OK
    if "photo_thumbs" not in features:
        features["photo_thumbs"] = photo_thumbnails([blob for blob, k in zip(photos, kept) if k])
    if "crop_thumbs" not in features or (describe is not None and "descriptors" not in features):
        crops = _part_crops(part)
        stacked = np.stack(crops) if crops else np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8)
        features["crop_thumbs"] = thumbnails(stacked)
        if describe is not None and "descriptors" not in features:
            features["descriptors"] = describe(stacked).astype(np.float32)
    with atomic_write(path) as tmp:
        np.savez(tmp, **features)
    return features


def part_features(parts: list[Path]) -> dict[str, np.ndarray]:
    """The cached features of every part's kept faces, joined (for tools: prepare must have made them)."""
    missing = [p for p in parts if not _features_path(p).exists()]
    if missing:
        raise FileNotFoundError(f"no face features beside {missing[0]}: run python -m training.prepare on it first")
    loaded = [np.load(_features_path(p)) for p in parts]
    return {k: np.concatenate([z[k] for z in loaded]) for k in loaded[0].files}


def _transcoded(blob: np.ndarray, lengths: np.ndarray, quality: int | str) -> tuple[np.ndarray, np.ndarray]:
    """Lossless crops re-encoded at `quality`: the joined bytes and each crop's length."""
    out = [encode_crop(crop, quality)
           for crop in tqdm(_decoded(blob, lengths), total=len(lengths), desc="encoding crops", unit="img")]
    return np.frombuffer(b"".join(out), dtype=np.uint8), np.array([len(b) for b in out], dtype=np.int64)


def _pack(records: list[Record], parts: list[Path], path: Path, crop_quality: int | str = LOSSLESS) -> dict:
    loaded = [np.load(part) for part in parts]
    # Every per-image (and per-other-detection) array of the parts, joined once.
    z = {key: np.concatenate([part[key] for part in loaded]) for key in loaded[0].files if key != "encoding"}
    ok = z["status"] == OK
    kept = [r for r, k in zip(records, ok) if k]
    lengths = z["lengths"][ok]
    if crop_quality != LOSSLESS:
        z["blob"], lengths = _transcoded(z["blob"], lengths, crop_quality)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    dataset_names = spec.names()
    image_dataset = np.array([dataset_names.index(r.dataset) for r in records])
    image_split = np.array([SPLITS.index(r.split) for r in records])
    arrays = {
        "blob": z["blob"],
        "offsets": offsets,
        "dataset": image_dataset[ok],
        "age_kind": [AGE_KINDS.index(spec.get(r.dataset).age_kind) for r in kept],
        "age_low": [r.age_low for r in kept],
        "age_high": [r.age_high for r in kept],
        "gender": [r.gender for r in kept],
        "race": [r.race for r in kept],
        "split": image_split[ok],
        "detected": z["detected"][ok],
        "det_score": z["score"][ok],
        "n_faces": z["n_faces"][ok],
        "files": [r.file for r in kept],
        "other_scores": z["other_scores"],
        "other_dataset": np.repeat(image_dataset, z["other_counts"]),
        "other_split": np.repeat(image_split, z["other_counts"]),
        "dataset_names": dataset_names,
    }
    write_pack(path, arrays)
    summary: dict = {"images": len(kept), "pack_bytes": path.stat().st_size, "datasets": {}}
    for d, name in enumerate(dataset_names):
        mine = image_dataset == d
        if not mine.any():
            continue
        summary["datasets"][name] = {
            "images": int((ok & mine).sum()),
            "unreadable": int(((z["status"] == UNREADABLE) & mine).sum()),
            "no_face_left_out": int(((z["status"] == NO_FACE) & mine).sum()),
            "no_face_chip_kept": int((ok & mine & ~z["detected"]).sum()),
            "several_faces_took_central": int((mine & (z["n_faces"] > 1)).sum()),
            "splits": {s: int((ok & mine & (image_split == i)).sum()) for i, s in enumerate(SPLITS)},
        }
    return summary
