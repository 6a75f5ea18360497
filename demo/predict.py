"""Batch prediction without the UI: one CSV row per (image, face, model), or per (video, frame, face, model).

    python -m demo.predict photos/ more.jpg --out results.csv [--device cpu|cuda] [--models a,b] [--offline]
        [--min-score 0.95] [--workers 2]
    python -m demo.predict clips/ --out results.csv --every 5          # videos: every 5th frame
    python -m demo.predict clips/ --out results.csv --every-seconds 0.5  # or two frames a second of the clip
    python -m demo.predict photos/ --out part0.csv --shard 0/2      # this process's half (another runs 1/2)
    python -m demo.predict photos/ --out results.csv --merge part0.csv part1.csv

Folders are searched recursively for images and videos (mp4, webm, mov, mkv, avi, m4v). Faces are
numbered from left to right; in a video each face keeps its number from frame to frame (the
webcam's tracker), and each row names its frame (from 0) and time in seconds. An image with no
face (or none big enough) gets one row with an empty `face` and a `note` (a video frame without
faces gets none); an unreadable file gets one row with `error` set. Neither stops the run.

Rows are written as each photo, or each judged frame of a video, is done (nothing is held for the
end: memory stays flat whatever a clip's length; a clip damaged or cut off part-way keeps the rows
before the damage and gets a row whose `error` says where it stopped), and re-running the same
command on an existing --out continues it: the files it already holds are skipped (the last photo
is done again, in case the run stopped while writing it; a clip goes on after its last frame but
one, each face keeping its number). --workers decode the next photos while the
current one is judged. --shard I/N takes every Nth photo from the Ith, so N processes (or machines,
or torchrun ranks, which get their shard from RANK and WORLD_SIZE) split a folder; --merge then
joins their parts in the order one process would have written.

What a run's rows depend on (each model's weights and config, the detection threshold, the frames
judged) is kept beside the CSV in `OUT.settings.json`; a run that would continue a CSV written with
other models or settings stops with a message instead of mixing two runs' answers in one file.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from demo.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from demo.export import COLUMNS, rows_for
from demo.faces import MIN_SCORE
from demo.images import ImageError, load_image
from demo.predictor import Predictor
from demo.tracking import FaceTracker, Track, centre
from demo.video import VIDEO_SUFFIXES, VideoError, judge

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
log = logging.getLogger(__name__)


def iter_paths(inputs: list[Path]) -> Iterator[Path]:
    for path in inputs:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*")
                              if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
        else:
            yield path


@dataclass(frozen=True)
class ClipResume:
    """Where a run stopped inside a clip: the frame judged last whose rows stand, its faces' tracks, and the highest
    face number the clip's rows give (a newcomer after it gets the next)."""

    file: str
    frame: int
    tracks: list[Track]
    numbered: int


def earlier_run(out: Path) -> tuple[set[str], ClipResume | None]:
    """The files an earlier run of `out` finished, and, where it stopped inside a clip, where to go on.

    The last file's rows may have been cut off part-way, so they are cut off the file: a photo is done
    again; a clip loses only its last frame's rows and goes on from the frame after the one before, its
    faces keeping their numbers and motion (a clip whose last row says why it stopped was finished).
    """
    if not out.is_file() or out.stat().st_size == 0:
        return set(), None
    with out.open("rb+") as f:  # bytes: the offsets to cut at are byte offsets
        if next(csv.reader([f.readline().decode()]), []) != COLUMNS:
            raise SystemExit(f"{out} is not a CSV of this tool (other columns): choose another --out")
        files, tail, offset, whole = [], [], f.tell(), True  # tail: (offset, row) of the last file's rows
        while line := f.readline():  # (a last line cut off part-way still names the file being written)
            cells = next(csv.reader([line.decode(errors="replace")]), [])
            row = dict(zip(COLUMNS, cells + [""] * (len(COLUMNS) - len(cells))))
            if not files or row["file"] != files[-1]:
                files.append(row["file"])
                tail = []
            tail.append((offset, row))
            offset, whole = f.tell(), line.endswith(b"\n")
        if whole and len(tail) > 1 and tail[-1][1]["error"] and tail[0][1]["frame"]:  # a clip that said why it ended
            f.truncate(offset)
            return set(files), None
        frames = list(dict.fromkeys(row["frame"] for _, row in tail if row["frame"]))
        if len(frames) < 2:  # a photo, or a clip with one frame written: done again from its start
            f.truncate(tail[0][0] if tail else offset)
            return set(files[:-1]), None
        f.truncate(next(at for at, row in tail if row["frame"] == frames[-1]))
    kept = [row for _, row in tail if row["frame"] in frames[-3:-1]]
    numbered = max(int(row["face"]) for _, row in tail if row["face"] and row["frame"] in frames[:-1])
    return set(files[:-1]), ClipResume(files[-1], int(frames[-2]), _tracks(kept, frames[-2]), numbered)


def _tracks(rows: list[dict], frame: str) -> list[Track]:
    """The tracks of the faces in `frame`'s rows, each moving as it did since the frame before (if in `rows`)."""
    def at(frame_rows):
        return {row["face"]: ((float(row["x1"]), float(row["y1"]), float(row["x2"]), float(row["y2"])),
                              float(row["time_s"])) for row in frame_rows}

    now = at(row for row in rows if row["frame"] == frame)
    before = at(row for row in rows if row["frame"] != frame)
    tracks = []
    for number, (box, seconds) in now.items():
        track = Track(int(number), box, seen_at=seconds)
        if number in before and seconds > before[number][1]:
            track.velocity = (centre(box) - centre(before[number][0])) / (seconds - before[number][1])
        tracks.append(track)
    return tracks


def decoded(files: list[Path], workers: int) -> Iterator[tuple[Path, object]]:
    """(path, RGB image or the ImageError) in order, decoded up to 2 x `workers` photos ahead; a video comes
    as its path, decoded frame by frame when its turn comes."""
    def load(path: Path):
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return path
        try:
            return load_image(path)
        except (ImageError, OSError) as error:
            return error

    if workers <= 0:
        yield from ((path, load(path)) for path in files)
        return
    with ThreadPoolExecutor(workers) as pool:
        ahead = 2 * workers
        futures = [pool.submit(load, path) for path in files[:ahead]]
        for i, path in enumerate(files):
            if i + ahead < len(files):
                futures.append(pool.submit(load, files[i + ahead]))
            yield path, futures[i].result()
            futures[i] = None  # the decoded photo is not kept once judged


class OtherRunError(Exception):
    """The CSV to continue was written with other models or settings than this run's."""


def settings_path(out: Path) -> Path:
    return out.with_name(out.name + ".settings.json")


def run_settings(predictor: Predictor, every: int, every_seconds: float | None) -> dict:
    """What the rows depend on: a digest of each model's weights and config, the detection threshold and the
    frames judged (a new model version pinned, or another --min-score, gives other rows for the same photos)."""
    def digest(folder: Path) -> str:
        sha = hashlib.sha256()
        for name in (WEIGHTS_NAME, CONFIG_NAME):
            sha.update((folder / name).read_bytes())
        return sha.hexdigest()[:16]

    return {"models": {key: digest(model.folder) for key, model in predictor.models.items()},
            "min_score": predictor.min_score, "every": every, "every_seconds": every_seconds}


def check_same_run(out: Path, settings: dict) -> None:
    """Records `settings` beside `out`; refuses to continue an `out` whose recorded settings differ. (A CSV
    without a record, from before records were kept, is continued as it was.)"""
    record = settings_path(out)
    if out.is_file() and out.stat().st_size and record.is_file():
        earlier = json.loads(record.read_text())
        changed = [key for key in settings if earlier.get(key) != settings[key]]
        if changed:
            raise OtherRunError(
                f"{out} was written with other {' and '.join(changed).replace('_', ' ')} than this run's: continuing "
                f"it would mix two runs' answers. Give another --out, or delete {out} and {record.name} to start "
                "again.")
    record.write_text(json.dumps(settings, indent=1) + "\n")


def run(paths: list[Path], out: Path, predictor: Predictor, shard: tuple[int, int] = (0, 1),
        workers: int = 2, every: int = 1, every_seconds: float | None = None) -> tuple[int, int]:
    """Writes (or continues) the CSV for this shard's photos and videos (every `every`-th frame, or one every
    `every_seconds`); returns (files read, files that could not be read). OtherRunError if `out` was written
    with other models or settings (check_same_run)."""
    check_same_run(out, run_settings(predictor, every, every_seconds))
    index, count = shard
    mine = list(iter_paths(paths))[index::count]
    finished, clip = earlier_run(out)
    todo = [path for path in mine if str(path) not in finished]
    if finished:
        log.info("continuing %s: %d of %d files already done", out, len(mine) - len(todo), len(mine))
    if clip is not None:
        log.info("continuing %s after frame %d", clip.file, clip.frame)
    done = failed = 0
    with out.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if f.tell() == 0:
            writer.writeheader()
        for path, image in tqdm(decoded(todo, workers), total=len(todo), desc="images", unit="img", file=sys.stderr):
            if isinstance(image, Path):  # a video: each frame's rows written as it is judged, none kept
                def write_frame(judged, path=path):
                    writer.writerows(rows_for(str(path), judged.result, judged.frame, judged.seconds))
                    f.flush()

                go_on = clip is not None and clip.file == str(path)
                try:
                    video = judge(image, predictor, every, on_frame=write_frame, keep=False,
                                  every_seconds=every_seconds, after=clip.frame if go_on else -1,
                                  tracker=FaceTracker.continuing(clip.tracks, clip.numbered) if go_on else None)
                except VideoError as error:
                    image = error
                else:
                    if video.stopped:  # damaged or cut off part-way: the frames before it stand, and a row says why
                        log.warning("%s: %s", path, video.stopped)
                        writer.writerow({"file": str(path), "error": video.stopped})
                    done += 1
            if isinstance(image, Exception):
                failed += 1
                log.warning("skipped %s: %s", path, image)
                writer.writerow({"file": str(path), "error": str(image)})
            elif not isinstance(image, Path):
                writer.writerows(rows_for(str(path), predictor.predict(image)))
                done += 1
            f.flush()  # a photo's rows reach the file before the next photo starts
    return done, failed


def merge(paths: list[Path], parts: list[Path], out: Path) -> int:
    """Join shard CSVs into `out`, photos in the order one process would have written them, and their settings
    record (the parts must agree on it); returns rows."""
    records = {settings_path(part).read_text() for part in parts if settings_path(part).is_file()}
    if len(records) > 1:
        raise SystemExit("the parts were written with other models or settings (their .settings.json files differ): "
                         "judge every shard with the same ones first")
    by_file: dict[str, list[dict]] = {}
    for part in parts:
        with part.open(newline="") as f:
            for row in csv.DictReader(f):
                by_file.setdefault(row["file"], []).append(row)
    order = [str(path) for path in iter_paths(paths)]
    missing = [file for file in order if file not in by_file]
    if missing:
        raise SystemExit(f"the parts lack {len(missing)} photo(s), e.g. {missing[0]}: finish every shard first")
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for file in order:
            writer.writerows(by_file[file])
    if records:
        settings_path(out).write_text(records.pop())
    return sum(len(by_file[file]) for file in order)


def parse_shard(text: str | None) -> tuple[int, int]:
    """'I/N' (or, under torchrun, RANK/WORLD_SIZE from the environment); (0, 1) for all photos."""
    if text is None:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"--shard takes I/N with 0 <= I < N, not {text!r}")
    return int(index), int(count)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="images or folders")
    parser.add_argument("--out", type=Path, required=True, help="CSV file to write")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="a,b", help="which models, comma-separated: a, b or a,b")
    parser.add_argument("--offline", action="store_true", help="use weights/ and never contact the Hub")
    parser.add_argument("--min-score", type=float, default=MIN_SCORE,
                        help=f"leave out detections scoring below this (default {MIN_SCORE})")
    parser.add_argument("--workers", type=int, default=2, help="threads decoding the next photos (0: none)")
    parser.add_argument("--every", type=int, default=1, help="videos: judge every Nth frame (default: every one)")
    parser.add_argument("--every-seconds", type=float, metavar="T",
                        help="videos: judge one frame every T seconds of the clip's own clock instead (even in "
                             "time when the frame rate varies)")
    parser.add_argument("--shard", type=parse_shard, help="I/N: this process's share of the photos (default: all, "
                        "or RANK/WORLD_SIZE under torchrun)")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="PART", help="join these shard CSVs into --out")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for the networks (default 1: beside another busy process, 2 threads, which "
                             "wait by spinning, took 4.9x as long as alone, 1 thread 1.25x; alone, 1 is 14 %% slower "
                             "than 2: docs/serving.md)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.merge:
        rows = merge(args.paths, args.merge, args.out)
        print(f"{rows} rows of {len(args.merge)} parts written to {args.out}")
        return
    from demo.faces import FaceDetector
    from demo.sources import load_models, offline_from_env, specs_from_env

    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    if not keys or any(k not in ("a", "b") for k in keys):
        parser.error("--models takes a, b or a,b")
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        parser.error("not found: " + ", ".join(map(str, missing)))
    if args.every < 1:
        parser.error("--every takes a whole number of frames, 1 or more")
    if args.threads < 1:
        parser.error("--threads takes a whole number, 1 or more")
    if args.every_seconds is not None and not args.every_seconds > 0:
        parser.error("--every-seconds takes a positive number of seconds")
    if not 0.0 <= args.min_score <= 1.0:
        parser.error("--min-score is a detection probability between 0 and 1")
    import torch

    torch.set_num_threads(args.threads)  # ONNX Runtime's sessions take as many (demo.engine)
    try:
        models, _ = load_models(specs_from_env(keys), offline=args.offline or offline_from_env(), device=args.device)
    except KeyboardInterrupt:  # Ctrl-C while the models load: nothing was written yet
        print("\nStopped while loading the models; nothing was written.", file=sys.stderr)
        raise SystemExit(130) from None
    predictor = Predictor(models, FaceDetector(device=args.device), min_score=args.min_score)
    try:
        done, failed = run(args.paths, args.out, predictor, args.shard or parse_shard(None), args.workers, args.every,
                           args.every_seconds)
    except OtherRunError as error:
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:  # Ctrl-C: the rows written stay, and the same command carries on from them
        print(f"\nStopped. The photos finished are in {args.out}; run the same command again to continue.",
              file=sys.stderr)
        raise SystemExit(130) from None
    print(f"{done} file(s) written to {args.out}" + (f"; {failed} unreadable file(s) skipped" if failed else ""))


if __name__ == "__main__":
    main()
