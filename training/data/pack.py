"""The pack: every face crop of a prepared folder and its labels in one `faces.npz`, defined once.

`training.data.prepare` writes it through `write_pack`, training and evaluation read it through
`FacePack`; FIELDS is the one list of what it holds. Loaded without pickle.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from demo.files import atomic_write
from training.data import spec
from training.data.records import SPLITS

PACK_NAME = "faces.npz"
# 2 added format_version and dataset_names; a version-1 pack (neither) holds UTKFace and FairFace, in that order.
PACK_VERSION = 2
VERSION_1_DATASETS = ("utkface", "fairface")

# Every array of a pack: its dtype and what it holds. One entry per face unless said otherwise.
FIELDS: dict[str, tuple[type, str]] = {
    "blob": (np.uint8, "all crops' WebP bytes, one after another (not per face)"),
    "offsets": (np.int64, "face i's crop is blob[offsets[i]:offsets[i + 1]] (one more than the faces)"),
    "dataset": (np.int8, "index into dataset_names"),
    "age_kind": (np.int8, "index into training.data.records.AGE_KINDS: a year, or a group of years"),
    "age_low": (np.int16, "first year of the label (the age, for a label in years)"),
    "age_high": (np.int16, "last year of the label (== age_low for a label in years)"),
    "gender": (np.int8, "0 male, 1 female"),
    "race": (np.int8, "index into the data set's own races"),
    "split": (np.int8, "index into SPLITS"),
    "detected": (np.bool_, "whether the detector found the face (else the photo was kept as it is)"),
    "det_score": (np.float32, "the face's detection score (0 when not detected)"),
    "n_faces": (np.int16, "faces the detector found in the photo"),
    "files": (np.str_, "the photo's path as its data set's labels name it"),
    "other_scores": (np.float32, "scores of the other detections in the photos (not per face)"),
    "other_dataset": (np.int8, "per other detection: its photo's data set"),
    "other_split": (np.int8, "per other detection: its photo's split"),
    "dataset_names": (np.str_, "the data sets the `dataset` indices name (not per face)"),
}


def write_pack(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write exactly FIELDS, each in its dtype, atomically (a pack exists only once complete)."""
    if set(arrays) != set(FIELDS):
        raise ValueError(f"a pack holds {sorted(FIELDS)}; missing {sorted(set(FIELDS) - set(arrays))}, "
                         f"unknown {sorted(set(arrays) - set(FIELDS))}")
    typed = {name: np.asarray(arrays[name]).astype(dtype, copy=False) for name, (dtype, _) in FIELDS.items()}
    with atomic_write(path) as tmp:
        np.savez(tmp, format_version=np.int64(PACK_VERSION), **typed)


class FacePack:
    """faces.npz in memory: encoded crops, labels, data set and split of every face.

    `dataset` and `other_dataset` are indices into the registry of data sets (`training.data.spec`),
    whatever order the pack stored them in.
    """

    def __init__(self, data_dir: str | Path) -> None:
        path = Path(data_dir)
        if path.is_dir():
            path = path / PACK_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run python -m training.prepare first")
        with np.load(path, allow_pickle=False) as z:
            version = int(z["format_version"]) if "format_version" in z else 1
            if "age_low" not in z or version > PACK_VERSION:
                raise ValueError(f"{path} is a pack of another format: run python -m training.prepare again")
            names = tuple(z["dataset_names"]) if version >= 2 else VERSION_1_DATASETS
            unknown = [n for n in names if n not in spec.names()]
            if unknown:
                raise ValueError(f"{path} holds faces of data set(s) {', '.join(unknown)}, which no module registers")
            registry_index = np.array([spec.index(n) for n in names], dtype=np.int64)
            self.blob = z["blob"]
            self.offsets = z["offsets"]
            self.dataset = registry_index[z["dataset"].astype(np.int64)]
            self.age_low = z["age_low"].astype(np.int64)
            self.age_high = z["age_high"].astype(np.int64)
            self.gender = z["gender"].astype(np.int64)
            self.race = z["race"].astype(np.int64)
            self.split = z["split"]
            self.detected = z["detected"]
            self.det_score = z["det_score"]
            self.files = z["files"]
            self.other_scores = z["other_scores"]
            self.other_dataset = registry_index[z["other_dataset"].astype(np.int64)]
            self.other_split = z["other_split"]
        self.path = path

    def indices(self, split: str, limit: int | None = None, dataset: str | None = None) -> np.ndarray:
        """Rows of one split (of one data set); with `limit`, a fixed random sample (files are sorted)."""
        mask = self.split == SPLITS.index(split)
        if dataset is not None:
            mask &= self.dataset == spec.index(dataset)
        idx = np.flatnonzero(mask)
        if limit and limit < len(idx):
            idx = np.sort(np.random.default_rng(0).choice(idx, size=limit, replace=False))
        return idx

    def image(self, i: int) -> Image.Image:
        data = self.blob[self.offsets[i] : self.offsets[i + 1]].tobytes()
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")
