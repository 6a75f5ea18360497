"""Face detection and aligned cropping: the one path from a photo to a face crop.

Training (`training.prepare`) and serving (`demo.predictor`) both call `FaceDetector.detect`
and `align_crop` with the same settings, so the models see the same kind of crop in both.
The crop is then turned into a tensor by `to_model_input`, also shared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# Crop geometry shared by training and serving: 128 px, framed like a UTKFace chip
# (see LANDMARK_TEMPLATE). A positive margin widens the framing by that fraction.
CROP_SIZE = 128
CROP_MARGIN = 0.0
# Detection runs on a copy whose longer side is at most this; boxes are mapped back.
DETECT_MAX_SIDE = 1280
MIN_FACE_SIZE = 20
# Webcam frames skip faces under 40 px: on a 640x480 frame that halves detection time
# (70.8 -> 35.2 ms median on 2 CPU threads, python -m demo.benchmark).
LIVE_MIN_FACE_SIZE = 40
# Faces smaller than this (in original pixels) are boxed but not judged: too few pixels.
MIN_JUDGE_SIZE = 32


@dataclass(frozen=True)
class Face:
    """One detected face in original image coordinates."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks: tuple[tuple[float, float], ...] | None  # eyes, nose, mouth corners

    @property
    def size(self) -> float:
        x1, y1, x2, y2 = self.box
        return min(x2 - x1, y2 - y1)


class FaceDetector:
    """MTCNN (facenet-pytorch) with large-image downscaling and results sorted by score."""

    def __init__(
        self,
        device: str = "cpu",
        min_face_size: int = MIN_FACE_SIZE,
        max_side: int = DETECT_MAX_SIDE,
        thresholds: Sequence[float] = (0.6, 0.7, 0.8),
    ) -> None:
        from facenet_pytorch import MTCNN  # heavy import; keep module import cheap

        self.max_side = max_side
        self._mtcnn = MTCNN(
            keep_all=True,
            min_face_size=min_face_size,
            thresholds=list(thresholds),
            device=torch.device(device),
        )

    def detect(self, image: Image.Image) -> list[Face]:
        """All faces in an RGB image, highest detection score first."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[Image.Image]) -> list[list[Face]]:
        """Detect in several RGB images; same-size images share one MTCNN pass."""
        results: list[list[Face]] = [[] for _ in images]
        groups: dict[tuple[int, int], list[int]] = {}
        scaled: list[Image.Image] = []
        scales: list[float] = []
        for i, image in enumerate(images):
            scale = min(1.0, self.max_side / max(image.size))
            if scale < 1.0:
                size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
                image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            scaled.append(image)
            scales.append(scale)
            groups.setdefault(image.size, []).append(i)
        for indices in groups.values():
            batch = [scaled[i] for i in indices]
            boxes, probs, points = self._mtcnn.detect(batch if len(batch) > 1 else batch[0], landmarks=True)
            if len(batch) == 1:
                boxes, probs, points = [boxes], [probs], [points]
            for i, b, p, pts in zip(indices, boxes, probs, points):
                results[i] = _to_faces(b, p, pts, 1.0 / scales[i])
        return results


def _to_faces(boxes, probs, points, inv_scale: float) -> list[Face]:
    # MTCNN returns None (not an empty array) when an image has no face.
    if boxes is None:
        return []
    faces = []
    for box, prob, pts in zip(boxes, probs, points):
        box = tuple(float(v) * inv_scale for v in box)
        landmarks = tuple((float(x) * inv_scale, float(y) * inv_scale) for x, y in pts)
        faces.append(Face(box=box, score=float(prob), landmarks=landmarks))
    return sorted(faces, key=lambda f: f.score, reverse=True)


# Where the five landmarks (eyes, nose tip, mouth corners) sit in a UTKFace chip, as fractions
# of its side: the median of MTCNN's landmarks over 509 chips padded by 50 px (std 0.02-0.04).
# Cropping photos to this template at margin 0 frames a face the way the training chips are.
LANDMARK_TEMPLATE = np.array(
    [[0.2983, 0.2922], [0.6946, 0.2935], [0.4936, 0.5266], [0.3199, 0.6943], [0.6715, 0.6948]]
)


def align_crop(
    image: Image.Image, face: Face, size: int = CROP_SIZE, margin: float = CROP_MARGIN
) -> Image.Image:
    """A `size` x `size` crop of the face, eyes level, framed by the landmark template.

    A similarity transform (scale, rotation, shift) maps the five landmarks onto the template
    shrunk by `1 + margin` around the crop centre. Parts outside the photo are black. Large
    faces are first reduced with a box filter, so the final bilinear sampling never skips
    pixels. Without landmarks the square around the box is used.
    """
    if face.landmarks:
        scale, rotation, shift = _similarity(np.array(face.landmarks), _template(size, margin))
    else:
        x1, y1, x2, y2 = face.box
        side = max(x2 - x1, y2 - y1) * (1 + margin)
        scale, rotation = size / side, np.eye(2)
        shift = np.array([size / 2, size / 2]) - scale * np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    # Inverse map: photo point = rotation.T @ (crop point - shift) / scale.
    inverse = rotation.T / scale
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=float)
    photo_corners = (corners - shift) @ inverse.T
    left, top = np.floor(photo_corners.min(axis=0)).astype(int) - 1
    right, bottom = np.ceil(photo_corners.max(axis=0)).astype(int) + 1
    region = image.crop((int(left), int(top), int(right), int(bottom)))
    reduce = max(1, int(1.0 / scale))
    if reduce > 1:
        region = region.reduce(reduce)
    # Crop pixel (u, v) samples region pixel ((photo point) - (left, top)) / reduce.
    a, b = inverse[0] / reduce
    d, e = inverse[1] / reduce
    c = (-(inverse[0] @ shift) - left) / reduce
    f = (-(inverse[1] @ shift) - top) / reduce
    return region.transform(
        (size, size), Image.Transform.AFFINE, (a, b, c, d, e, f), resample=Image.Resampling.BILINEAR
    )


def _template(size: int, margin: float) -> np.ndarray:
    return (LANDMARK_TEMPLATE - 0.5) / (1 + margin) * size + size / 2


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity dst ~ scale * rotation @ src + shift (Umeyama, no reflection)."""
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    u, sigma, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(sigma) @ sign) / src_c.var(axis=0).sum())
    shift = dst_mean - scale * rotation @ src_mean
    return scale, rotation, shift


def to_model_input(
    crops: Sequence[Image.Image | np.ndarray | torch.Tensor],
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Crops (PIL, HxWx3 uint8 arrays, or 3xHxW uint8 tensors) -> normalised float batch.

    Training applies augmentation to the uint8 crop first and then calls this same function.
    """
    tensors = [_as_uint8_chw(c) for c in crops]
    batch = torch.stack(tensors).float().div_(255.0)
    if batch.shape[-1] != input_size or batch.shape[-2] != input_size:
        batch = F.interpolate(batch, size=(input_size, input_size), mode="bilinear", antialias=True)
    mean_t = torch.tensor(mean, dtype=batch.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=batch.dtype).view(1, 3, 1, 1)
    return (batch - mean_t) / std_t


def _as_uint8_chw(crop: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(crop, torch.Tensor):
        return crop
    array = np.asarray(crop.convert("RGB") if isinstance(crop, Image.Image) else crop, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)
