"""Does the live view follow a moving face? A synthetic clip through the webcam's predictor and tracker.

    python -m tools.webcam_motion [--out reports/webcam_motion.json]

A portrait (`demo/examples/astronaut.jpg`, 300 px tall) slides left and right on a grey 640x480
frame, at a constant speed, turning at the ends: the issue's case, 120 px each way every 1.5 s
(a 3 s period), and a fast case, where the face moves half its width between frames. Each case is
sampled at 8 and at 4 frames a second (a busy CPU Space), every frame through the webcam's
predictor (`demo.faces.LIVE_MIN_FACE_SIZE`) and a fresh `demo.tracking.FaceTracker`, as the app
does. Where the face truly is comes from the clip: its detected box on the still frame, moved by
the frame's offset. Reported per case: the share of frames whose drawn box centre is within a
quarter of the box width of the face, the median offset in box widths, and how many numbers the
one face was given (1 is right).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
from PIL import Image

from demo.faces import LIVE_MIN_FACE_SIZE, FaceDetector
from demo.predictor import Predictor
from demo.sources import load_models, specs_from_env
from demo.tracking import FaceTracker
from tools.clips import PORTRAIT, SIZE, frame_at, offsets, portrait


def follow(predictor: Predictor, face: Image.Image, shifts: list[float], still_box) -> dict:
    """The clip through the predictor and a fresh tracker: how close the drawn box is, how many numbers."""
    tracker = FaceTracker()
    still = np.array([(still_box[0] + still_box[2]) / 2, (still_box[1] + still_box[3]) / 2])
    errors, numbers, missing = [], set(), 0
    for shift in shifts:
        result = tracker.update(predictor.predict(frame_at(face, shift)))
        if not result.faces:
            missing += 1
            continue
        drawn = result.faces[0]
        x1, y1, x2, y2 = drawn.face.box
        truth = still + np.array([shift, 0.0])
        errors.append(float(np.linalg.norm(np.array([(x1 + x2) / 2, (y1 + y2) / 2]) - truth) / (x2 - x1)))
        numbers.update(f.number for f in result.faces)
    return {"frames": len(shifts), "frames_without_a_face": missing,
            "within_quarter_width": round(sum(e <= 0.25 for e in errors) / len(shifts), 3),
            "median_offset_widths": round(statistics.median(errors), 3), "numbers_given": len(numbers)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", type=Path, default=PORTRAIT)
    parser.add_argument("--seconds", type=float, default=9.0, help="length of each clip (three periods)")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    models, _ = load_models(specs_from_env(), offline=True)
    predictor = Predictor(models, FaceDetector(min_face_size=LIVE_MIN_FACE_SIZE))
    face = portrait(args.photo)
    (still,) = predictor.predict(frame_at(face, 0)).faces
    width = still.face.box[2] - still.face.box[0]
    report: dict = {"photo": args.photo.name, "face_width_px": round(width, 1), "cases": []}
    # The fast case crosses all the room the frame leaves, at twice the face width a second.
    room = SIZE[0] - face.width - 20
    for name, span, period in (("issue: 120 px each way every 1.5 s", 120.0, 3.0),
                               ("fast: half the face width a frame at 4 frames a second", room, room / width)):
        for fps in (8, 4):
            shifts = offsets(span, period, fps, round(args.seconds * fps))
            step = max(abs(b - a) for a, b in zip(shifts, shifts[1:]))
            case = {"case": name, "fps": fps, "span_px": round(span), "period_s": round(period, 2),
                    "largest_step_face_widths": round(step / width, 2),
                    **follow(predictor, face, shifts, still.face.box)}
            report["cases"].append(case)
            print(json.dumps(case))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
