"""Videos: every k-th frame judged with the webcam's tracker, an annotated H.264 video back, a row per answer.

PyAV (`av` on PyPI) reads and writes the files: its wheels carry their own FFmpeg libraries, with
libx264 and libvpx, so a fresh machine or a Space needs no system package (Gradio would call an
`ffmpeg` binary that a Space may not have; docs/serving.md says why this one). The annotated video
holds the judged frames only, each at its source time (a variable-frame-rate clip keeps its
pauses), so its length is the clip's; H.264 in MP4 with 4:2:0 colour, which every browser plays.
A clip stored sideways with a display rotation (as phones record portrait video) is judged and
written upright.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"}
OUTPUT_MAX_SIDE = 1280  # annotated frames larger than this are shrunk before encoding (encoding time)
OUTPUT_TICKS = 1000  # the annotated video's clock: each frame at its source time, to the millisecond
# Sound codecs an MP4 holds, copied as they are into the annotated video; others (Vorbis, PCM) are left out.
MP4_SOUND = {"aac", "mp3", "opus", "ac3", "eac3", "alac", "flac"}


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
    judged: list[JudgedFrame] = field(default_factory=list)  # unless judged with keep=False
    stopped: str | None = None  # why the judging stopped before the end of the clip, for the user
    count: int = 0  # frames judged


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


def frames(path: str | Path, every: int = 1, every_seconds: float | None = None, after: int = -1
           ) -> Iterator[tuple[int, float, Image.Image]]:
    """(index, seconds, RGB image) of every `every`-th frame, or with `every_seconds` the first frame at or after
    each multiple of that many seconds of the clip's own clock (a variable-frame-rate clip sampled evenly in
    time), decoded in order and turned upright (a phone's display rotation applied); a damaged file ends in a
    VideoError. Frames up to index `after` are decoded but not given (the same ones are sampled after it as
    in a run from the start)."""
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        index, due = -1, 0.0  # due: the next sampling time, with every_seconds
        try:
            for index, frame in enumerate(container.decode(stream)):
                seconds = float(frame.pts * frame.time_base) if frame.pts is not None else math.nan
                if every_seconds is not None and math.isfinite(seconds):
                    if seconds + 1e-6 < due:
                        continue
                    due = (math.floor(seconds / every_seconds + 1e-6) + 1) * every_seconds
                elif index % every:
                    continue
                if index > after:
                    yield index, seconds, upright(frame.to_image(), frame.rotation)
        except av.error.FFmpegError as error:
            raise VideoError(f"{path.name} is damaged at frame {index + 1}: it does not decode from there "
                             f"({error.__class__.__name__})") from None


def judge(path: str | Path, predictor: Predictor, every: int = 1, out: Path | None = None,
          progress: Callable[[int, int], None] | None = None, max_seconds: float | None = None,
          max_bytes: int | None = None, on_frame: Callable[[JudgedFrame], None] | None = None,
          keep: bool = True, every_seconds: float | None = None, after: int = -1,
          tracker: FaceTracker | None = None) -> VideoRun:
    """Every `every`-th frame (or one every `every_seconds`: `frames`) through `predictor` and one tracker (each
    face keeps its number), written annotated to `out` (MP4) if given. `progress(done, total)` is told after
    each judged frame, and `on_frame` is given each as it is judged; `keep=False` keeps none in the run
    (memory stays flat whatever the clip's length: the batch CLI writes each frame's rows as it comes).
    `after` and `tracker` go on with a clip judged up to frame `after` before (the batch CLI's resume): the
    frames after it, with the tracker that run's faces left (`FaceTracker.continuing`).

    A clip damaged or cut off part-way is judged up to where it stops decoding, and `run.stopped` says
    where and why; one with no frame to judge is refused with a VideoError.
    """
    if every < 1:
        raise ValueError("every must be at least 1")
    if every_seconds is not None and not every_seconds > 0:
        raise ValueError("every_seconds must be positive")
    info = probe(path, max_seconds, max_bytes)
    run = VideoRun(info, every)
    step = every_seconds if every_seconds is not None else every / info.fps  # seconds between judged frames
    total = (math.ceil(info.seconds / every_seconds) if every_seconds is not None
             else math.ceil(info.frames / every) if info.frames else 0)
    tracker, keys = tracker or FaceTracker(), list(predictor.models)
    video, last = None, None
    try:
        for index, seconds, image in _until_damaged(frames(path, every, every_seconds, after), run):
            # The limit holds on the decoded time too: a clip written live (a browser's recording) has no
            # length in its header, and probe's check cannot see how long it is.
            if max_seconds is not None and seconds > max_seconds:
                run.stopped = (f"{Path(path).name} runs past {max_seconds:.0f} s, which its header did not say: the "
                               f"first {max_seconds:.0f} s were judged, the rest was not")
                break
            at = seconds if math.isfinite(seconds) else index / info.fps
            result = tracker.update(predictor.predict(image), at=at)
            last = JudgedFrame(index, seconds, result)
            run.count += 1
            if keep:
                run.judged.append(last)
            if on_frame is not None:
                on_frame(last)
            if out is not None:
                drawn = annotate(image, result, keys)
                video = video or AnnotatedVideo(out, drawn.size, 1 / step, sound_of=Path(path))
                video.add(drawn, at)
            if progress is not None:
                progress(run.count, max(total, run.count))
        if last is None and after < 0:
            raise VideoError(run.stopped or f"{Path(path).name} has no frame we could decode")
        if last is not None and not run.stopped and info.seconds - (last.seconds + step) > CUT_TOLERANCE_S:
            run.stopped = (f"{Path(path).name} ends at {last.seconds:.1f} s, before the {info.seconds:.1f} s its "
                           "header gives (cut off?): judged up to there")
        if video is not None:
            # The sound as far as the frames were judged (all of it, unless the clip stopped early).
            video.finish(info.seconds, step, until=last.seconds if run.stopped else None)
    finally:
        if video is not None:
            video.close()
    return run


# A clip whose frames end this much before the length its header gives was cut off (and is said to be).
CUT_TOLERANCE_S = 0.5


def _until_damaged(frames: Iterator[tuple[int, float, Image.Image]], run: VideoRun
                   ) -> Iterator[tuple[int, float, Image.Image]]:
    """The frames until one fails to decode; then `run.stopped` says why, and the frames so far stand."""
    try:
        yield from frames
    except VideoError as error:
        run.stopped = str(error)


class AnnotatedVideo:
    """The annotated frames as H.264 in MP4, each at its source time (OUTPUT_TICKS a second): a variable-frame-rate
    clip keeps its pauses and its length. Each frame lasts until the next one added, the last until the clip's end,
    so a frame is encoded only once the next one's time is known. The sound of `sound_of`, where it has one the
    MP4 can hold (AAC, MP3, Opus, ...), is copied in as it is, not re-encoded."""

    def __init__(self, out: Path, size: tuple[int, int], fps: float, sound_of: Path | None = None) -> None:
        scale = min(1.0, OUTPUT_MAX_SIDE / max(size))
        # 4:2:0 needs even sides.
        self.size = tuple(max(2, int(side * scale) // 2 * 2) for side in size)
        out.parent.mkdir(parents=True, exist_ok=True)
        # faststart: the index first, so a browser starts playing before the whole file has arrived.
        self.container = av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"})
        self.stream = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        self.stream.width, self.stream.height = self.size
        self.stream.pix_fmt = "yuv420p"
        self.stream.codec_context.time_base = Fraction(1, OUTPUT_TICKS)
        self.stream.options = {"crf": "23", "preset": "veryfast"}
        self.pending: av.VideoFrame | None = None
        self.durations: dict[int, int] = {}  # pts -> how long that frame lasts (the encoder does not keep it)
        self.source, self.sound = None, None  # the clip the sound comes from, and its stream in the output
        if sound_of is not None:
            self.source = av.open(str(sound_of))
            audio = self.source.streams.audio[0] if self.source.streams.audio else None
            if audio is not None and audio.codec_context.name not in MP4_SOUND:
                log.warning("the sound of %s (%s) is not copied: MP4 cannot hold it", sound_of.name,
                            audio.codec_context.name)
            elif audio is not None:  # every stream must be added before the first packet is written
                self.sound = self.container.add_stream_from_template(audio)

    def add(self, image: Image.Image, seconds: float) -> None:
        if image.size != self.size:
            image = image.resize(self.size, Image.Resampling.BILINEAR)
        frame = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
        last = -1 if self.pending is None else self.pending.pts
        frame.pts, frame.time_base = max(round(seconds * OUTPUT_TICKS), last + 1), Fraction(1, OUTPUT_TICKS)
        self._encode(frame.pts)
        self.pending = frame

    def finish(self, clip_seconds: float, step_seconds: float, until: float | None = None) -> None:
        """Encode the last frame, lasting to the clip's end (or one step where the clip's length is unknown), and
        copy the sound, up to `until` seconds if given."""
        if self.pending is not None:
            end = round(clip_seconds * OUTPUT_TICKS)
            self._encode(end if end > self.pending.pts else self.pending.pts + round(step_seconds * OUTPUT_TICKS))
        self._mux(self.stream.encode())
        if self.sound is not None:
            self._copy_sound(until)

    def close(self) -> None:
        self.container.close()
        if self.source is not None:
            self.source.close()

    def _copy_sound(self, until: float | None) -> None:
        audio = self.source.streams.audio[0]
        try:
            for packet in self.source.demux(audio):
                if packet.dts is None:  # the demuxer's last, empty packet
                    continue
                if until is not None and packet.pts is not None and float(packet.pts * packet.time_base) > until:
                    break
                packet.stream = self.sound
                self.container.mux(packet)
        except av.error.FFmpegError as error:  # a damaged sound track: the video keeps what was copied
            log.warning("the sound was copied only in part: %s", error)

    def _encode(self, until: int) -> None:
        if self.pending is not None:
            self.durations[self.pending.pts] = max(1, until - self.pending.pts)
            self._mux(self.stream.encode(self.pending))

    def _mux(self, packets) -> None:
        for packet in packets:
            if packet.pts is not None and packet.pts in self.durations:
                packet.duration = self.durations.pop(packet.pts)
            self.container.mux(packet)
