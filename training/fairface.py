"""FairFace as released: `labels.csv`-style files (file,age,gender,race,...) beside the photos.

Accepted as the shared `FairFace-train-15k.tar`, its unpacked folder, or a user's copy of the
official release (the 0.25-padding images unpacked, with `fairface_label_train.csv` and/or
`fairface_label_val.csv` beside their `train/` and `val/` folders). Every CSV whose header starts
with file,age,gender,race is read; `file` is relative to the CSV's folder.

Rows that cannot be read are skipped with a reason and counted, never guessed: an age group that
is not one of the nine official names (a spreadsheet turns `3-9` into `03-Sep`), an unknown
gender or race, or a photo that is not there.
"""

from __future__ import annotations

import csv
import io
import logging
import tarfile
from pathlib import Path, PurePosixPath

from training.records import AGE_MAX, Record, RecordSet, ScanStats

log = logging.getLogger(__name__)

# The nine official groups, as years on the age head's bins (which start at 1: "0-2" is 1-2, the
# babies of FairFace being a few months old at least). The last group runs to the last bin.
AGE_GROUPS: dict[str, tuple[int, int]] = {
    "0-2": (1, 2), "3-9": (3, 9), "10-19": (10, 19), "20-29": (20, 29), "30-39": (30, 39),
    "40-49": (40, 49), "50-59": (50, 59), "60-69": (60, 69), "more than 70": (70, AGE_MAX),
}
GROUP_NAMES = tuple(AGE_GROUPS)
GENDER_NAMES = {"Male": 0, "Female": 1}
RACES = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern")
HEADER = ("file", "age", "gender", "race")


def age_group_of(age: float) -> int:
    """Index into GROUP_NAMES of the group an age in years falls in (FairFace's 0-2 includes 0)."""
    for i, (_, high) in enumerate(AGE_GROUPS.values()):
        if age < high + 1:
            return i
    return len(GROUP_NAMES) - 1


def parse_row(row: dict[str, str]) -> tuple[int, int, int, int] | str:
    """(age_low, age_high, gender, race) from a labels row, or the reason it cannot be read."""
    age = (row.get("age") or "").strip()
    if age not in AGE_GROUPS:
        return f"age group not one of {', '.join(GROUP_NAMES)} (a spreadsheet turns 3-9 into 03-Sep)"
    gender = (row.get("gender") or "").strip()
    if gender not in GENDER_NAMES:
        return "gender is not Male or Female"
    race = (row.get("race") or "").strip()
    if race not in RACES:
        return f"race not one of {', '.join(RACES)}"
    return (*AGE_GROUPS[age], GENDER_NAMES[gender], RACES.index(race))


def is_labels_file(text: str) -> bool:
    first = text.split("\n", 1)[0].strip().lstrip("\ufeff")
    return tuple(c.strip() for c in first.split(",")[:4]) == HEADER


class _Source:
    """Read access to a tar archive or a folder by relative POSIX path."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.tar = None
        if source.is_dir():
            self.names = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
        elif tarfile.is_tarfile(source):
            self.tar = tarfile.open(source)
            self.members = {m.name.removeprefix("./"): m for m in self.tar.getmembers() if m.isfile()}
            self.names = sorted(self.members)
        else:
            raise ValueError(f"{source} is neither a folder nor a tar archive")

    def read(self, name: str) -> bytes | None:
        if self.tar is not None:
            member = self.members.get(name)
            return self.tar.extractfile(member).read() if member else None
        path = self.source / name
        return path.read_bytes() if path.is_file() else None

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()


def labels_files(names: list[str], read) -> list[str]:
    return [n for n in names if n.lower().endswith(".csv") and is_labels_file((read(n) or b"")[:200].decode(
        "utf-8", "replace"))]


def looks_like_fairface(source: Path) -> bool:
    src = _Source(source)
    try:
        return bool(labels_files(src.names, src.read))
    finally:
        src.close()


def scan(source: Path, seed: int = 0) -> tuple[list[Record], dict[str, bytes], ScanStats]:
    """Read, label, de-duplicate and split a FairFace copy; the image bytes are keyed by record key."""
    src = _Source(source)
    stats = ScanStats()
    found = RecordSet(stats, seed)
    try:
        csv_names = labels_files(src.names, src.read)
        if not csv_names:
            raise ValueError(f"{source} holds no FairFace labels file (a CSV starting with {','.join(HEADER)})")
        for csv_name in csv_names:
            base = PurePosixPath(csv_name).parent
            text = src.read(csv_name).decode("utf-8-sig")
            for row in csv.DictReader(io.StringIO(text)):
                stats.files += 1
                file = (row.get("file") or "").strip()
                labels = parse_row(row)
                if isinstance(labels, str):
                    stats.skip(labels, f"{file} ({row.get('age')}, {row.get('gender')}, {row.get('race')})")
                    continue
                blob = src.read((base / file).as_posix()) if file else None
                if not blob:
                    stats.skip("photo missing or empty", file or "(no file name)")
                    continue
                found.add("fairface", (base / file).as_posix(), blob, *labels)
    finally:
        src.close()
    stats.warn(source)
    log.info("FairFace: %d images from %s, %d byte-identical duplicates dropped", len(found.records), source,
             stats.duplicates)
    return found.records, found.data, stats
