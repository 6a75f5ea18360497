"""Faces followed from frame to frame (webcam, video), each model's answers averaged over a face's recent frames.

A small tracker, not a tracker package: a camera shows a few faces at a few frames a second. Each
track remembers where its face was and how fast it moved, per second of the frames' own times; a
new frame's detections are assigned to the tracks (an optimal assignment, `assign`) by how far
each detection lies from where the track's face should be now, measured in face widths, so a face
that moves half its width between frames keeps its number at 4 frames a second as at 8, a frame
dropped under load does not misplace it, and two faces crossing each other keep their own numbers
(each is where its own motion puts it; the place the other one just left is no shortcut).
(ByteTrack and the like earn their keep on crowds at video rates, where appearance and low-score
detections matter.)

The box drawn is the one detected in this frame: averaging positions makes a moving face's box
trail behind it. What is smoothed is the answers: each model's answers are combined over the last
`window` frames of a face. The age distributions are averaged (a mixture, not a product: successive
frames of one face are near-copies, not independent evidence, so the 80 % range keeps its
calibrated width instead of shrinking towards overconfidence), and so is P(female), whose call
(female, male or unsure) moves only once P(female) is clearly past the threshold (HOLD_MARGIN).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from demo.heads import AGE_MIN, gender_call, point_estimate
from demo.predictor import FaceResult, ImageResult, ModelAnswer

# A detection continues a track when its centre lies within this many of the track's face widths of
# where the face should be (moved on at its speed), plus as far as it was expected to move (Track.gate).
MAX_JUMP = 1.0
# One face's detected width changes by at most this factor between two frames.
MAX_SIZE_CHANGE = 1.6
# Given times, how much a face's speed may change between two frames, in face widths a second: where it may be
# grows with the time since it was seen (a face first seen, its speed unknown, may already be moving; frames
# further apart under load leave it more room). Not used by a tracker given no times (frames are its clock).
SPEED_SLACK = 2.0
# Frames a track survives without a detection (a blink of the detector) before it is dropped, for a tracker
# given no times; given times, it survives MAX_GONE_S seconds: a face hidden behind another one walking past, or
# turned away for a moment, comes back with its number.
MAX_MISSED = 3
MAX_GONE_S = 2.0
# Frames a face's answers are averaged over.
WINDOW = 8
# How much of a new step's displacement the speed estimate takes in (the rest: the speed so far).
SPEED_GAIN = 0.7
# How far past a model's unsure threshold (in gender confidence) the averaged P(female) must move before
# the gender text shown changes: a still face near the threshold keeps its text (demo.heads.gender_call).
HOLD_MARGIN = 0.05

Box = tuple[float, float, float, float]


def centre(box: Box) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def width(box: Box) -> float:
    return max(1e-6, box[2] - box[0])


def assign(cost: np.ndarray, gate: float) -> list[tuple[int, int]]:
    """The (row, column) pairs of least total cost, each row and column used at most once, and no
    pair costing more than `gate` (the Hungarian method, O(n^2 m); n and m are a few faces here)."""
    if cost.size == 0:
        return []
    transposed = cost.shape[0] > cost.shape[1]
    c = np.where(cost > gate, gate * 1e3 + 1, cost)  # gated pairs cost more than any allowed assignment
    c = c.T if transposed else c
    n, m = c.shape
    # Potentials u (rows), v (columns); way[j]: the previous column on the augmenting path to j.
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    owner, way = np.zeros(m + 1, dtype=int), np.zeros(m + 1, dtype=int)  # owner[j]: row (1-based) of column j
    for i in range(1, n + 1):
        owner[0], j0 = i, 0
        least, used = np.full(m + 1, np.inf), np.zeros(m + 1, dtype=bool)
        while owner[j0]:
            used[j0] = True
            i0, delta, j1 = owner[j0], np.inf, 0
            for j in range(1, m + 1):
                if not used[j]:
                    reduced = c[i0 - 1, j - 1] - u[i0] - v[j]
                    if reduced < least[j]:
                        least[j], way[j] = reduced, j0
                    if least[j] < delta:
                        delta, j1 = least[j], j
            for j in range(m + 1):
                if used[j]:
                    u[owner[j]] += delta
                    v[j] -= delta
                else:
                    least[j] -= delta
            j0 = j1
        while j0:  # flip the augmenting path
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    pairs = [(owner[j] - 1, j - 1) for j in range(1, m + 1) if owner[j]]
    pairs = [(j, i) if transposed else (i, j) for i, j in pairs]
    return sorted((i, j) for i, j in pairs if cost[i, j] <= gate)


@dataclass
class Track:
    number: int  # shown on the face while it stays
    box: Box  # where it was last detected
    seen_at: float = 0.0  # when: seconds (or frames, for a tracker given no times)
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # centre's pixels a second (or a frame)
    answers: deque = field(default_factory=lambda: deque(maxlen=WINDOW))  # per frame: model key -> ModelAnswer
    missed: int = 0
    genders: dict = field(default_factory=dict)  # model key -> the gender call shown last (held near the threshold)

    def expected(self, now: float) -> np.ndarray:
        """Where the face should be at `now`, moved on at its speed since it was last seen."""
        return centre(self.box) + self.velocity * (now - self.seen_at)

    def distance(self, box: Box, now: float) -> float:
        """How far a detection lies from where this face should be now, in its face widths."""
        return float(np.linalg.norm(centre(box) - self.expected(now))) / width(self.box)

    def gate(self, now: float, max_jump: float, slack: float = 0.0) -> float:
        """The farthest (in face widths) a detection may lie from where this face should be and still be it:
        `max_jump`, as far again as the face was expected to move (it may have stopped or turned), and `slack`
        face widths per unit of time since it was seen (SPEED_SLACK)."""
        elapsed = now - self.seen_at
        return max_jump + (float(np.linalg.norm(self.velocity)) / width(self.box) + slack) * elapsed

    def follow(self, box: Box, now: float) -> None:
        step = (centre(box) - centre(self.box)) / max(now - self.seen_at, 1e-6)
        self.velocity = SPEED_GAIN * step + (1 - SPEED_GAIN) * self.velocity
        self.box, self.missed, self.seen_at = box, 0, now


class FaceTracker:
    """One per stream: `update` turns a frame's result into one with steady numbers and averaged answers."""

    def __init__(self, window: int = WINDOW, max_jump: float = MAX_JUMP, max_missed: int = MAX_MISSED,
                 max_gone_s: float = MAX_GONE_S, speed_slack: float = SPEED_SLACK) -> None:
        self.window, self.max_jump, self.max_missed, self.max_gone_s = window, max_jump, max_missed, max_gone_s
        self.speed_slack = speed_slack
        self.tracks: list[Track] = []
        self._next_number = 1
        self._frames = 0  # the clock of a tracker given no times: frames

    @classmethod
    def continuing(cls, tracks: list[Track], numbered: int = 0, **settings) -> FaceTracker:
        """A tracker that goes on from `tracks` (a clip judged again from part-way): each face keeps its number,
        and a newcomer gets the next after the highest given so far (`numbered`, or the tracks'); their answers
        are averaged afresh."""
        tracker = cls(**settings)
        tracker.tracks = [replace(t, answers=deque(maxlen=tracker.window)) for t in tracks]
        tracker._next_number = max([numbered, *(t.number for t in tracks)]) + 1
        return tracker

    def match(self, boxes: list[Box], now: float, slack: float = 0.0) -> dict[int, int]:
        """Detection index -> track index, for the detections that continue a track: the assignment of least
        total distance from where each face should be (each distance over its track's gate)."""
        cost = np.full((len(boxes), len(self.tracks)), np.inf)
        for fi, box in enumerate(boxes):
            for ti, track in enumerate(self.tracks):
                ratio = width(box) / width(track.box)
                if 1 / MAX_SIZE_CHANGE <= ratio <= MAX_SIZE_CHANGE:
                    cost[fi, ti] = track.distance(box, now) / track.gate(now, self.max_jump, slack)
        return dict(assign(np.where(np.isfinite(cost), cost, 2.0), 1.0))

    def update(self, result: ImageResult, at: float | None = None) -> ImageResult:
        """The frame's faces matched to the tracks, numbered by track, with their answers averaged. `at`: the
        frame's time in seconds (its timestamp in a clip, its arrival on a camera), so that motion is per second
        and a frame dropped under load does not misplace where a face should be; without it, frames count."""
        self._frames += 1
        now = self._frames if at is None else at
        if at is not None:  # a face gone longer than that is not waited for
            self.tracks = [t for t in self.tracks if now - t.seen_at <= self.max_gone_s]
        matched = self.match([f.face.box for f in result.faces], now, 0.0 if at is None else self.speed_slack)
        for ti, track in enumerate(self.tracks):
            if ti not in matched.values():
                track.missed += 1
        # New faces are numbered from left to right, as a reader scans the frame.
        new = sorted((fi for fi in range(len(result.faces)) if fi not in matched),
                     key=lambda fi: result.faces[fi].face.box[0])
        for fi in new:
            track = Track(self._next_number, result.faces[fi].face.box, seen_at=now,
                          answers=deque(maxlen=self.window))
            self._next_number += 1
            self.tracks.append(track)
            matched[fi] = len(self.tracks) - 1
        faces = []
        for fi, face in enumerate(result.faces):
            track = self.tracks[matched[fi]]
            if fi not in new:
                track.follow(face.face.box, now)
            if face.judged:
                track.answers.append(face.answers)
            faces.append(FaceResult(track.number, face.face, face.crop, self._averaged(track) if face.judged else {}))
        if at is None:
            self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        return ImageResult(size=result.size, faces=sorted(faces, key=lambda f: f.number),
                           timings_ms=result.timings_ms, below_min_score=result.below_min_score,
                           min_score=result.min_score, min_face_size=result.min_face_size)

    @staticmethod
    def _averaged(track: Track) -> dict[str, ModelAnswer]:
        averaged = {key: average([frame[key] for frame in track.answers if key in frame], track.genders.get(key))
                    for key in track.answers[-1]}
        track.genders.update({key: answer.gender for key, answer in averaged.items()})
        return averaged


def average(answers: list[ModelAnswer], held_gender: str | None = None) -> ModelAnswer:
    """One model's answers for one face over several frames: the age and range of their mean distribution
    (read as the model reads its own), and the mean P(female), its call held still near
    the model's unsure threshold when the call shown so far is `held_gender` (HOLD_MARGIN)."""
    last = answers[-1]
    p_female = None if last.p_female is None else float(np.mean([a.p_female for a in answers]))
    held = None if p_female is None else gender_call(p_female, last.unsure_below, held_gender, HOLD_MARGIN)
    if last.age_probs is None:
        return ModelAnswer(last.age, last.age_low, last.age_high, p_female, unsure_below=last.unsure_below,
                           held_gender=held)
    probs = np.mean([a.age_probs for a in answers], axis=0)
    rule = last.range_rule
    if rule.estimate == "mean":
        # The mean of the mixture of the frames' (untempered) distributions is the mean of their means (a
        # RangeRule's probs are tempered: its estimates are not read from them).
        age = float(np.mean([a.age for a in answers]))
    else:  # a SpreadRule's probs are untempered: the mixture's median, as one frame's is read
        age = float(point_estimate(torch.from_numpy(probs), AGE_MIN, rule.estimate))
    low, high = (int(v) for v in rule.read(torch.from_numpy(probs), torch.tensor(age, dtype=torch.float64), AGE_MIN))
    return ModelAnswer(age, low, high, p_female, age_probs=probs, range_rule=rule,
                       unsure_below=last.unsure_below, held_gender=held)
