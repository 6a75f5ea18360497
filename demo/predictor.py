"""Photo in, plain result objects out: detect every face, crop, run both models batched.

No Gradio here: the app, the batch CLI, the benchmark and the tests all use `Predictor`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from demo.checkpoint import LoadedModel
from demo.faces import MIN_FACE_SIZE, MIN_JUDGE_SIZE, MIN_SCORE, Face, FaceDetector, align_crop, to_model_input
from demo.heads import DEFAULT_RANGE, UNSURE, AgeRangeRule, gender_call


@dataclass(frozen=True)
class ModelAnswer:
    """One model's answer for one face; the fields of a task the model was not trained on are None."""

    age: float | None
    age_low: int | None
    age_high: int | None
    p_female: float | None
    # The distribution over the years (from AGE_MIN) the range was read from, and how the model reads
    # its range: what the webcam's tracker averages over frames and reads its range from.
    age_probs: np.ndarray | None = field(default=None, compare=False, repr=False)
    range_rule: AgeRangeRule = field(default=DEFAULT_RANGE, compare=False, repr=False)
    # The model's gender confidence below which it answers "unsure" (ModelConfig.gender_unsure_below),
    # and the call the live view holds still near that threshold (demo.tracking), when it holds one.
    unsure_below: float = field(default=0.5, compare=False, repr=False)
    held_gender: str | None = field(default=None, compare=False, repr=False)

    @property
    def gender(self) -> str | None:
        """"female", "male", or "unsure" where the model's confidence is below its threshold."""
        if self.p_female is None:
            return None
        return self.held_gender or gender_call(self.p_female, self.unsure_below)

    @property
    def gender_confidence(self) -> float | None:
        return None if self.p_female is None else max(self.p_female, 1 - self.p_female)

    def age_text(self) -> str:
        return NO_ANSWER if self.age is None else f"{round(self.age)} ({self.age_low}-{self.age_high})"

    def gender_text(self) -> str:
        """'female (87 %)', or 'unsure (54 % female)' with P(female)."""
        if self.p_female is None:
            return NO_ANSWER
        if self.gender == UNSURE:
            return f"{UNSURE} ({100 * self.p_female:.0f} % female)"
        return f"{self.gender} ({100 * self.gender_confidence:.0f} %)"

    def short(self, with_range: bool = False) -> str:
        """'31 F' ('31 (27-36) F' with the range; '31 F?' when unsure, the side it leans to and a question
        mark: the labels on photos, live frames and videos, whose tables say 'unsure (54 % female)'), or the part
        the model answers ('31', 'F')."""
        age = None if self.age is None else (self.age_text() if with_range else str(round(self.age)))
        gender = self.gender and self.gender[0].upper()
        if self.gender == UNSURE:
            gender = ("F" if self.p_female >= 0.5 else "M") + "?"
        return " ".join(part for part in (age, gender) if part)


NO_ANSWER = "not trained"  # shown for a task the model was not trained on


@dataclass
class FaceResult:
    number: int  # from 1, left to right (by the box's left edge), as a reader scans a photo
    face: Face
    crop: Image.Image | None  # None when the face is too small to judge
    answers: dict[str, ModelAnswer] = field(default_factory=dict)  # by model key, e.g. "a", "b"

    @property
    def judged(self) -> bool:
        return self.crop is not None


@dataclass
class ImageResult:
    size: tuple[int, int]
    faces: list[FaceResult]
    timings_ms: dict[str, float]
    below_min_score: int = 0  # detections left out as unlikely to be faces
    min_score: float = MIN_SCORE
    min_face_size: int = MIN_FACE_SIZE  # the detector's smallest face

    @property
    def note(self) -> str | None:
        """A sentence for the user when there is nothing (or not everything) to show."""
        if not self.faces:
            if min(self.size) < self.min_face_size:
                return (f"This image is {self.size[0]}x{self.size[1]} pixels: too small to hold a face we can find "
                        f"(faces are found from {self.min_face_size} px). Try a larger photo.")
            if self.below_min_score:
                return (f"No face found in this photo: {self.below_min_score} detection(s) scored below the minimum "
                        f"detection score {self.min_score:.2f}. Lower it to see them, or try a clearer photo.")
            return "No face found in this photo. Try a clearer, larger or more frontal face."
        small = sum(not f.judged for f in self.faces)
        if small == len(self.faces):
            return f"Found {small} face(s), all smaller than {MIN_JUDGE_SIZE} px: too small to judge age or gender."
        if small:
            return (f"{small} of {len(self.faces)} faces are too small to judge (under {MIN_JUDGE_SIZE} px) "
                    "and are boxed in grey.")
        return None


class Predictor:
    """Detector plus the models, keyed by short names ("a", "b")."""

    def __init__(self, models: dict[str, LoadedModel], detector: FaceDetector | None = None,
                 device: str = "cpu", min_judge_size: int = MIN_JUDGE_SIZE, min_score: float = MIN_SCORE) -> None:
        if not models:
            raise ValueError("at least one model is needed")
        self.models = models
        self.detector = detector or FaceDetector(device=device)
        self.min_judge_size = min_judge_size
        self.min_score = min_score

    def predict(self, image: Image.Image, min_score: float | None = None) -> ImageResult:
        """Every face in an RGB image, with each model's answer for the faces big enough to judge.

        Detections scoring below `min_score` (default: the predictor's) are left out: at the
        default, they are mostly hands, patterns and other things that are not faces.
        """
        min_score = self.min_score if min_score is None else min_score
        timings: dict[str, float] = {}
        start = time.perf_counter()
        detected = self.detector.detect(image)
        faces = [f for f in detected if f.score >= min_score]
        timings["detect"] = _ms_since(start)

        start = time.perf_counter()
        results = [FaceResult(number=n, face=face, crop=None)
                   for n, face in enumerate(sorted(faces, key=lambda f: f.box[0]), start=1)]
        judged = [r for r in results if r.face.size >= self.min_judge_size]
        # One set of crops per crop geometry in use (both shipped models share one).
        crops: dict[tuple[int, float], list[Image.Image]] = {}
        for model in self.models.values():
            geometry = (model.config.crop_size, model.config.crop_margin)
            if geometry not in crops:
                crops[geometry] = [align_crop(image, r.face, *geometry) for r in judged]
        for r, crop in zip(judged, next(iter(crops.values()))):
            r.crop = crop  # shown to the user: what the (first) model saw
        timings["crop"] = _ms_since(start)

        for name, model in self.models.items():
            start = time.perf_counter()
            if judged:
                c = model.config
                batch = to_model_input(crops[(c.crop_size, c.crop_margin)], c.input_size, c.mean, c.std)
                prediction = model.predict(batch)
                age, p_female = prediction.age, prediction.p_female
                for i, r in enumerate(judged):
                    r.answers[name] = ModelAnswer(
                        age=None if age is None else float(age.years[i]),
                        age_low=None if age is None else int(age.low[i]),
                        age_high=None if age is None else int(age.high[i]),
                        p_female=None if p_female is None else float(p_female[i]),
                        age_probs=None if age is None else age.probs[i].cpu().numpy(),
                        range_rule=c.range_rule,
                        unsure_below=c.gender_unsure_below,
                    )
            timings[f"model_{name}"] = _ms_since(start)
        return ImageResult(size=image.size, faces=results, timings_ms=timings,
                           below_min_score=len(detected) - len(faces), min_score=min_score,
                           min_face_size=self.detector.min_face_size)


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000
