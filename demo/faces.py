"""Face detection and aligned cropping: the one path from a photo to a face crop.

Training (`training.prepare`) and serving (`demo.predictor`) both call `FaceDetector.detect_batch`
(with its second look at faces cut by the image border) and `align_crop` with the same settings,
so the models see the same kind of crop in both.
The crop is then turned into a tensor by `to_model_input`, also shared.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from demo.engine import default_engine, export_mtcnn

# Crop geometry shared by training and serving: 128 px, framed like a UTKFace chip
# (see LANDMARK_TEMPLATE). A positive margin widens the framing by that fraction.
CROP_SIZE = 128
CROP_MARGIN = 0.0
# Detection runs on a copy whose longer side is at most this; boxes are mapped back.
DETECT_MAX_SIDE = 1280
MIN_FACE_SIZE = 20
# MTCNN's three stage thresholds. The first is raised from facenet-pytorch's 0.6 to 0.7: a sixth
# less detection time (fewer candidate boxes for the second stage to crop one by one); on 400
# validation photos it found the same faces, 95 % of them with identical landmarks.
DETECT_THRESHOLDS = (0.7, 0.7, 0.8)
# Webcam frames skip faces under 40 px: on a 640x480 frame that halves detection time
# (70.8 -> 35.2 ms median on 2 CPU threads, python -m tools.benchmark).
LIVE_MIN_FACE_SIZE = 40
# Detections scoring below this are not faces often enough to be shown (the app's slider and
# --min-score change it). Chosen on the training photos: see tools.detection_threshold.
MIN_SCORE = 0.90
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
        thresholds: Sequence[float] = DETECT_THRESHOLDS,
        batched_crops: bool = True,
        engine: str | None = None,
    ) -> None:
        from facenet_pytorch import MTCNN  # heavy import; keep module import cheap

        self.max_side = max_side
        self.min_face_size = min_face_size
        # demo.mtcnn (every resize read from one summed-area table) instead of facenet-pytorch's per-box loop.
        self.batched_crops = batched_crops
        self._mtcnn = MTCNN(
            keep_all=True,
            min_face_size=min_face_size,
            thresholds=list(thresholds),
            device=torch.device(device),
        )
        # The three networks on ONNX Runtime (demo.engine) where asked for, exported once, on the first photo;
        # facenet-pytorch's own loop (batched_crops=False, the benchmark's reference) keeps its modules.
        self.engine = "torch" if device != "cpu" or not batched_crops else (engine or default_engine("detector"))
        self._nets: tuple | None = None
        self._export_lock = threading.Lock()

    @property
    def nets(self) -> tuple:
        """P-Net, R-Net and O-Net as the detector runs them."""
        m = self._mtcnn
        if self.engine == "torch":
            return m.pnet, m.rnet, m.onet
        if self._nets is None:  # checked again under the lock: two first requests export once
            with self._export_lock:
                if self._nets is None:
                    self._nets = export_mtcnn(m.pnet, m.rnet, m.onet)
        return self._nets

    def detect(self, image: Image.Image) -> list[Face]:
        """All faces in an RGB image, highest detection score first."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[Image.Image]) -> list[list[Face]]:
        """Detect in several RGB images, then look again where the first pass is unreliable.

        MTCNN's landmarks scatter on a face cut by the image border (a close-up, a selfie, an
        already-cropped photo) and it often misses a face that fills the frame. So a face whose
        box touches the border is detected again in a black-padded window around it, and an image
        with no face at all is searched again with a black border around the whole of it. Photos
        whose faces are inside the frame pay nothing for this. Training crops its faces through
        this same method, so both see the same crops.
        """
        results = self._detect(images)
        windows: list[tuple[int, int | None, tuple[int, int, int, int]]] = []
        for i, (image, faces) in enumerate(zip(images, results)):
            if not faces:
                windows.append((i, None, _padded_frame(image.size)))
            windows += [(i, j, _window_around(f.box)) for j, f in enumerate(faces) if touches_border(f.box, image.size)]
        if not windows:
            return results
        # PIL fills the parts of a crop outside the image with black: the padding. Windows around a
        # face are shrunk to WINDOW_SIDE: O-Net places landmarks on a 48 px view of the face anyway,
        # and same-size windows share one MTCNN pass.
        crops, scales = [], []
        for i, j, window in windows:
            crop = images[i].crop(window)
            scale = min(1.0, WINDOW_SIDE / crop.width) if j is not None else 1.0
            if scale < 1.0:
                crop = crop.resize((WINDOW_SIDE, WINDOW_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
            crops.append(crop)
            scales.append(scale)
        again = self._detect(crops)
        for (i, j, (left, top, _, _)), scale, found in zip(windows, scales, again):
            found = [_mapped(f, scale, left, top) for f in found]
            if j is None:
                results[i] = found
            elif found:
                results[i][j] = min(found, key=lambda f: _distance(f.box, results[i][j].box))
        return [sorted(faces, key=lambda f: f.score, reverse=True) for faces in results]

    def _detect(self, images: Sequence[Image.Image]) -> list[list[Face]]:
        """One MTCNN pass; same-size images share it, large ones are downscaled and mapped back."""
        results: list[list[Face]] = [[] for _ in images]
        groups: dict[tuple[int, int], list[int]] = {}
        scaled: list[Image.Image] = []
        scales: list[float] = []
        for i, image in enumerate(images):
            if min(image.size) < self.min_face_size:
                # No face this small is searched for, and MTCNN fails on an image with no scale to search.
                continue
            scale = min(1.0, self.max_side / max(image.size))
            if scale < 1.0:
                size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
                image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            scaled.append(image)
            scales.append(scale)
            groups.setdefault(image.size, []).append(i)
        for indices in groups.values():
            batch = [scaled[i] for i in indices]
            for i, (b, p, pts) in zip(indices, self._mtcnn_pass(batch)):
                results[i] = _to_faces(b, p, pts, 1.0 / scales[i])
        return results

    def _mtcnn_pass(self, batch: list[Image.Image]) -> list[tuple]:
        """(boxes, scores, landmarks) per same-size image, None for an image without a face."""
        if not self.batched_crops:
            boxes, probs, points = self._mtcnn.detect(batch if len(batch) > 1 else batch[0], landmarks=True)
            return list(zip(boxes, probs, points)) if len(batch) > 1 else [(boxes, probs, points)]
        from demo.mtcnn import detect_face

        m = self._mtcnn
        pixels = torch.from_numpy(np.stack([np.asarray(image, dtype=np.uint8) for image in batch])).to(m.device)
        found = detect_face(pixels, m.min_face_size, *self.nets, m.thresholds, m.factor)
        return [(b[:, :4], b[:, 4], pts) if len(b) else (None, None, None) for b, pts in found]


# A face box closer than this fraction of its side to an image edge "touches the border".
BORDER_TOUCH = 0.1
# The window a border face is detected again in: its box grown by this fraction of its side on
# each side. An image with no face is searched again with a border of BORDER_PAD_FRAME of its
# longer side. (UTKFace chips, faces cut by all four edges, give landmarks 4x less scattered so.)
BORDER_PAD_FACE = 0.5
BORDER_PAD_FRAME = 0.25
WINDOW_SIDE = 192


def touches_border(box: tuple[float, float, float, float], size: tuple[int, int]) -> bool:
    x1, y1, x2, y2 = box
    slack = BORDER_TOUCH * min(x2 - x1, y2 - y1)
    return x1 < slack or y1 < slack or x2 > size[0] - slack or y2 > size[1] - slack


def _window_around(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * (0.5 + BORDER_PAD_FACE)
    return round(cx - half), round(cy - half), round(cx + half), round(cy + half)


def _padded_frame(size: tuple[int, int]) -> tuple[int, int, int, int]:
    pad = round(BORDER_PAD_FRAME * max(size))
    return -pad, -pad, size[0] + pad, size[1] + pad


def _mapped(face: Face, scale: float, dx: float, dy: float) -> Face:
    """A face found in a window (shrunk by `scale`, at offset dx, dy) in the photo's coordinates."""
    x1, y1, x2, y2 = (v / scale for v in face.box)
    landmarks = tuple((x / scale + dx, y / scale + dy) for x, y in face.landmarks) if face.landmarks else None
    return Face(box=(x1 + dx, y1 + dy, x2 + dx, y2 + dy), score=face.score, landmarks=landmarks)


def _distance(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return abs((a[0] + a[2]) - (b[0] + b[2])) + abs((a[1] + a[3]) - (b[1] + b[3]))


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
