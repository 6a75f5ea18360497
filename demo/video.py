"""Videos: every k-th frame judged with the webcam's tracker, an annotated H.264 video back, a row per answer.

PyAV (`av` on PyPI) reads and writes the files: its wheels carry their own FFmpeg libraries, with
libx264 and libvpx, so a fresh machine or a Space needs no system package (Gradio would call an
`ffmpeg` binary that a Space may not have; docs/serving.md says why this one). The annotated video
holds the judged frames only, at the source's rate divided by `every`, so its length is the
clip's; H.264 in MP4 with 4:2:0 colour, which every browser plays. A clip stored sideways with a
display rotation (as phones record portrait video) is judged and written upright.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from demo.draw import annotate
from demo.predictor import ImageResult, Predictor
from demo.tracking import FaceTracker

VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"}
OUTPUT_MAX_SIDE = 1280  # annotated frames larger than this are shrunk before encoding (encoding time)


class VideoError(ValueError):
    """A file that cannot be used as a video; the message is meant for the user."""


@dataclass(frozen=True)
class VideoInfo:
    frames: int  # as the container declares them (0: unknown)
    fps: float
    seconds: float
    width: int
    height: int


@dataclass
class JudgedFrame:
    frame: int  # index in the source video, from 0
    seconds: float
    result: ImageResult


@dataclass
class VideoRun:
    info: VideoInfo
    every: int
    judged: list[JudgedFrame] = field(default_factory=list)
    stopped: str | None = None  # why the judging stopped before the end of the clip, for the user


def _open(path: Path):
    try:
        return av.open(str(path))
    except (av.error.InvalidDataError, av.error.FFmpegError, UnicodeDecodeError) as error:
        raise VideoError(f"{path.name} is not a video we can read ({error.__class__.__name__})") from None


def probe(path: str | Path, max_seconds: float | None = None, max_bytes: int | None = None) -> VideoInfo:
    """The video's frame count, rate, length and size; a VideoError for what cannot or may not be judged."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise VideoError(f"{path.name} is empty (0 bytes)" if path.is_file() else f"{path.name} does not exist")
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise VideoError(f"{path.name} is {path.stat().st_size / 1e6:.0f} MB; videos up to {max_bytes / 1e6:.0f} MB "
                         "are accepted here")
    with _open(path) as container:
        if not container.streams.video:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "nothing"
            raise VideoError(f"{path.name} has no video stream (it holds {kinds})")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration:
            seconds = container.duration / 1e6
        else:
            seconds = (stream.frames or 0) / fps
        info = VideoInfo(int(stream.frames or 0), fps, seconds, stream.codec_context.width,
                         stream.codec_context.height)
    if max_seconds is not None and info.seconds > max_seconds:
        raise VideoError(f"{path.name} lasts {info.seconds:.0f} s; videos up to {max_seconds:.0f} s are accepted "
                         "here (the batch CLI, python -m demo.predict, takes any length)")
    return info


# A decoded frame turned as its display matrix says (PyAV's `frame.rotation`: degrees counterclockwise),
# so that it is judged and drawn as a player shows it: phones store portrait video sideways and tag it.
UPRIGHT = {90: Image.Transpose.ROTATE_90, -90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180,
           -180: Image.Transpose.ROTATE_180}


def upright(image: Image.Image, rotation: int) -> Image.Image:
    """`image` as shown: turned `rotation` degrees counterclockwise (a multiple of 90; 0 leaves it)."""
    turn = UPRIGHT.get(int(round(rotation)))
    return image.transpose(turn) if turn is not None else image


def frames(path: str | Path, every: int = 1) -> Iterator[tuple[int, float, Image.Image]]:
    """(index, seconds, RGB image) of every `every`-th frame, decoded in order and turned upright (a phone's
    display rotation applied); a damaged file ends in a VideoError."""
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index % every == 0:
                    seconds = float(frame.pts * frame.time_base) if frame.pts is not None else math.nan
                    yield index, seconds, upright(frame.to_image(), frame.rotation)
        except av.error.FFmpegError as error:
            raise VideoError(f"{path.name} is damaged after its first frames ({error.__class__.__name__})") from None


def judge(path: str | Path, predictor: Predictor, every: int = 1, out: Path | None = None,
          progress: Callable[[int, int], None] | None = None, max_seconds: float | None = None,
          max_bytes: int | None = None) -> VideoRun:
    """Every `every`-th frame through `predictor` and one tracker (each face keeps its number), written
    annotated to `out` (MP4) if given. `progress(done, total)` is told after each judged frame."""
    if every < 1:
        raise ValueError("every must be at least 1")
    info = probe(path, max_seconds, max_bytes)
    run = VideoRun(info, every)
    total = math.ceil(info.frames / every) if info.frames else 0
    tracker, keys = FaceTracker(), list(predictor.models)
    writer = stream = None
    try:
        for index, seconds, image in frames(path, every):
            # The limit holds on the decoded time too: a clip written live (a browser's recording) has no
            # length in its header, and probe's check cannot see how long it is.
            if max_seconds is not None and seconds > max_seconds:
                run.stopped = (f"{Path(path).name} runs past {max_seconds:.0f} s, which its header did not say: the "
                               f"first {max_seconds:.0f} s were judged, the rest was not")
                break
            result = tracker.update(predictor.predict(image))
            run.judged.append(JudgedFrame(index, seconds, result))
            if out is not None:
                drawn = annotate(image, result, keys)
                if writer is None:
                    writer, stream = _writer(out, drawn.size, info.fps / every)
                for packet in stream.encode(av.VideoFrame.from_ndarray(_even(drawn, stream), format="rgb24")):
                    writer.mux(packet)
            if progress is not None:
                progress(len(run.judged), max(total, len(run.judged)))
        if not run.judged:
            raise VideoError(f"{Path(path).name} has no frame we could decode")
        if writer is not None:
            for packet in stream.encode():
                writer.mux(packet)
    finally:
        if writer is not None:
            writer.close()
    return run


def _writer(out: Path, size: tuple[int, int], fps: float):
    scale = min(1.0, OUTPUT_MAX_SIDE / max(size))
    # 4:2:0 needs even sides.
    width, height = (max(2, int(side * scale) // 2 * 2) for side in size)
    out.parent.mkdir(parents=True, exist_ok=True)
    # faststart: the index first, so a browser starts playing before the whole file has arrived.
    writer = av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"})
    stream = writer.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"crf": "23", "preset": "veryfast"}
    return writer, stream


def _even(image: Image.Image, stream) -> np.ndarray:
    """The frame at the encoder's size (shrunk and evened as _writer chose)."""
    if image.size != (stream.width, stream.height):
        image = image.resize((stream.width, stream.height), Image.Resampling.BILINEAR)
    return np.asarray(image)
