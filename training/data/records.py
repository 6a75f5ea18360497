"""What every training source turns into: one labelled image, its content hash and its split.

A data set labels an age in years (UTKFace) or an age group (FairFace); both become a range of
years [age_low, age_high] (a single year when low == high), so one loss and one pack format serve
every data set.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
AGE_KINDS = ("year", "group")


@dataclass(frozen=True)
class Record:
    dataset: str  # the name of a registered data set (training.data.spec)
    file: str  # path inside the archive or folder, as its labels name it
    sha256: str
    age_low: int
    age_high: int  # == age_low for an age in years
    gender: int  # 0 male, 1 female
    race: int  # index into the data set's own list of race groups
    split: str

    @property
    def key(self) -> str:
        """Unique across data sets: the key of the image bytes in `scan` results."""
        return f"{self.dataset}:{self.file}"


@dataclass
class ScanStats:
    """What a scan read and what it skipped, with a reason for each skip."""

    files: int = 0
    duplicates: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, example: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 3:
            self.examples[reason].append(example)

    def warn(self, source: object) -> None:
        for reason, count in self.skipped.items():
            log.warning("%s: skipped %d row(s) or file(s): %s (e.g. %s)", source, count, reason,
                        ", ".join(self.examples[reason]))

    @property
    def malformed(self) -> int:
        return sum(self.skipped.values())


class RecordSet:
    """Records and their image bytes as a scan finds them; byte-identical copies are dropped (the first stays)."""

    def __init__(self, stats: ScanStats, seed: int) -> None:
        self.records: list[Record] = []
        self.data: dict[str, bytes] = {}  # image bytes by Record.key
        self.stats, self.seed = stats, seed
        self._seen: set[str] = set()

    def add(self, dataset: str, file: str, blob: bytes, age_low: int, age_high: int, gender: int, race: int) -> None:
        sha = sha256_of(blob)
        if sha in self._seen:
            self.stats.duplicates += 1
            return
        self._seen.add(sha)
        record = Record(dataset, file, sha, age_low, age_high, gender, race, assign_split(sha, self.seed))
        self.records.append(record)
        self.data[record.key] = blob


def sha256_of(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def assign_split(sha256: str, seed: int = 0, fractions: tuple[float, float] = (0.8, 0.1)) -> str:
    """train/val/test from the image's content hash alone: identical bytes, identical split.

    Independent of the other images, so adding or removing files never moves the rest.
    """
    digest = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"
