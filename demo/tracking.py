"""Faces followed from webcam frame to frame, each model's answers averaged over a face's recent frames.

A small box-overlap matcher, not a tracker package: the webcam shows a few faces at a few frames a
second, so greedy matching by intersection over union is enough, costs microseconds, and adds no
dependency. (ByteTrack and the like earn their keep on crowds at video rates, where motion models
and low-score detections matter.)

Each model's answers are combined over the last `window` frames of a face: the age distributions
are averaged (a mixture, not a product: successive frames of one face are near-copies, not
independent evidence, so the 80 % range keeps its calibrated width instead of shrinking towards
overconfidence), and so is P(female). The box is averaged too, so it stops jittering.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from demo.faces import Face
from demo.heads import AGE_MIN
from demo.predictor import FaceResult, ImageResult, ModelAnswer

# Matching: a detection continues a track whose last box overlaps it by at least this much.
MIN_IOU = 0.3
# Frames a track survives without a detection (a blink of the detector) before it is dropped.
MAX_MISSED = 3
# Frames a face's answers are averaged over.
WINDOW = 8


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    number: int  # shown on the face while it stays
    boxes: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    answers: deque = field(default_factory=lambda: deque(maxlen=WINDOW))  # per frame: model key -> ModelAnswer
    missed: int = 0

    @property
    def box(self) -> tuple[float, float, float, float]:
        return tuple(np.mean(self.boxes, axis=0).tolist())


class FaceTracker:
    """One per webcam session: `update` turns a frame's result into one with steady numbers and answers."""

    def __init__(self, window: int = WINDOW, min_iou: float = MIN_IOU, max_missed: int = MAX_MISSED) -> None:
        self.window, self.min_iou, self.max_missed = window, min_iou, max_missed
        self.tracks: list[Track] = []
        self._next_number = 1

    def update(self, result: ImageResult) -> ImageResult:
        """The frame's faces matched to the tracks, numbered by track, with averaged boxes and answers."""
        pairs = sorted(((iou(t.boxes[-1], f.face.box), ti, fi) for ti, t in enumerate(self.tracks)
                        for fi, f in enumerate(result.faces)), reverse=True)
        matched: dict[int, int] = {}  # face index -> track index
        used: set[int] = set()
        for overlap, ti, fi in pairs:
            if overlap < self.min_iou:
                break
            if ti not in used and fi not in matched:
                matched[fi], used = ti, used | {ti}
        for ti, track in enumerate(self.tracks):
            track.missed = 0 if ti in used else track.missed + 1
        faces = []
        for fi, face in enumerate(result.faces):
            if fi in matched:
                track = self.tracks[matched[fi]]
            else:
                track = Track(self._next_number, deque(maxlen=self.window), deque(maxlen=self.window))
                self._next_number += 1
                self.tracks.append(track)
            track.boxes.append(face.face.box)
            if face.judged:
                track.answers.append(face.answers)
            steady = Face(box=track.box, score=face.face.score, landmarks=face.face.landmarks)
            faces.append(FaceResult(track.number, steady, face.crop, self._averaged(track) if face.judged else {}))
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        return ImageResult(size=result.size, faces=sorted(faces, key=lambda f: f.number),
                           timings_ms=result.timings_ms, below_min_score=result.below_min_score,
                           min_score=result.min_score, min_face_size=result.min_face_size)

    @staticmethod
    def _averaged(track: Track) -> dict[str, ModelAnswer]:
        keys = track.answers[-1].keys()
        return {key: average([frame[key] for frame in track.answers if key in frame]) for key in keys}


def average(answers: list[ModelAnswer]) -> ModelAnswer:
    """One model's answers for one face over several frames: the mean age, the range of the mean
    distribution (read as the model reads its own), and the mean P(female)."""
    p_female = None if answers[-1].p_female is None else float(np.mean([a.p_female for a in answers]))
    if answers[-1].age_probs is None:
        return ModelAnswer(answers[-1].age, answers[-1].age_low, answers[-1].age_high, p_female)
    probs = np.mean([a.age_probs for a in answers], axis=0)
    rule = answers[-1].range_rule
    # The mean of the mixture of the frames' (untempered) distributions is the mean of their means.
    age = float(np.mean([a.age for a in answers]))
    low, high = (int(i) + AGE_MIN for i in rule.read(torch.from_numpy(probs), torch.tensor(age)))
    return ModelAnswer(age, low, high, p_female, age_probs=probs, range_rule=rule)
