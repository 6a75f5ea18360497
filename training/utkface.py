"""UTKFace as downloaded: labels from file names, duplicates, and the deterministic split."""

from __future__ import annotations

import hashlib
import logging
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RACES = ("White", "Black", "Asian", "Indian", "Others")
GENDERS = ("male", "female")
SPLITS = ("train", "val", "test")
AGE_MIN, AGE_MAX = 1, 116
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# AGE_GENDER_RACE_DATETIME.jpg.chip.jpg; DATETIME is not needed and not checked.
_NAME = re.compile(r"^(\d{1,3})_(\d)_(\d)_[^/]*$")


@dataclass(frozen=True)
class Labels:
    age: int
    gender: int  # 0 male, 1 female
    race: int  # index into RACES


@dataclass(frozen=True)
class Record:
    file: str  # name inside the archive or folder, without directories
    sha256: str
    labels: Labels
    split: str


def parse_labels(file_name: str) -> Labels | None:
    """Labels from a UTKFace file name, or None when the name is malformed or out of range."""
    match = _NAME.match(Path(file_name).name)
    if not match:
        return None
    age, gender, race = (int(g) for g in match.groups())
    if not (AGE_MIN <= age <= AGE_MAX and gender in (0, 1) and 0 <= race < len(RACES)):
        return None
    return Labels(age=age, gender=gender, race=race)


def assign_split(sha256: str, seed: int = 0, fractions: tuple[float, float] = (0.8, 0.1)) -> str:
    """train/val/test from the image's content hash alone: identical bytes, identical split.

    Independent of the other images, so adding or removing files never moves the rest.
    """
    digest = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def iter_images(source: Path) -> Iterator[tuple[str, bytes]]:
    """(file name, bytes) of every image in a UTKFace .tar.gz or folder, sorted by name."""
    if source.is_dir():
        for path in sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            yield path.name, path.read_bytes()
        return
    if not tarfile.is_tarfile(source):
        raise ValueError(f"{source} is neither a folder nor a tar archive of UTKFace images")
    with tarfile.open(source) as tar:
        members = sorted(
            (m for m in tar.getmembers() if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES),
            key=lambda m: Path(m.name).name,
        )
        for member in members:
            yield Path(member.name).name, tar.extractfile(member).read()


@dataclass
class ScanStats:
    files: int = 0
    malformed: int = 0
    duplicates: int = 0


def scan(source: Path, seed: int = 0) -> tuple[list[Record], dict[str, bytes], ScanStats]:
    """Read, label, de-duplicate and split a UTKFace download.

    Byte-identical copies are dropped before splitting (the first name in sorted order stays).
    Returns the records, the image bytes by file name, and counts of what was skipped.
    """
    stats = ScanStats()
    records: list[Record] = []
    data: dict[str, bytes] = {}
    seen: dict[str, str] = {}
    malformed_examples: list[str] = []
    for name, blob in iter_images(source):
        stats.files += 1
        labels = parse_labels(name)
        if labels is None:
            stats.malformed += 1
            malformed_examples.append(name)
            continue
        sha = hashlib.sha256(blob).hexdigest()
        if sha in seen:
            stats.duplicates += 1
            continue
        seen[sha] = name
        records.append(Record(file=name, sha256=sha, labels=labels, split=assign_split(sha, seed)))
        data[name] = blob
    if stats.malformed:
        log.warning(
            "skipped %d file(s) whose names are not AGE_GENDER_RACE_DATETIME (e.g. %s)",
            stats.malformed,
            ", ".join(malformed_examples[:3]),
        )
    log.info("%d images, %d byte-identical duplicates dropped", len(records), stats.duplicates)
    return records, data, stats
