"""Latency of the serving pipeline, stage by stage, on this machine.

    python -m tools.benchmark [--device cpu|cuda] [--threads N] [--runs 30] [--flip] [--out reports/benchmark.json]

Cases: a 640x480 frame with one face (upload settings and webcam settings) and the 1280x640
group photo with five faces. Stages: decode (JPEG bytes -> RGB), detect (MTCNN), crop (landmark
alignment), model A and model B (preprocessing + forward, all faces in one batch), draw, and end
to end. Prints median and 90th percentile in milliseconds as a Markdown table.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from demo.draw import annotate
from demo.faces import LIVE_MIN_FACE_SIZE, FaceDetector
from demo.images import load_image
from demo.predictor import Predictor
from demo.sources import load_models, specs_from_env

EXAMPLES = Path(__file__).resolve().parents[1] / "demo" / "examples"
STAGES = ["decode", "detect", "crop", "model_a", "model_b", "draw", "total"]


def frame_640x480() -> bytes:
    canvas = Image.new("RGB", (640, 480), (90, 90, 90))
    face = Image.open(EXAMPLES / "astronaut.jpg").convert("RGB").resize((480, 480))
    canvas.paste(face, (80, 0))
    return _jpeg(canvas)


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def run_case(predictor: Predictor, data: bytes, runs: int) -> dict[str, dict[str, float]]:
    samples: dict[str, list[float]] = {s: [] for s in STAGES}
    keys = list(predictor.models)
    for i in range(runs + 3):  # three warm-up runs
        start = time.perf_counter()
        image = load_image(data)
        decoded = time.perf_counter()
        result = predictor.predict(image)
        predicted = time.perf_counter()
        annotate(image, result, keys)
        end = time.perf_counter()
        if i < 3:
            continue
        samples["decode"].append((decoded - start) * 1000)
        for stage in ("detect", "crop", "model_a", "model_b"):
            samples[stage].append(result.timings_ms.get(stage, 0.0))
        samples["draw"].append((end - predicted) * 1000)
        samples["total"].append((end - start) * 1000)
    faces = len(result.faces)
    return {"faces": faces, **{s: {"median": float(np.median(v)), "p90": float(np.percentile(v, 90))}
                               for s, v in samples.items()}}


def compare_detection(min_face_size: int, data: bytes, runs: int, device: str) -> dict[str, dict[str, float]]:
    """Milliseconds to detect, the app's detector against facenet-pytorch's, alternating run by run.

    Alternating (and swapping which goes first) spreads the machine's slow moments over both, which
    timing one after the other does not: on this machine the same case can differ by a quarter
    between two minutes.
    """
    image = load_image(data)
    detectors = {"demo.mtcnn": FaceDetector(device=device, min_face_size=min_face_size),
                 "facenet-pytorch": FaceDetector(device=device, min_face_size=min_face_size, batched_crops=False)}
    times: dict[str, list[float]] = {name: [] for name in detectors}
    for i in range(runs + 3):
        for name in (list(detectors) if i % 2 else list(detectors)[::-1]):
            start = time.perf_counter()
            detectors[name].detect(image)
            if i >= 3:  # three warm-up rounds
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: {"median": float(np.median(t)), "p90": float(np.percentile(t, 90))} for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--flip", action="store_true",
                        help="average each model's answers over the face and its mirror image (flip on)")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models, _ = load_models(specs_from_env(), offline=True, device=args.device)
    for model in models.values():
        if args.flip:
            model.config.flip = "on"
    upload = Predictor(models, FaceDetector(device=args.device))
    webcam = Predictor(models, FaceDetector(device=args.device, min_face_size=LIVE_MIN_FACE_SIZE))
    cases = {
        "640x480, 1 face (upload settings)": (upload, frame_640x480()),
        "640x480, 1 face (webcam settings)": (webcam, frame_640x480()),
        "1280x640 group, 5 faces": (upload, (EXAMPLES / "group.jpg").read_bytes()),
    }
    results = {name: run_case(p, data, args.runs) for name, (p, data) in cases.items()}
    detection = {name: compare_detection(p.detector.min_face_size, data, args.runs, args.device)
                 for name, (p, data) in cases.items()}
    where = (torch.cuda.get_device_name() if args.device.startswith("cuda")
             else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads")
    print(f"Device: {args.device} ({where}); {args.runs} runs after 3 warm-ups; milliseconds, median / p90.\n")
    print("| case | faces | " + " | ".join(STAGES) + " |")
    print("|" + " --- |" * (len(STAGES) + 2))
    for name, r in results.items():
        cells = [f"{r[s]['median']:.1f} / {r[s]['p90']:.1f}" for s in STAGES]
        print(f"| {name} | {r['faces']} | " + " | ".join(cells) + " |")
    print("\nDetection alone, demo.mtcnn (as the app runs it) against facenet-pytorch's MTCNN, interleaved; "
          "ms, median / p90:\n")
    print("| case | demo.mtcnn | facenet-pytorch | faster by |\n| --- | --- | --- | --- |")
    for name, d in detection.items():
        ours, theirs = d["demo.mtcnn"], d["facenet-pytorch"]
        print(f"| {name} | {ours['median']:.1f} / {ours['p90']:.1f} | {theirs['median']:.1f} / {theirs['p90']:.1f} | "
              f"{100 * (1 - ours['median'] / theirs['median']):.0f} % |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"device": args.device, "where": where, "runs": args.runs, "flip": args.flip,
                                        "results": results, "detection": detection}, indent=2) + "\n")


if __name__ == "__main__":
    main()
