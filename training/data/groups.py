"""Which images must share a split: near-copies of one photo, and photos of one adult.

A content hash keeps only byte-identical files together, yet data sets hold the same photo
resized or re-encoded (UTKFace has pairs labelled years apart) and the same person photographed
again. A model scored on such a face has seen it, or its owner, in training. So faces are linked:

- near-copies, children included: the photos look alike (the correlation of their 24x24 grey
  thumbnails at least `same_photo`: a resized or re-encoded copy), or their aligned crops do (at
  least `same_crop`, or `same_crop_with_descriptor` where the face descriptors also agree, closer
  than `descriptor_agrees`: landmark alignment brings a slightly cropped copy back to nearly the
  same crop, where the photos' thumbnails no longer agree);
- one person: face descriptors (dlib's face-recognition network, on the crop) closer than
  `same_person`, both faces labelled `adult_age` or older. Children's descriptors lie close
  together whoever the child, and would chain unrelated children into large groups.

Linked faces form groups (connected components), and a whole group takes the split of its first
image's content hash: an image linked to no other keeps the split it always had
(`records.assign_split`), and adding images rarely moves old ones.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from PIL import Image

from training.data.records import Record, assign_split

log = logging.getLogger(__name__)

THUMB_SIDE = 24
# Crops (N x H x W x 3 uint8) -> face descriptors (N x D float32), people apart by Euclidean distance.
Describer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Grouping:
    """When two faces are linked. Measured on the 56,374 faces of the three shared archives
    (docs/training.md, "Honest splits"): photos whose thumbnails correlate 0.98 or more, 569 pairs,
    2 of them with descriptors over 0.5 apart (at 0.95, 313 of 971: other photos framed alike);
    crops correlating 0.97, 307 pairs in groups of at most 3; crops correlating 0.88 with
    descriptors at most 0.3 apart, 710 pairs in groups of at most 4, 180 with a child. Adults
    closer than 0.3 link 1,650 pairs, the largest group 16 photos; at 0.33 one group chains 164."""

    same_photo: float = 0.98  # photo thumbnail correlation from which two photos are one
    same_crop: float = 0.97  # crop thumbnail correlation from which two faces are one photo's
    same_crop_with_descriptor: float = 0.88  # ... and from which they are, if their descriptors agree
    descriptor_agrees: float = 0.3
    same_person: float = 0.3  # descriptor distance under which two adults are one person
    adult_age: int = 18  # faces whose label starts here or later are linked by descriptor


def photo_thumbnails(blobs: list[bytes]) -> np.ndarray:
    """`thumbnails` of whole photos (encoded bytes), decoded at a reduced size where the format allows."""
    small = []
    for blob in blobs:
        with Image.open(io.BytesIO(blob)) as im:
            im.draft("RGB", (2 * THUMB_SIDE, 2 * THUMB_SIDE))  # a JPEG decodes at 1/2 to 1/8 of its size
            small.append(np.asarray(im.convert("RGB").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)))
    return thumbnails(np.stack(small) if small else np.zeros((0, THUMB_SIDE, THUMB_SIDE, 3), np.uint8))


def thumbnails(crops: np.ndarray) -> np.ndarray:
    """Each crop as a 24x24 grey thumbnail, centred and scaled to unit length (a dot product is a correlation)."""
    thumbs = np.stack([np.asarray(Image.fromarray(c).convert("L").resize((THUMB_SIDE, THUMB_SIDE),
                                                                          Image.Resampling.BOX), dtype=np.float32)
                       for c in crops]).reshape(len(crops), -1) if len(crops) else np.zeros((0, THUMB_SIDE**2))
    thumbs = thumbs - thumbs.mean(axis=1, keepdims=True)
    return (thumbs / np.maximum(np.linalg.norm(thumbs, axis=1, keepdims=True), 1e-6)).astype(np.float32)


def close_pairs(features: np.ndarray, threshold: float, *, distance: bool, block: int = 4096) -> np.ndarray:
    """Pairs (i < j) of rows whose similarity (dot product) is >= threshold, or with `distance`,
    whose Euclidean distance is <= threshold; K x 2. Blockwise, so 60,000 rows need no 60,000^2 matrix."""
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    sq = (x * x).sum(dim=1)
    found = []
    for start in range(0, len(x), block):
        rows = x[start : start + block]
        score = rows @ x.T
        if distance:
            close = (sq[start : start + block, None] + sq[None, :] - 2 * score) <= threshold**2
        else:
            close = score >= threshold
        i, j = torch.nonzero(close, as_tuple=True)
        i = i + start
        keep = i < j
        found.append(torch.stack([i[keep], j[keep]], dim=1))
    return torch.cat(found).numpy() if found else np.zeros((0, 2), dtype=np.int64)


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """For each of n items, the smallest index of its connected component under `pairs` (union-find)."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        a, b = root(int(i)), root(int(j))
        if a != b:
            parent[max(a, b)] = min(a, b)
    return np.array([root(i) for i in range(n)])


def links(adult: np.ndarray, features: dict[str, np.ndarray], rule: Grouping) -> tuple[np.ndarray, np.ndarray]:
    """Near-copy and same-person pairs (K x 2 each) among faces with `features` (photo_thumbs,
    crop_thumbs and, if present, descriptors, row for row); `adult` says whose descriptors link."""
    crop_thumbs, descriptors = features["crop_thumbs"], features.get("descriptors")
    near = [close_pairs(features["photo_thumbs"], rule.same_photo, distance=False),
            close_pairs(crop_thumbs, rule.same_crop, distance=False)]
    same = np.zeros((0, 2), dtype=np.int64)
    if descriptors is not None:
        alike = close_pairs(crop_thumbs, rule.same_crop_with_descriptor, distance=False)
        apart = np.linalg.norm(descriptors[alike[:, 0]] - descriptors[alike[:, 1]], axis=1)
        near.append(alike[apart <= rule.descriptor_agrees])
        adults = np.flatnonzero(adult)
        same = adults[close_pairs(descriptors[adults], rule.same_person, distance=True)]
    return np.unique(np.concatenate(near), axis=0), same


def group_splits(records: list[Record], features: dict[str, np.ndarray], seed: int,
                 rule: Grouping) -> tuple[list[Record], dict]:
    """`records` with every group of linked faces in one split, and what was grouped.

    `features` are row for row with `records` (`links`); without descriptors only photos and crops
    alike are linked.
    """
    near, same = links(np.array([r.age_low >= rule.adult_age for r in records], dtype=bool), features, rule)
    first = components(len(records), np.concatenate([near, same]))
    sizes = np.bincount(first, minlength=len(records))
    grouped = [replace(r, split=assign_split(records[f].sha256, seed)) for r, f in zip(records, first)]
    summary = {
        "near_copy_pairs": len(near),
        "same_person_pairs": len(same),
        "images_grouped": int((sizes[first] > 1).sum()),
        "groups": int((sizes > 1).sum()),
        "largest_group": int(sizes.max()) if len(sizes) else 0,
        "split_moved": sum(a.split != b.split for a, b in zip(records, grouped)),
        "rule": {**asdict(rule), "descriptors": "descriptors" in features},
    }
    log.info("split groups: %d near-copy and %d same-person pairs put %d images into %d groups (largest %d); "
             "%d images changed split", summary["near_copy_pairs"], summary["same_person_pairs"],
             summary["images_grouped"], summary["groups"], summary["largest_group"], summary["split_moved"])
    return grouped, summary
