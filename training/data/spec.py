"""One object per supported data set, and the registry everything else asks.

A `DatasetSpec` says all that differs between data sets: its name and title, how to recognise and
read a download, whether ages are years or groups, how its faces are broken down in reports, what
its licence says, and how a batch-CLI prediction is matched to its labels. Prepare, the metrics,
evaluation, the model card and the CLI scorer ask the spec of a face's data set; none of them
branch on a data set's name.

Adding a data set is adding one module that subclasses `DatasetSpec` and calls `register`
(`training/data/utkface.py` and `training/data/fairface.py` are the two shipped ones; the tests
register a third).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demo.heads import AGE_MAX, AGE_MIN
from training.data.records import Record, ScanStats

YEAR, GROUP = "year", "group"  # the two kinds of age label


@dataclass(frozen=True)
class Breakdown:
    """A report section: one row per group of faces, e.g. per age band or per race group."""

    key: str  # its key in metrics.json, e.g. "by_age_band"
    title: str  # what a row is, e.g. "age band": the section is "By age band"
    groups: Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]  # (age_low, race) -> group -> mask


def by_label(key: str, title: str, names: tuple[str, ...]) -> Breakdown:
    """A breakdown by a label index (race), one group per name."""
    return Breakdown(key, title, lambda age_low, race: {name: race == i for i, name in enumerate(names)})


# Age bands for data sets labelled in years; the last one runs to the age head's last bin. Children
# get three: the range of a baby (bounded by age 1) and of a child behave differently.
AGE_BANDS = ((1, 2), (3, 5), (6, 12), (13, 19), (20, 29), (30, 39), (40, 49), (50, 59), (60, 69), (70, AGE_MAX))


def band_name(band: tuple[int, int]) -> str:
    return f"{band[0]}+" if band[1] == AGE_MAX else f"{band[0]}-{band[1]}"


def by_age_band(bands: tuple[tuple[int, int], ...] = AGE_BANDS) -> Breakdown:
    return Breakdown("by_age_band", "age band",
                     lambda age_low, race: {band_name(b): (age_low >= b[0]) & (age_low <= b[1]) for b in bands})


class DatasetSpec(ABC):
    """What one data set is and how to read it. Subclasses set the attributes and the two methods."""

    name: str  # short and stable: stored in packs and splits.csv, e.g. "utkface"
    title: str  # as people write it, e.g. "UTKFace"
    age_kind: str  # YEAR: ages in years; GROUP: an age group per face (see age_groups)
    races: tuple[str, ...]  # the data set's own race or ethnicity groups, by label index
    # Group data sets: group name -> its years on the age head's bins, in order.
    age_groups: dict[str, tuple[int, int]] = {}
    breakdowns: tuple[Breakdown, ...] = ()  # report sections; the first is also drawn as bars
    # Where the detector finds no face: keep the photo resized as it is (already aligned chips)
    # rather than leave it out.
    keep_undetected: bool = False
    about: str = ""  # a sentence for the model card: what the data set is, and its licence
    caveat: str = ""  # a clause for the model card's limits: what its faces are like

    @abstractmethod
    def recognises(self, source: Path) -> bool:
        """Whether `source` (a folder or archive, as downloaded) is a copy of this data set."""

    @abstractmethod
    def scan(self, source: Path, seed: int = 0) -> tuple[list[Record], dict[str, bytes], ScanStats]:
        """Read, label, de-duplicate and split `source`: records, image bytes by record key, and counts."""

    def label_key(self, file: str) -> str:
        """The key a batch-CLI prediction is matched by, from the file of a splits.csv row.

        The path as the labels name it; a data set whose file names carry the labels may use
        the name alone, so a photo is found wherever the user put it.
        """
        return file

    def group_of(self, age: float) -> int:
        """Index into `age_groups` of the group an age in years falls in (a group runs up to the next)."""
        for i, (_, high) in enumerate(self.age_groups.values()):
            if age < high + 1:
                return i
        return len(self.age_groups) - 1

    def groups_apart(self, estimates: Iterable[float], ages: Iterable[float]) -> np.ndarray:
        """How many age groups apart each estimate's group is from its true age's (0: exact, 1: within one)."""
        return np.abs(np.array([self.group_of(a) for a in estimates]) - np.array([self.group_of(a) for a in ages]))

    def __repr__(self) -> str:
        return f"<data set {self.name}>"


_REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Make a data set known to prepare, training, evaluation, the model card and the CLI scorer."""
    if spec.age_kind not in (YEAR, GROUP):
        raise ValueError(f"{spec.name}: age_kind must be {YEAR!r} or {GROUP!r}, not {spec.age_kind!r}")
    if spec.age_kind == GROUP and not spec.age_groups:
        raise ValueError(f"{spec.name}: a data set of age groups must list them in age_groups")
    if any(not AGE_MIN <= low <= high <= AGE_MAX for low, high in spec.age_groups.values()):
        raise ValueError(f"{spec.name}: age groups must lie within the age head's {AGE_MIN}-{AGE_MAX} years")
    _REGISTRY[spec.name] = spec
    return spec


def names() -> tuple[str, ...]:
    """The registered data sets, in registration order (a pack stores faces' data sets by name)."""
    return tuple(_REGISTRY)


def get(name: str) -> DatasetSpec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def index(name: str) -> int:
    """The number a face's data set has in tensors and pack arrays: its place in `names()`."""
    return names().index(get(name).name)


def at(i: int) -> DatasetSpec:
    return _REGISTRY[names()[i]]


def recognise(source: Path) -> DatasetSpec:
    """The data set `source` is a copy of, asked of every registered spec; a clear error if none says yes."""
    for spec in _REGISTRY.values():
        if spec.recognises(source):
            return spec
    known = ", ".join(s.title for s in _REGISTRY.values())
    raise ValueError(f"{source} is not recognised as any known data set ({known}); see training/data/ for what "
                     "each expects")
