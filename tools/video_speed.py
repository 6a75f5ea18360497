"""How fast are videos judged on this machine? A synthetic clip through demo.video.judge, as the Video tab runs it.

    python -m tools.video_speed [--seconds 10] [--fps 30] [--out reports/video_speed.json]

The clip: the example portrait sliding on a 640x480 frame (tools.clips), H.264, made with
PyAV. Judged every frame and every 5th, with the app's photo predictor (MTCNN from 20 px, both
models), writing the annotated MP4 as the tab does; then decoding alone, for comparison. Reported:
frames judged a second, and the clip's seconds per second of work.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from demo.faces import FaceDetector
from demo.predictor import Predictor
from demo.sources import load_models, specs_from_env
from demo.video import frames, judge
from tools.clips import offsets, portrait, write_clip
from tools.output import emit


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models, _ = load_models(specs_from_env(), offline=True)
    predictor = Predictor(models, FaceDetector())
    count = round(args.seconds * args.fps)
    report: dict = {"clip": f"{args.seconds:g} s, {args.fps} frames a second, 640x480, one face",
                    "threads": args.threads}
    with tempfile.TemporaryDirectory() as folder:
        clip = write_clip(Path(folder) / "clip.mp4", portrait(),
                          offsets(120, 3.0, args.fps, count), args.fps)
        start = time.perf_counter()
        decoded = sum(1 for _ in frames(clip))
        report["decode_only_frames_per_s"] = round(decoded / (time.perf_counter() - start), 1)
        for every in (1, 5):
            start = time.perf_counter()
            run = judge(clip, predictor, every, out=Path(folder) / f"out_{every}.mp4")
            seconds = time.perf_counter() - start
            report[f"every_{every}"] = {"frames_judged": len(run.judged),
                                        "frames_judged_per_s": round(len(run.judged) / seconds, 1),
                                        "clip_seconds_per_second": round(args.seconds / seconds, 2)}
    emit(report, args.out, indent=2)


if __name__ == "__main__":
    main()
