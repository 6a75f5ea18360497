"""Latency of the serving pipeline, stage by stage, on this machine, on each engine side by side.

    python -m tools.benchmark [--device cpu|cuda] [--threads N] [--runs 30] [--engine all|served|onnx|torch]
        [--flip] [--out reports/benchmark.json]

Cases: a 640x480 frame with one face (upload settings and webcam settings) and the 1280x640
group photo with five faces. Stages: decode (JPEG bytes -> RGB), detect (MTCNN), crop (landmark
alignment), model A and model B (preprocessing + forward, all faces in one batch, each with the
flip setting it is served with), draw, and end to end. With `--engine all` (the default) what the
app serves (each part on its default engine, demo.engine.default_engine), the PyTorch path and the
ONNX Runtime path run the same frames in one process, run by run in turn, so the machine's slow
moments fall on all. Then detection alone: the app's MTCNN on
each engine against stock facenet-pytorch MTCNN, interleaved too. Prints the CPU, its instruction
sets, and median and 90th percentile in milliseconds as Markdown tables.
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

from demo.checkpoint import LoadedModel
from demo.draw import annotate
from demo.engine import ENGINES
from demo.faces import LIVE_MIN_FACE_SIZE, MIN_FACE_SIZE, FaceDetector
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


def run_cases(predictors: dict[str, Predictor], data: bytes, runs: int) -> dict[str, dict]:
    """Per engine, each stage's median and p90 ms over `runs` runs after three warm-ups, the engines in turn."""
    samples = {engine: {s: [] for s in STAGES} for engine in predictors}
    faces = {}
    for i in range(runs + 3):
        for engine in (list(predictors) if i % 2 else list(predictors)[::-1]):
            predictor = predictors[engine]
            start = time.perf_counter()
            image = load_image(data)
            decoded = time.perf_counter()
            result = predictor.predict(image)
            predicted = time.perf_counter()
            annotate(image, result, list(predictor.models))
            end = time.perf_counter()
            faces[engine] = len(result.faces)
            if i < 3:
                continue
            mine = samples[engine]
            mine["decode"].append((decoded - start) * 1000)
            for stage in ("detect", "crop", "model_a", "model_b"):
                mine[stage].append(result.timings_ms.get(stage, 0.0))
            mine["draw"].append((end - predicted) * 1000)
            mine["total"].append((end - start) * 1000)
    return {engine: {"faces": faces[engine], **{s: _stats(v) for s, v in samples[engine].items()}}
            for engine in predictors}


def _stats(times: list[float]) -> dict[str, float]:
    return {"median": float(np.median(times)), "p90": float(np.percentile(times, 90))}


def compare_detection(min_face_size: int, data: bytes, runs: int, device: str, engines: list[str]
                      ) -> dict[str, dict[str, float]]:
    """Milliseconds to detect, the app's detector on each engine against facenet-pytorch's, alternating run by run.

    Alternating (and swapping which goes first) spreads the machine's slow moments over all, which
    timing one after the other does not: on this machine the same case can differ by a quarter
    between two minutes.
    """
    image = load_image(data)
    # Each detector named by the engine it really runs on ("served" is the app's default for the detector, and a
    # GPU keeps PyTorch whatever was asked), each engine timed once.
    detectors: dict[str, FaceDetector] = {}
    for engine in engines:
        asked = None if engine == "served" else engine
        detector = FaceDetector(device=device, min_face_size=min_face_size, engine=asked)
        detectors.setdefault(f"demo.mtcnn ({detector.engine})", detector)
    detectors["facenet-pytorch"] = FaceDetector(device=device, min_face_size=min_face_size, batched_crops=False)
    times: dict[str, list[float]] = {name: [] for name in detectors}
    for i in range(runs + 3):
        for name in (list(detectors) if i % 2 else list(detectors)[::-1]):
            start = time.perf_counter()
            detectors[name].detect(image)
            if i >= 3:  # three warm-up rounds
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: _stats(t) for name, t in times.items()}


# The instruction sets that decide which kernels the engines run on an x86 CPU.
INSTRUCTION_SETS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu_name() -> str:
    """'AMD EPYC (avx2, fma, avx512f, ...)': the CPU model and its instruction sets that matter here."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                 platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return f"{model} ({', '.join(f for f in INSTRUCTION_SETS if f in flags) or 'none of them'})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--engine", choices=("all", "served", *ENGINES), default="all",
                        help="which answer path: all side by side (default), served (the app's default engine for "
                             "each part: demo.engine.default_engine), onnx (ONNX Runtime for every part) or torch")
    parser.add_argument("--flip", action="store_true",
                        help="average every model's answers over the face and its mirror image (default: each "
                             "model's own setting, as served)")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    engines = ["served", "torch", "onnx"] if args.engine == "all" else [args.engine]
    served = {"served": None}  # each part's default engine
    loaded, _ = load_models(specs_from_env(), offline=True, device=args.device)
    if args.flip:
        for model in loaded.values():
            model.config.flip = "on"
    cases = {"640x480, 1 face (upload settings)": (MIN_FACE_SIZE, frame_640x480()),
             "640x480, 1 face (webcam settings)": (LIVE_MIN_FACE_SIZE, frame_640x480()),
             "1280x640 group, 5 faces": (MIN_FACE_SIZE, (EXAMPLES / "group.jpg").read_bytes())}
    predictors = {size: {engine: Predictor({k: LoadedModel(m.model, m.config, m.folder, args.device,
                                                           served.get(engine, engine)) for k, m in loaded.items()},
                                           FaceDetector(device=args.device, min_face_size=size,
                                                        engine=served.get(engine, engine)))
                         for engine in engines} for size in {size for size, _ in cases.values()}}
    results = {name: run_cases(predictors[size], data, args.runs) for name, (size, data) in cases.items()}
    detection = {name: compare_detection(size, data, args.runs, args.device, engines)
                 for name, (size, data) in cases.items()}
    where = (torch.cuda.get_device_name() if args.device.startswith("cuda")
             else f"{cpu_name()}, {torch.get_num_threads()} threads")
    flips = ", ".join(f"{k.upper()} {m.config.flip}" for k, m in loaded.items())
    print(f"Device: {args.device} ({where}); flip: {flips}; {args.runs} runs after 3 warm-ups; milliseconds, "
          "median / p90.\n")
    print("| case | engine | faces | " + " | ".join(STAGES) + " |")
    print("|" + " --- |" * (len(STAGES) + 3))
    for name, by_engine in results.items():
        for engine, r in by_engine.items():
            cells = [f"{r[s]['median']:.1f} / {r[s]['p90']:.1f}" for s in STAGES]
            print(f"| {name} | {engine} | {r['faces']} | " + " | ".join(cells) + " |")
    print("\nDetection alone, demo.mtcnn (as the app runs it) against stock facenet-pytorch MTCNN, interleaved; "
          "ms, median / p90, and the share of facenet-pytorch's time:\n")
    names = list(next(iter(detection.values())))
    print("| case | " + " | ".join(names) + " |\n|" + " --- |" * (len(names) + 1))
    for name, d in detection.items():
        stock = d["facenet-pytorch"]["median"]
        cells = [f"{d[n]['median']:.1f} / {d[n]['p90']:.1f}" + ("" if n == "facenet-pytorch" else
                                                                   f" ({d[n]['median'] / stock:.2f})") for n in names]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"device": args.device, "where": where, "runs": args.runs, "flip": flips,
                                        "results": results, "detection": detection}, indent=2) + "\n")


if __name__ == "__main__":
    main()
