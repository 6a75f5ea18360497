"""How steady the webcam's answers are for a still face: each frame alone against the tracker's averages.

    python -m tools.webcam_steadiness [--frames 30] [--noise 4] [--out reports/webcam_steadiness.json]

A still face as a camera films it: `demo/examples/astronaut.jpg` on a 640x480 frame, with fresh
Gaussian sensor noise (--noise, in 0..255 levels, fixed seed) on every frame. Every frame goes
through the webcam's predictor; the per-frame answers are what the app showed before tracking, the
tracker's (`demo.tracking`) what it shows now. Reported per model: the standard deviation and range
of the age over the frames, the spread of the box centre, and the milliseconds per frame.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from demo.draw import annotate
from demo.faces import LIVE_MIN_FACE_SIZE, FaceDetector
from demo.predictor import Predictor
from demo.sources import load_models, specs_from_env
from demo.tracking import FaceTracker
from tools.output import emit

ROOT = Path(__file__).resolve().parents[1]
SIZE = (640, 480)


def noisy_clip(photo: Path, frames: int, noise: float, seed: int = 0) -> list[Image.Image]:
    """The photo centred on a grey 640x480 frame, with independent noise on each frame."""
    still = Image.new("RGB", SIZE, (90, 90, 90))
    face = Image.open(photo).convert("RGB")
    face.thumbnail(SIZE)
    still.paste(face, ((SIZE[0] - face.width) // 2, (SIZE[1] - face.height) // 2))
    base = np.asarray(still, dtype=np.float32)
    rng = np.random.default_rng(seed)
    return [Image.fromarray(np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8))
            for _ in range(frames)]


def spread(results: list, keys: list[str]) -> dict:
    """Per model: the age's standard deviation and range over the frames; the box centre's spread."""
    out: dict = {"frames_with_a_face": sum(bool(r.faces) for r in results)}
    faces = [r.faces[0] for r in results if r.faces and r.faces[0].judged]
    for key in keys:
        ages = [f.answers[key].age for f in faces]
        out[key] = {"age_std": round(statistics.pstdev(ages), 3), "age_min": round(min(ages), 1),
                    "age_max": round(max(ages), 1), "range_width_mean": round(
                        statistics.fmean(f.answers[key].age_high - f.answers[key].age_low for f in faces), 1)}
    centres = np.array([[(f.face.box[0] + f.face.box[2]) / 2, (f.face.box[1] + f.face.box[3]) / 2] for f in faces])
    out["box_centre_std_px"] = round(float(np.linalg.norm(centres.std(axis=0))), 2)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--noise", type=float, default=4.0, help="sensor noise, standard deviation in 0..255 levels")
    parser.add_argument("--photo", type=Path, default=ROOT / "demo" / "examples" / "astronaut.jpg")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    models, _ = load_models(specs_from_env(), offline=True)
    predictor = Predictor(models, FaceDetector(min_face_size=LIVE_MIN_FACE_SIZE))
    keys = list(models)
    clip = noisy_clip(args.photo, args.frames, args.noise)
    for frame in clip[:3]:  # warm-up
        predictor.predict(frame)
    report: dict = {"frames": args.frames, "noise": args.noise, "photo": args.photo.name}
    for name, tracker in (("per_frame", None), ("tracked", FaceTracker())):
        results, times = [], []
        for frame in clip:
            start = time.perf_counter()
            result = predictor.predict(frame)
            if tracker is not None:
                result = tracker.update(result)
            annotate(frame, result, keys)
            times.append((time.perf_counter() - start) * 1000)
            results.append(result)
        report[name] = {**spread(results, keys), "ms_per_frame_median": round(statistics.median(times), 1)}
    emit(report, args.out, indent=2)


if __name__ == "__main__":
    main()
