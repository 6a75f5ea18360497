"""FairFace as released: `labels.csv`-style files (file,age,gender,race,...) beside the photos; age groups.

Accepted as the shared `FairFace-train-15k.tar` or `FairFace-train-15001-36000.tar.gz`, their
unpacked folders, or a user's copy of the official release (the 0.25-padding images unpacked,
with `fairface_label_train.csv` and/or `fairface_label_val.csv` beside their `train/` and `val/`
folders). Every CSV whose header starts with file,age,gender,race is read; `file` is relative to
the CSV's folder.

Rows that cannot be read are skipped with a reason and counted, never guessed: an age group that
is not one of the nine official names (a spreadsheet turns `3-9` into `03-Sep`), an unknown
gender or race, or a photo that is not there.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path, PurePosixPath

from demo.heads import AGE_MAX
from training.data.records import Record, RecordSet, ScanStats
from training.data.sources import Source
from training.data.spec import GROUP, Breakdown, DatasetSpec, by_label, register

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


def labels_files(src: Source) -> list[str]:
    return [n for n in src.names
            if n.lower().endswith(".csv") and is_labels_file((src.read(n) or b"")[:200].decode("utf-8", "replace"))]


class FairFace(DatasetSpec):
    name = "fairface"
    title = "FairFace"
    age_kind = GROUP
    races = RACES
    age_groups = AGE_GROUPS
    breakdowns = (
        by_label("by_race", "race group", RACES),
        Breakdown("by_age_group", "age group",
                  lambda age_low, race: {name: age_low == low for name, (low, _) in AGE_GROUPS.items()}),
    )
    about = "FairFace (Flickr photos in the wild, nine age groups, binary gender, seven race groups) is CC BY 4.0 " \
            "(Karkkainen and Joo, 2021)."
    caveat = "FairFace adds photos in the wild, balanced by race group, labelled with age groups only"

    def recognises(self, source: Path) -> bool:
        try:
            with Source(source) as src:
                return bool(labels_files(src))
        except ValueError:
            return False

    def scan(self, source: Path, seed: int = 0) -> tuple[list[Record], dict[str, bytes], ScanStats]:
        stats = ScanStats()
        found = RecordSet(stats, seed)
        with Source(source) as src:
            csv_names = labels_files(src)
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
                    found.add(self.name, (base / file).as_posix(), blob, *labels)
        stats.warn(source)
        log.info("FairFace: %d images from %s, %d byte-identical duplicates dropped", len(found.records), source,
                 stats.duplicates)
        return found.records, found.data, stats


FAIRFACE = register(FairFace())
