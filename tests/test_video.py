"""Videos: clips the tests make themselves (PyAV), judged frame by frame with the tracker, bad files refused."""

import csv
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from demo.video import VideoError, judge, probe
from tests.conftest import ASTRONAUT, PredictKiller


def make_clip(path: Path, frames: int = 12, fps: int = 6, codec: str = "libx264") -> Path:
    """The portrait sliding across a grey 640x480 frame (the motion tool's clip), `frames` long."""
    from tools.clips import offsets, portrait, write_clip

    shifts = offsets(span=60, period_s=frames / fps, fps=fps, frames=frames)  # at most 10 px a frame
    return write_clip(path, portrait(ASTRONAUT), shifts, fps, codec)


def make_audio(path: Path, seconds: float = 1.0) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = (np.sin(np.linspace(0, 440 * 2 * np.pi * seconds, int(16000 * seconds))) * 0.3).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate, frame.time_base = 16000, Fraction(1, 16000)
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize(("name", "codec"), [("clip.mp4", "libx264"), ("clip.webm", "libvpx-vp9"),
                                             ("clip.mov", "libx264")])
def test_a_clip_is_judged_frame_by_frame_and_comes_back_annotated(predictor, tmp_path, name, codec):
    clip = make_clip(tmp_path / name, codec=codec)
    out = tmp_path / "annotated.mp4"
    progress = []
    run = judge(clip, predictor, every=2, out=out, progress=lambda done, total: progress.append((done, total)))
    assert [j.frame for j in run.judged] == list(range(0, 12, 2))
    assert [round(j.seconds, 3) for j in run.judged] == [round(i / 6, 3) for i in range(0, 12, 2)]
    assert all([f.number for f in j.result.faces] == [1] for j in run.judged)  # one face, keeping its number
    assert progress[-1] == (6, 6)
    with av.open(str(out)) as container:  # H.264 in MP4, 4:2:0: plays in every browser
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        times = [round(float(f.pts * f.time_base), 3) for f in container.decode(stream)]
        assert times == [round(j.seconds, 3) for j in run.judged]  # each at its source time
        assert float(stream.average_rate) == pytest.approx(3, rel=1e-3)


def test_bad_videos_get_clear_messages(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    cases = [(empty, "empty"), (noise, "not a video we can read"),
             (make_audio(tmp_path / "voice.m4a"), "has no video stream (it holds audio)"),
             (make_clip(tmp_path / "long.mp4", frames=30, fps=6), "lasts 5 s; videos up to 2 s")]
    for path, message in cases:
        with pytest.raises(VideoError, match=message.replace("(", r"\(").replace(")", r"\)")):
            probe(path, max_seconds=2)


def test_a_clip_cut_off_part_way_is_judged_up_to_the_cut_and_says_so(predictor, tmp_path):
    """A Matroska clip of 8 s cut off inside its 31st frame's data (at that packet's byte offset, as a download
    or a recording that stopped): the library and the batch CLI judge the frames before the cut, and say where
    and why they stopped; nothing is refused, nothing judged twice."""
    from demo.predict import main as cli
    from tools.clips import frame_at, portrait

    face = portrait(ASTRONAUT)
    clip = tmp_path / "whole.mkv"
    with av.open(str(clip), "w", options={"cluster_time_limit": "500"}) as container:  # clusters of 0.5 s
        stream = container.add_stream("libx264", rate=6)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for i in range(48):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(frame_at(face, i)), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(clip)) as container:
        offsets = sorted(p.pos for p in container.demux(container.streams.video[0]) if p.pos is not None and p.pos > 0)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(clip.read_bytes()[: offsets[30]])
    run = judge(cut, predictor)
    assert 10 <= len(run.judged) < 48 and [j.frame for j in run.judged] == list(range(len(run.judged)))
    assert run.stopped.startswith("cut.mkv ends at") and "before the 8.0 s its header gives" in run.stopped
    rows = tmp_path / "rows.csv"
    cli([str(cut), "--out", str(rows), "--offline"])
    written = list(csv.DictReader(rows.open()))
    judged = sorted({int(row["frame"]) for row in written if row["frame"]})
    assert judged == [j.frame for j in run.judged]  # the rows up to the cut, each frame once
    assert written[-1]["error"] == run.stopped and not written[-1]["frame"]  # the last row says why it stopped


def test_the_batch_cli_gives_a_row_per_frame_face_and_model(tmp_path, capsys):
    from demo.predict import main

    folder = tmp_path / "folder_with_a_clip"
    folder.mkdir()
    make_clip(folder / "clip.mp4", frames=12)
    (folder / "voice.m4a").write_bytes(make_audio(tmp_path / "voice.m4a").read_bytes())  # not listed: no video suffix
    out = tmp_path / "x.csv"
    main([str(folder), "--out", str(out), "--offline", "--every", "3"])
    rows = list(csv.DictReader(out.open()))
    assert [(r["frame"], r["model"]) for r in rows] == [(str(f), m) for f in (0, 3, 6, 9) for m in ("a", "b")]
    assert all(r["face"] == "1" and r["file"].endswith("clip.mp4") for r in rows)
    assert [r["time_s"] for r in rows[::2]] == ["0.0", "0.5", "1.0", "1.5"]
    assert "1 file(s) written" in capsys.readouterr().out


def test_the_video_endpoint_gives_the_annotated_video_the_plot_and_the_csv(server, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server[0], verbose=False)
    clip = make_clip(tmp_path / "clip.mp4", frames=12)
    video, plot, csv_file, note = client.predict(handle_file(str(clip)), 2, api_name="/video")
    assert note.startswith("6 frames judged (every 2") and "1 face(s) followed" in note
    with av.open(video["video"] if isinstance(video, dict) else video) as container:
        assert sum(1 for _ in container.decode(container.streams.video[0])) == 6
    series = {row[2] for row in plot["data"]}
    assert series == {"#1 A", "#1 B"} and len(plot["data"]) == 12
    rows = list(csv.DictReader(open(csv_file)))
    assert len(rows) == 12 and rows[0]["file"] == "clip.mp4" and rows[-1]["frame"] == "10"
    # A bad file: a message on the page, and the app keeps serving.
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(b"\x00" * 3000)
    *_, note = client.predict(handle_file(str(noise)), 2, api_name="/video")
    assert note.startswith("**Could not use this file:**")


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_a_phone_clip_stored_sideways_is_judged_upright(predictor, tmp_path, rotation):
    """Stored turned, tagged with the display rotation that turns it back (as phones record portrait video):
    a face in every judged frame, and the annotated video upright, through the library and the batch CLI."""
    from PIL import Image

    from demo.predict import main as cli
    from demo.video import UPRIGHT
    from tools.clips import frame_at, portrait

    face = portrait(ASTRONAUT)
    stored = {90: Image.Transpose.ROTATE_270, -90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180}
    frames = [frame_at(face, shift).transpose(stored[rotation]) for shift in (0, 4, 8, 12)]
    assert frames[0].transpose(UPRIGHT[rotation]).size == (640, 480)  # the tag turns it back
    clip = tmp_path / "phone.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=4)
        stream.width, stream.height, stream.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
        stream.set_display_rotation(rotation)
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = tmp_path / "annotated.mp4"
    run = judge(clip, predictor, out=out)
    assert [len(j.result.faces) for j in run.judged] == [1] * 4
    with av.open(str(out)) as container:  # written upright: as wide as the upright frame, no rotation left
        frame = next(container.decode(container.streams.video[0]))
        assert (frame.width, frame.height) == (640, 480) and frame.rotation == 0
    rows = tmp_path / "rows.csv"
    cli([str(clip), "--out", str(rows), "--offline"])
    judged = [row for row in csv.DictReader(rows.open()) if row["model"] == "a"]
    assert sorted(int(row["frame"]) for row in judged) == [0, 1, 2, 3]


def recorded_clip(path: Path, seconds: int, fps: int = 4) -> Path:
    """A grey Matroska clip written live, as a browser's MediaRecorder writes WebM: to a stream that cannot seek
    back, so its header never gets the duration."""
    import io

    class Pipe(io.RawIOBase):
        def __init__(self):
            self.data = bytearray()

        def writable(self):
            return True

        def write(self, b):
            self.data += bytes(b)
            return len(b)

    pipe = Pipe()
    with av.open(pipe, "w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), 8 * (i % 30), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    path.write_bytes(bytes(pipe.data))
    return path


def test_a_clip_without_a_length_in_its_header_is_judged_up_to_the_limit_only(predictor, tmp_path):
    """No duration in the header, so probe sees 0 s: the limit holds on the decoded time, and the run says the
    rest was not judged."""
    clip = recorded_clip(tmp_path / "recorded.mkv", seconds=5)
    assert probe(clip).seconds == 0  # the header does not say
    run = judge(clip, predictor, max_seconds=2)
    assert len(run.judged) == 9 and max(j.seconds for j in run.judged) <= 2  # 0, 0.25, ... 2.0
    assert run.stopped == "recorded.mkv runs past 2 s, which its header did not say: the first 2 s were judged, " \
                          "the rest was not"
    whole = judge(clip, predictor)  # no limit (the batch CLI's): every frame
    assert whole.stopped is None and len(whole.judged) == 20


def test_the_video_tab_judges_a_90_s_recording_without_a_length_up_to_60_s(server, tmp_path):
    from gradio_client import Client, handle_file

    from demo.ui import VIDEO_MAX_SECONDS

    clip = recorded_clip(tmp_path / "recorded.mkv", seconds=90, fps=1)
    *_, csv_file, note = Client(server[0], verbose=False).predict(handle_file(str(clip)), 1, api_name="/video")
    assert note.startswith(f"{VIDEO_MAX_SECONDS + 1} frames judged") and "the rest was not" in note


def test_a_variable_frame_rate_clip_keeps_its_times(predictor, tmp_path):
    """Ten frames at 5 a second, a 4 s pause, ten more (a phone that dropped frames): the rows and the annotated
    video's frames both carry the source times, every 2nd frame as every one."""
    from tools.clips import frame_at, portrait

    face = portrait(ASTRONAUT)
    times = [i / 5 for i in range(10)] + [5.8 + i / 5 for i in range(10)]
    clip = tmp_path / "vfr.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.asarray(frame_at(face, 2 * i)), format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    for every in (1, 2):
        out = tmp_path / f"annotated_{every}.mp4"
        run = judge(clip, predictor, every=every, out=out)
        assert [round(j.seconds, 3) for j in run.judged] == [round(t, 3) for t in times[::every]]
        with av.open(str(out)) as container:
            shown = [round(float(f.pts * f.time_base), 3) for f in container.decode(container.streams.video[0])]
            length = container.duration / 1e6
        assert shown == [round(t, 3) for t in times[::every]]  # frame 10 at 5.8 s, not at 2.0 s
        assert length == pytest.approx(probe(clip).seconds, abs=0.01)  # as long as the source
    # Sampled by the clip's clock, one frame a second: even in time across the pause, in the library and the CLI.
    run = judge(clip, predictor, every_seconds=1.0)
    assert [round(j.seconds, 3) for j in run.judged] == [0.0, 1.0, 5.8, 6.0, 7.0]
    from demo.predict import main as cli

    rows = tmp_path / "rows.csv"
    cli([str(clip), "--out", str(rows), "--offline", "--every-seconds", "1"])
    assert sorted({float(r["time_s"]) for r in csv.DictReader(rows.open())}) == [0.0, 1.0, 5.8, 6.0, 7.0]


def clip_with_sound(path: Path, seconds: float = 2.0, fps: int = 6) -> Path:
    """The sliding portrait with a 440 Hz tone (AAC), as a phone's clip has sound."""
    from tools.clips import frame_at, portrait

    face = portrait(ASTRONAUT)
    rate = 16000
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 640, 480, "yuv420p"
        sound = container.add_stream("aac", rate=rate)
        for i in range(int(seconds * fps)):
            for packet in video.encode(av.VideoFrame.from_ndarray(np.asarray(frame_at(face, 3 * i)), format="rgb24")):
                container.mux(packet)
        tone = (np.sin(np.arange(int(seconds * rate)) * 440 * 2 * np.pi / rate) * 0.3).astype(np.float32)
        for start in range(0, len(tone), 1024):
            frame = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            for packet in sound.encode(frame):
                container.mux(packet)
        for stream in (video, sound):
            for packet in stream.encode():
                container.mux(packet)
    return path


def _sound_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        assert container.streams.audio, "no sound"
        frames = list(container.decode(container.streams.audio[0]))
        return sum(f.samples for f in frames) / frames[0].sample_rate


def test_the_annotated_video_keeps_the_clips_sound(predictor, server, tmp_path):
    clip = clip_with_sound(tmp_path / "phone.mp4")
    out = tmp_path / "annotated.mp4"
    judge(clip, predictor, every=2, out=out)
    assert _sound_seconds(out) == pytest.approx(_sound_seconds(clip), abs=0.05) and _sound_seconds(out) > 1.9
    with av.open(str(out)) as container:
        assert container.duration / 1e6 == pytest.approx(2.0, abs=0.1)  # the source's length, sound and frames
    # Through the app's API, as a visitor's upload.
    from gradio_client import Client, handle_file

    video, *_ = Client(server[0], verbose=False).predict(handle_file(str(clip)), 2, api_name="/video")
    assert _sound_seconds(Path(video["video"] if isinstance(video, dict) else video)) > 1.9


def test_the_batch_cli_goes_on_with_a_clip_from_where_it_stopped(tmp_path, monkeypatch):
    """Killed while judging frame 6 of 12: the same command judges only frames 5-11 again (the last frame written
    may be cut off), and the rows match a straight run's frames, faces and boxes."""
    from demo.predict import main

    clip = make_clip(tmp_path / "clip.mp4", frames=12)
    straight = tmp_path / "straight.csv"
    main([str(clip), "--out", str(straight), "--offline"])

    killer = PredictKiller(monkeypatch, at=7)
    out = tmp_path / "resumed.csv"
    with pytest.raises(InterruptedError):
        main([str(clip), "--out", str(out), "--offline"])
    assert sorted({int(r["frame"]) for r in csv.DictReader(out.open())}) == list(range(6))
    with out.open("a") as f:
        f.write(f"{clip},5,0.8")  # as if killed while writing a row
    killer.spare()
    main([str(clip), "--out", str(out), "--offline"])
    assert killer.calls == 7  # frames 5 to 11
    where = lambda rows: [(r["frame"], r["time_s"], r["face"], r["x1"], r["y2"], r["model"]) for r in rows]  # noqa: E731
    assert where(csv.DictReader(out.open())) == where(csv.DictReader(straight.open()))


def test_a_clip_that_said_why_it_stopped_is_not_judged_again(tmp_path):
    from demo.predict import earlier_run

    out = tmp_path / "x.csv"
    header = ("file,frame,time_s,face,x1,y1,x2,y2,det_score,model,age,age_low,age_high,gender,p_female,note,error\n")
    rows = ["c.mkv,0,0.0,1,10,10,60,60,0.99,a,30,25,35,male,0.1,,\n",
            "c.mkv,1,0.5,1,20,10,70,60,0.99,a,30,25,35,male,0.1,,\n",
            "c.mkv,,,,,,,,,,,,,,,,c.mkv is damaged at frame 3\n"]
    out.write_text(header + "".join(rows))
    assert earlier_run(out) == ({"c.mkv"}, None)
    assert out.read_text() == header + "".join(rows)
    out.write_text(header + "".join(rows[:2]))  # stopped inside the clip: frame 1 is judged again after frame 0
    finished, clip = earlier_run(out)
    assert finished == set() and clip.file == "c.mkv" and clip.frame == 0
    assert [(t.number, t.box, t.seen_at) for t in clip.tracks] == [(1, (10.0, 10.0, 60.0, 60.0), 0.0)]
    assert clip.numbered == 1
    assert out.read_text() == header + rows[0]


def test_two_people_walking_past_each_other_keep_their_numbers_through_the_cli(tmp_path):
    """A real clip through the batch CLI: the one behind is hidden for 6 frames (0.75 s) while they overlap, and
    comes back with its own number; each number stays on its own face, one walking right and one left."""
    from demo.predict import main
    from tools.clips import passing_clip

    clip = passing_clip(tmp_path / "walk.mp4", ASTRONAUT, ASTRONAUT.with_name("grace_hopper.jpg"))
    out = tmp_path / "walk.csv"
    main([str(clip), "--out", str(out), "--offline", "--models", "b"])
    centres: dict[str, list[tuple[int, float]]] = {}
    for row in csv.DictReader(out.open()):
        centres.setdefault(row["face"], []).append((int(row["frame"]), (float(row["x1"]) + float(row["x2"])) / 2))
    assert sorted(centres) == ["1", "2"]
    hidden = set(range(50)) - {frame for frame, _ in centres["2"]}
    assert 4 <= len(hidden) <= 8 and max(hidden) < 40  # hidden while they overlap, then seen again
    rightwards, leftwards = (np.diff([x for _, x in sorted(centres[n])]) for n in ("1", "2"))
    assert (rightwards > 0).all() and (leftwards < 0).all()  # each number on one face throughout
