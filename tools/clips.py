"""Synthetic clips of a moving face, shared by the tools and tests that measure motion and video.

The example portrait on a grey 640x480 frame, slid left and right by a triangle wave; as frames
(PIL images) or as a video file written with PyAV.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PORTRAIT = ROOT / "demo" / "examples" / "astronaut.jpg"
SIZE = (640, 480)
PORTRAIT_HEIGHT = 300


def portrait(photo: Path = PORTRAIT) -> Image.Image:
    face = Image.open(photo).convert("RGB")
    return face.resize((round(face.width * PORTRAIT_HEIGHT / face.height), PORTRAIT_HEIGHT))


def frame_at(face: Image.Image, offset: float) -> Image.Image:
    """The portrait centred on the grey frame, moved `offset` pixels to the right."""
    canvas = Image.new("RGB", SIZE, (90, 90, 90))
    canvas.paste(face, (round((SIZE[0] - face.width) / 2 + offset), (SIZE[1] - face.height) // 2))
    return canvas


def offsets(span: float, period_s: float, fps: float, frames: int) -> list[float]:
    """A triangle wave from -span/2 to +span/2 and back every `period_s`, sampled `fps` times a second."""
    out = []
    for k in range(frames):
        phase = (k / fps / period_s) % 1.0
        out.append(span * (2 * phase if phase < 0.5 else 2 - 2 * phase) - span / 2)
    return out


def write_clip(path: Path, face: Image.Image, shifts: list[float], fps: float, codec: str = "libx264") -> Path:
    """The portrait at each shift as a video file (PyAV), `fps` frames a second."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        for shift in shifts:
            frame = av.VideoFrame.from_ndarray(np.asarray(frame_at(face, shift)), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def passing_clip(path: Path, front: Path, behind: Path, frames: int = 50, fps: float = 8, step: int = 15,
                 size: tuple[int, int] = (960, 360), height: int = 200) -> Path:
    """Two people walking past each other: `front`'s portrait from the left edge rightwards, `behind`'s from the
    right edge leftwards, `step` px a frame each, the first drawn over the second (who is hidden while they
    overlap: 6 frames, 0.75 s, at the defaults)."""
    import av

    people = []
    for photo in (front, behind):
        image = Image.open(photo).convert("RGB")
        people.append(image.resize((round(image.width * height / image.height), height)))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for k in range(frames):
            canvas = Image.new("RGB", size, (90, 90, 90))
            canvas.paste(people[1], (size[0] - people[1].width - 20 - step * k, (size[1] - height) // 2))
            canvas.paste(people[0], (20 + step * k, (size[1] - height) // 2))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(canvas), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
