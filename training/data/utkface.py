"""UTKFace as downloaded ("Aligned & Cropped Faces"): labels from file names, ages in years."""

from __future__ import annotations

import logging
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from demo.heads import AGE_MAX, AGE_MIN
from training.data.records import Record, RecordSet, ScanStats
from training.data.sources import Source
from training.data.spec import YEAR, DatasetSpec, by_age_band, by_label, register

log = logging.getLogger(__name__)

RACES = ("White", "Black", "Asian", "Indian", "Others")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MALFORMED = f"name is not AGE_GENDER_RACE_DATETIME with age {AGE_MIN}-{AGE_MAX}, gender 0/1, race 0-4"

# AGE_GENDER_RACE_DATETIME.jpg.chip.jpg; DATETIME is not needed and not checked.
_NAME = re.compile(r"^(\d{1,3})_(\d)_(\d)_[^/]*$")


@dataclass(frozen=True)
class Labels:
    age: int
    gender: int  # 0 male, 1 female
    race: int  # index into RACES


def parse_labels(file_name: str) -> Labels | None:
    """Labels from a UTKFace file name, or None when the name is malformed or out of range."""
    match = _NAME.match(Path(file_name).name)
    if not match:
        return None
    age, gender, race = (int(g) for g in match.groups())
    if not (AGE_MIN <= age <= AGE_MAX and gender in (0, 1) and 0 <= race < len(RACES)):
        return None
    return Labels(age=age, gender=gender, race=race)


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


def looks_like_utkface(names: list[str]) -> bool:
    """True when most image names carry UTKFace labels."""
    images = [n for n in names if n.lower().endswith(IMAGE_SUFFIXES)]
    return bool(images) and sum(parse_labels(n) is not None for n in images) >= 0.5 * len(images)


class UTKFace(DatasetSpec):
    name = "utkface"
    title = "UTKFace"
    age_kind = YEAR
    races = RACES
    breakdowns = (by_age_band(), by_label("by_ethnicity", "ethnicity", RACES))
    # Its chips are already aligned by the authors to the framing the crop uses.
    keep_undetected = True
    about = ("UTKFace (aligned and cropped faces, about 20,000 images, ages 1-116, labelled with age, binary gender "
             "and one of five ethnicity groups) is available for non-commercial research and education only, and so "
             "are these weights.")
    caveat = "UTKFace is mostly frontal, well lit and skewed towards White adults and young children"

    def recognises(self, source: Path) -> bool:
        try:
            with Source(source) as src:
                return looks_like_utkface(src.names)
        except ValueError:
            return False

    def scan(self, source: Path, seed: int = 0) -> tuple[list[Record], dict[str, bytes], ScanStats]:
        """Byte-identical copies are dropped before splitting (the first name in sorted order stays)."""
        stats = ScanStats()
        found = RecordSet(stats, seed)
        for name, blob in iter_images(source):
            stats.files += 1
            labels = parse_labels(name)
            if labels is None:
                stats.skip(MALFORMED, name)
                continue
            found.add(self.name, name, blob, labels.age, labels.age, labels.gender, labels.race)
        stats.warn(source)
        log.info("UTKFace: %d images, %d byte-identical duplicates dropped", len(found.records), stats.duplicates)
        return found.records, found.data, stats

    def label_key(self, file: str) -> str:
        return Path(file).name  # the name carries the labels, wherever the photo lies


UTKFACE = register(UTKFace())
