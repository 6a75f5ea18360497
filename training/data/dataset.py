"""The packed face crops as a torch Dataset with augmentation, and the mixed sampler over data sets."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2
from tqdm import tqdm

from demo.faces import to_model_input
from training.data import spec
from training.data.pack import FacePack


@dataclass(frozen=True)
class AugmentConfig:
    """Train-time augmentation of the 128 px crop; all on by default, each can be switched off."""

    flip: bool = field(default=True, metadata={"help": "mirror half of the faces"})
    rotate_degrees: float = field(default=10.0, metadata={"help": "rotate by up to this many degrees"})
    scale_jitter: float = field(default=0.1, metadata={"help": "scale the crop by a factor in [1 - s, 1 + s]"})
    shift_jitter: float = field(default=0.05, metadata={"help": "shift by up to this fraction of the side"})
    brightness: float = field(default=0.3, metadata={"help": "brightness jitter"})
    contrast: float = field(default=0.3, metadata={"help": "contrast jitter"})
    # Faces from the wild (phones, webcams, the web): each of these is applied to a face with this probability;
    # 0 (the default, and every run before round six) leaves them out.
    blur: float = field(default=0.0, metadata={"help": "probability of a Gaussian blur (sigma 0.3-2 px): "
                                                       "out-of-focus, moving and upscaled small faces"})
    jpeg: float = field(default=0.0, metadata={"help": "probability of re-encoding as JPEG at quality 20-80"})
    low_light: float = field(default=0.0, metadata={"help": "probability of darkening the face (gamma 1.3-2.5, "
                                                            "mid-tones down, highlights kept)"})
    occlude: float = field(default=0.0, metadata={"help": "probability of hiding a rectangle of 2-12 %% of the "
                                                          "crop (hands, glasses, masks, other heads)"})
    enabled: bool = field(default=True, metadata={"help": "augment the training faces at all", "flag": "--augment"})

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
        if self.low_light:
            steps.append(v2.RandomApply([Darken(1.3, 2.5)], p=self.low_light))
        if self.blur:
            steps.append(v2.RandomApply([v2.GaussianBlur(kernel_size=9, sigma=(0.3, 2.0))], p=self.blur))
        if self.jpeg:
            steps.append(v2.RandomApply([Recompress(20, 80)], p=self.jpeg))
        if self.occlude:
            steps.append(v2.RandomErasing(p=self.occlude, scale=(0.02, 0.12), ratio=(0.3, 3.3), value=0))
        return v2.Compose(steps) if steps else None


class Recompress(v2.Transform):
    """Re-encode a uint8 image as JPEG at a random quality (by PIL: torchvision's own codec is deprecated)."""

    def __init__(self, low: int, high: int) -> None:
        super().__init__()
        self.low, self.high = low, high

    def make_params(self, flat_inputs: list) -> dict:
        return {"quality": int(torch.randint(self.low, self.high + 1, ()))}

    def transform(self, inpt, params: dict):
        buffer = io.BytesIO()
        Image.fromarray(inpt.permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=params["quality"])
        return torch.from_numpy(np.array(Image.open(buffer))).permute(2, 0, 1)


class Darken(v2.Transform):
    """A random gamma above 1 on a uint8 image: an under-exposed photo, where ColorJitter's brightness scales
    every level alike (and so also dims the highlights an under-exposed face keeps)."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        self.low, self.high = low, high

    def make_params(self, flat_inputs: list) -> dict:
        return {"gamma": self.low + (self.high - self.low) * float(torch.rand(()))}

    def transform(self, inpt, params: dict):
        return v2.functional.adjust_gamma(inpt, params["gamma"])


class FaceDataset(Dataset):
    """(input tensor, age_low, age_high, gender, race, data set) for some faces, preprocessed like the app's.

    With `in_memory` (the default), every crop is decoded once, up front, into one uint8 tensor
    (128x128x3 bytes a face, 49 KB), so no epoch decodes WebP again and data-loader workers forked
    later share the tensor instead of each keeping a copy of their own: fastest for sets that fit.
    Without it, each crop is decoded from the pack as it is drawn (best in loader workers, on
    machines with cores to spare), and memory stays the size of the compressed pack (about 18 KB a
    face) however many faces there are.
    """

    def __init__(self, pack: FacePack, indices: np.ndarray, input_size: int, mean, std,
                 augment: AugmentConfig | None = None, in_memory: bool = True) -> None:
        self.pack = pack
        self.indices = indices
        self.input_size, self.mean, self.std = input_size, mean, std
        self.transform = augment.transform() if augment else None
        self.crops = decode_crops(pack, indices) if in_memory else None

    def __len__(self) -> int:
        return len(self.indices)

    def crop(self, k: int) -> torch.Tensor:
        """The k-th face's crop, 3xHxW uint8."""
        if self.crops is None:
            return torch.from_numpy(np.array(self.pack.image(int(self.indices[k])))).permute(2, 0, 1)
        return self.crops[k]

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int, int, int, int, int]:
        i = int(self.indices[k])
        crop = self.crop(k)
        if self.transform is not None:
            crop = self.transform(crop)
        x = to_model_input([crop], self.input_size, self.mean, self.std)[0]
        p = self.pack
        return x, int(p.age_low[i]), int(p.age_high[i]), int(p.gender[i]), int(p.race[i]), int(p.dataset[i])


def decode_crops(pack: FacePack, indices: np.ndarray) -> torch.Tensor:
    """The crops of `indices` as one N x 3 x H x W uint8 tensor (all crops of a pack share one size)."""
    first = np.asarray(pack.image(int(indices[0]))) if len(indices) else np.zeros((0, 0, 3), np.uint8)
    crops = torch.empty((len(indices), 3, *first.shape[:2]), dtype=torch.uint8)
    for k, i in enumerate(tqdm(indices, desc="decoding faces", leave=False, disable=len(indices) < 5000)):
        crops[k] = torch.from_numpy(np.array(pack.image(int(i)))).permute(2, 0, 1)
    return crops


def mixed_order(datasets: np.ndarray, shares: dict[str, float], size: int, generator: torch.Generator) -> np.ndarray:
    """Positions into `datasets` for one epoch of `size` draws, each data set taking its share.

    Within a data set, faces are drawn without replacement, reshuffled when all have been seen, so a
    small set given a large share repeats evenly rather than at random. Shares are normalised
    over the data sets present; with no shares, each keeps its natural proportion.
    """
    names = spec.names()
    present = [d for d in range(len(names)) if (datasets == d).any()]
    if not shares:
        return torch.randperm(len(datasets), generator=generator).numpy()[:size]
    unknown = set(shares) - set(names)
    if unknown:
        raise ValueError(f"unknown data set(s) in the mix: {sorted(unknown)}; known: {', '.join(names)}")
    weights = np.array([shares.get(names[d], 0.0) for d in present], dtype=float)
    if weights.sum() <= 0:
        raise ValueError(f"the mix {shares} gives no share to the data sets present")
    counts = np.floor(weights / weights.sum() * size).astype(int)
    counts[np.argmax(weights)] += size - counts.sum()
    picks = []
    for d, count in zip(present, counts):
        if count == 0:  # a data set given no share
            continue
        mine = np.flatnonzero(datasets == d)
        rounds = -(-count // len(mine))
        order = np.concatenate([mine[torch.randperm(len(mine), generator=generator).numpy()] for _ in range(rounds)])
        picks.append(order[:count])
    everything = np.concatenate(picks)
    return everything[torch.randperm(len(everything), generator=generator).numpy()]
