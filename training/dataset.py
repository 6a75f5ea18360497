"""The packed face crops written by training.prepare, as a torch Dataset with augmentation."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from demo.faces import to_model_input
from training.prepare import PACK_NAME
from training.utkface import SPLITS


@dataclass(frozen=True)
class AugmentConfig:
    """Train-time augmentation of the 128 px crop; all on by default, each can be switched off."""

    flip: bool = True
    rotate_degrees: float = 10.0
    scale_jitter: float = 0.1  # crop scale in [1 - s, 1 + s]
    shift_jitter: float = 0.05  # fraction of the side
    brightness: float = 0.3
    contrast: float = 0.3
    enabled: bool = True

    def transform(self) -> v2.Transform | None:
        if not self.enabled:
            return None
        steps: list[v2.Transform] = []
        if self.flip:
            steps.append(v2.RandomHorizontalFlip())
        if self.rotate_degrees or self.scale_jitter or self.shift_jitter:
            steps.append(v2.RandomAffine(
                degrees=self.rotate_degrees,
                translate=(self.shift_jitter, self.shift_jitter),
                scale=(1 - self.scale_jitter, 1 + self.scale_jitter),
                interpolation=v2.InterpolationMode.BILINEAR,
            ))
        if self.brightness or self.contrast:
            steps.append(v2.ColorJitter(brightness=self.brightness, contrast=self.contrast))
        return v2.Compose(steps) if steps else None


class FacePack:
    """faces.npz in memory: encoded crops, labels and splits. Loaded without pickle."""

    def __init__(self, data_dir: str | Path) -> None:
        path = Path(data_dir)
        if path.is_dir():
            path = path / PACK_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run python -m training.prepare first")
        with np.load(path, allow_pickle=False) as z:
            self.blob = z["blob"]
            self.offsets = z["offsets"]
            self.age = z["age"].astype(np.int64)
            self.gender = z["gender"].astype(np.int64)
            self.race = z["race"].astype(np.int64)
            self.split = z["split"]
            self.detected = z["detected"]
            self.files = z["files"]
        self.path = path

    def indices(self, split: str, limit: int | None = None) -> np.ndarray:
        """Rows of one split; with `limit`, a fixed random sample (files are sorted by age)."""
        idx = np.flatnonzero(self.split == SPLITS.index(split))
        if limit and limit < len(idx):
            idx = np.sort(np.random.default_rng(0).choice(idx, size=limit, replace=False))
        return idx

    def image(self, i: int) -> Image.Image:
        data = self.blob[self.offsets[i] : self.offsets[i + 1]].tobytes()
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")


class FaceDataset(Dataset):
    """(input tensor, age, gender, race) for one split, preprocessed like the app's faces."""

    def __init__(self, pack: FacePack, indices: np.ndarray, input_size: int, mean, std,
                 augment: AugmentConfig | None = None) -> None:
        self.pack = pack
        self.indices = indices
        self.input_size, self.mean, self.std = input_size, mean, std
        self.transform = augment.transform() if augment else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int, int, int]:
        i = int(self.indices[k])
        crop = torch.from_numpy(np.asarray(self.pack.image(i)).copy()).permute(2, 0, 1)
        if self.transform is not None:
            crop = self.transform(crop)
        x = to_model_input([crop], self.input_size, self.mean, self.std)[0]
        return x, int(self.pack.age[i]), int(self.pack.gender[i]), int(self.pack.race[i])
