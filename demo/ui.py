"""The Gradio interface: photo, webcam and video tabs over one Predictor. Built, not launched."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from gradio.utils import get_upload_folder
from PIL import Image

from demo.cards import read_measured
from demo.draw import annotate
from demo.export import faces_data, rows_for, write_results, write_rows
from demo.faces import MIN_SCORE
from demo.files import atomic_write
from demo.heads import GENDER_LABELS
from demo.images import ImageError, load_image, to_rgb
from demo.live import STREAM_EVERY, STREAM_LIMIT_S, STREAM_SLOTS, LiveSession, StreamTurns
from demo.predictor import ImageResult, Predictor
from demo.saliency import Explainer, overlay
from demo.tracking import WINDOW
from demo.video import VIDEO_SUFFIXES, VideoError, judge

log = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).parent / "examples"
TABLE_HEADERS = ["face", "detection"]
# Gradio keeps a copy of the page's state per session, 10,000 sessions by default: a Space's memory
# then grows with every new visitor (tools.loadtest --soak). The most recent SESSIONS_KEPT stay; an
# older visitor coming back only starts a new webcam tracker.
SESSIONS_KEPT = 100
# Uploads and answers are files in Gradio's cache: those older than AGEGENDER_CACHE_MINUTES (15 by
# default) are deleted, checked a third as often, so the cache holds about that many minutes of traffic
# (sweep_cache: Gradio's own sweep leaves the answers it does not track).
CACHE_AGE_S = round(60 * float(os.environ.get("AGEGENDER_CACHE_MINUTES", 15)))
CACHE_SWEEP_S = max(1, CACHE_AGE_S // 3)
WEBCAM_SIZE = {"width": 640, "height": 480}
# The Video tab judges clips up to this long and this large (the batch CLI takes any), every
# VIDEO_EVERY-th frame by default: about a minute of this CPU for the longest clip.
VIDEO_MAX_SECONDS = 60
VIDEO_MAX_MB = 100
# No upload may be larger than the largest file any tab accepts: a visitor cannot fill a Space's disk.
UPLOAD_MAX_BYTES = VIDEO_MAX_MB * 1_000_000
VIDEO_EVERY = 5


def pass_uploads_as_they_are(component: gr.Image) -> gr.Image:
    """Hand our loader the file the user uploaded, not Gradio's conversion of it.

    Gradio opens an upload and saves it again as 8-bit RGB before the event sees it: a 16-bit PNG
    comes out blown to black and white, a transparent PNG on black, and a broken file fails inside
    Gradio with a generic error. `load_image` handles all three (and EXIF orientation) from the
    original bytes. (Wrapping the instance: a gr.Image subclass would make Gradio write a .pyi stub
    next to this file at import time.)
    """
    default = component.preprocess

    def preprocess(payload):
        if payload is not None and payload.path:
            return str(payload.path)
        return default(payload)

    component.preprocess = preprocess
    return component


def write_cached_images_atomically() -> None:
    """Make Gradio write each output image to its cache atomically.

    Gradio 6 names a cached output by the hash of its bytes and writes it in place. Two requests
    with the same answer (the same photo uploaded twice, an example clicked by two users) then
    write one file while a client downloads it, and the download is cut short (seen in
    `tools.loadtest --same-image`: 5 of 500 requests failed). Writing to a temporary name and
    renaming makes every reader see a whole file; a file that already exists already holds these
    bytes, and only its time is refreshed.
    """
    from gradio import processing_utils

    if getattr(processing_utils.save_pil_to_cache, "atomic", False):
        return

    def save_pil_to_cache(img: Image.Image, cache_dir: str, name: str = "image", format: str = "webp") -> str:
        data = processing_utils.encode_pil_to_bytes(img, format)
        folder = Path(cache_dir) / processing_utils.hash_bytes(data)
        folder.mkdir(exist_ok=True, parents=True)
        path = (folder / f"{name}.{format}").resolve()
        if path.exists():
            # Reused (the same answer again): refresh its time, or the cache sweep (CACHE_AGE_S) could
            # delete it as old while this answer is being downloaded.
            path.touch()
        else:
            with atomic_write(path) as tmp:
                tmp.write_bytes(data)
        return str(path)

    save_pil_to_cache.atomic = True
    processing_utils.save_pil_to_cache = save_pil_to_cache


def result_table(result: ImageResult, names: dict[str, str]) -> list[list[str]]:
    """One row per face: its number, detection score, and each model's age (80 % range) and gender."""
    rows = []
    for face in result.faces:
        row = [f"#{face.number}", f"{face.face.score:.2f}"]
        for key in names:
            answer = face.answers.get(key)
            row += ["too small", ""] if answer is None else [answer.age_text(), answer.gender_text()]
        rows.append(row)
    return rows


def gender_disagreement(answers: dict, gender_accuracy: dict[str, float | None]) -> str:
    """'' when the models agree on gender; else a sentence saying which model to trust more, and why:
    the share of test faces whose gender each model got right (from its model card)."""
    genders = {key: a.gender for key, a in answers.items() if a.gender in GENDER_LABELS}  # "unsure" disagrees with none
    if len(set(genders.values())) < 2:
        return ""
    measured = {key: gender_accuracy.get(key) for key in genders if gender_accuracy.get(key) is not None}
    if len(measured) < len(genders):
        return "the models disagree on gender."
    best = max(measured, key=measured.get)
    others = ", ".join(f"{k.upper()} {100 * measured[k]:.1f} %" for k in measured if k != best)
    return (f"the models disagree on gender. On the test faces of their model cards, {best.upper()} got "
            f"{100 * measured[best]:.1f} % of genders right ({others}): trust {best.upper()} more.")


def photo_note(result: ImageResult, min_score: float, gender_accuracy: dict[str, float | None]) -> str:
    """What the page says under a photo: how many faces, what was left out, and where the models disagree."""
    if result.note:
        return result.note
    lines = [f"{len(result.faces)} face(s) found." + (
        f" {result.below_min_score} detection(s) below the minimum score {min_score:.2f} left out."
        if result.below_min_score else "")]
    lines += [f"#{face.number}: {text}" for face in result.faces
              if (text := gender_disagreement(face.answers, gender_accuracy))]
    return "\n\n".join(lines)


def saliency_items(result: ImageResult, explainers: dict[str, Explainer]) -> list[tuple[Image.Image, str]]:
    """Per judged face and model, its age map and its gender map side by side over the crop, captioned."""
    judged = [face for face in result.faces if face.judged]
    maps = {key: explainer.maps([face.crop for face in judged]) for key, explainer in explainers.items()}
    items = []
    for i, face in enumerate(judged):
        for key in explainers:
            pair = [overlay(face.crop, maps[key][i].age), overlay(face.crop, maps[key][i].gender)]
            image = Image.new("RGB", (2 * face.crop.width + 4, face.crop.height), (255, 255, 255))
            image.paste(pair[0], (0, 0))
            image.paste(pair[1], (face.crop.width + 4, 0))
            items.append((image, f"#{face.number} · {key.upper()}: {maps[key][i].caption()}"))
    return items


def gallery_items(result: ImageResult, names: dict[str, str]) -> list[tuple[Image.Image, str]]:
    items = []
    for face in result.faces:
        if face.crop is not None:
            caption = f"#{face.number} · " + " · ".join(
                f"{key.upper()} {a.short()}" for key, a in face.answers.items())
            items.append((face.crop, caption))
    return items


# On a phone the tables scroll sideways rather than break their cells every few characters.
PAGE_CSS = """
#faces-table td, #faces-table th, #live-table td, #live-table th { white-space: nowrap; }
#camera-message:empty { display: none; }
#camera-message { color: var(--error-text-color, #b91c1c); font-weight: 600; }
/* Gradio's bar under the camera counts down the stream's time limit, which also covers the wait for a turn
   (5 turns): the status line says the seconds left of this visitor's turn instead. */
#camera .streaming-bar { display: none; }
/* The maps' gallery grows with its maps (two per face and model) instead of scrolling inside a box of Gradio's. */
#saliency .grid-wrap { max-height: none; }
/* On a phone a crop's caption ("#1 · A 31 F | B 30 M") wraps over its crop rather than losing its end. */
@media (max-width: 600px) {
  #crops .caption-label, #saliency .caption-label { white-space: normal; max-width: 100%; left: 0; }
}
"""
# The browser refuses the camera without telling the page's webcam component anything a visitor
# sees: wrap getUserMedia and say why, and what to do, above the camera.
PAGE_HEAD = """<script>
(() => {
  // The page is built by script after load: wait for the message's place (10 s at most).
  const say = (text, tries = 50) => {
    const el = document.getElementById("camera-message");
    if (el) el.textContent = text; else if (tries) setTimeout(() => say(text, tries - 1), 200);
  };
  const media = navigator.mediaDevices;
  if (!media || !media.getUserMedia) {
    say("This browser gives this page no camera: it needs a secure address (https:// or localhost) and a " +
      "browser that allows cameras.");
    return;
  }
  const open = media.getUserMedia.bind(media);
  media.getUserMedia = async (constraints) => {
    try {
      const stream = await open(constraints);
      say("");
      return stream;
    } catch (error) {
      say(error.name === "NotAllowedError" || error.name === "SecurityError"
        ? "The camera was refused. Allow it for this site (the camera icon in the address bar, or the " +
          "browser's site settings), then click the camera area again."
        : error.name === "NotFoundError" || error.name === "OverconstrainedError"
        ? "No camera was found. Connect one, or use the Photo tab."
        : "The camera could not be opened (" + error.name + "): another app may be using it.");
      throw error;
    }
  };
})();
</script>"""


def launch(demo: gr.Blocks, host: str, port: int | None, sessions_kept: int = SESSIONS_KEPT, **kwargs) -> tuple:
    """Serve the app with its page style and script, a bounded queue, a bounded number of sessions kept, a
    swept cache, and uploads no larger than the largest file a tab accepts (a video's VIDEO_MAX_MB): Gradio
    refuses a larger one with HTTP 413 as it streams in, before it is stored, and the page says so."""
    sweep_cache(demo)  # first: launch blocks unless told not to
    kwargs.setdefault("max_file_size", UPLOAD_MAX_BYTES)
    return demo.queue(max_size=64).launch(server_name=host, server_port=port, state_session_capacity=sessions_kept,
                                          css=PAGE_CSS, head=PAGE_HEAD, **kwargs)


def sweep_cache(demo: gr.Blocks, age_s: float = CACHE_AGE_S, every_s: float = CACHE_SWEEP_S) -> threading.Thread:
    """Every `every_s`, delete the files in Gradio's cache older than `age_s`, but the examples it keeps.

    Gradio's own sweep (Blocks(delete_cache=...)) deletes only files it tracks, and it does not track the
    answers' images (tools.loadtest --soak: the cache grew by 17 MB a hundred visitors with it on).
    A file served again has its time refreshed (write_cached_images_atomically), so it is not deleted
    while in use.
    """
    folder = Path(get_upload_folder())

    def loop() -> None:
        while True:
            time.sleep(every_s)
            keep = {str(Path(p).resolve()) for block in list(demo.blocks.values())
                    for p in list(getattr(block, "keep_in_cache", ()))}
            try:
                removed = sweep_once(folder, age_s, keep)
                if removed:
                    log.debug("cache sweep: %d file(s) older than %.0f s deleted", removed, age_s)
            except OSError as error:  # a file gone under our feet, a permission: try again next time
                log.warning("cache sweep: %s", error)

    thread = threading.Thread(target=loop, name="cache-sweep", daemon=True)
    thread.start()
    return thread


def sweep_once(folder: Path, age_s: float, keep: set[str] = frozenset()) -> int:
    """Delete the files under `folder` last written more than `age_s` ago, but those in `keep`; return how many."""
    now, removed = time.time(), 0
    for path in list(folder.rglob("*")):
        try:
            if path.is_file() and str(path.resolve()) not in keep and now - path.stat().st_mtime > age_s:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # a request's own clean-up got there first
            continue
    return removed


def warm_up(predictor: Predictor) -> None:
    """One example frame through detection and both models, so the first user does not wait for it."""
    frame = load_image(EXAMPLES_DIR / "astronaut.jpg").resize((WEBCAM_SIZE["width"], WEBCAM_SIZE["height"]))
    predictor.predict(frame)


@dataclass(frozen=True)
class Page:
    """What the tabs of one app share: the predictors, the models' keys and names, the tables' headers, and
    where answers' files go."""

    predictor: Predictor
    live_predictor: Predictor  # serves webcam frames; it may use a faster detector
    results_folder: Path

    @property
    def keys(self) -> list[str]:
        return list(self.predictor.models)

    @property
    def names(self) -> dict[str, str]:
        return {k: m.config.name for k, m in self.predictor.models.items()}

    @property
    def headers(self) -> list[str]:
        return TABLE_HEADERS + [f"{k.upper()} {h}" for k in self.keys for h in ("age (80 % range)", "gender")]


def build_demo(predictor: Predictor, live_predictor: Predictor | None = None, sources: dict[str, str] | None = None,
               stream_every: float = STREAM_EVERY, turns: StreamTurns | None = None) -> gr.Blocks:
    """The app. `live_predictor` (default: `predictor`) serves webcam frames; it may use a faster detector.

    `stream_every` is the fastest a webcam session is offered frames: the browser sends the next
    frame only once the last is answered, so each session's rate follows the machine below it.
    `turns` shares the camera among sessions (default: STREAM_SLOTS at once, STREAM_LIMIT_S each).
    """
    turns = turns or StreamTurns(STREAM_SLOTS, STREAM_LIMIT_S)
    write_cached_images_atomically()
    page = Page(predictor, live_predictor or predictor, Path(get_upload_folder()) / "results")
    measured = {k: read_measured(m.folder) for k, m in predictor.models.items()}
    warm_up(page.live_predictor)
    source_lines = [f"- **{page.names[k]}**: " + "; ".join(filter(None, (
        sources.get(k) if sources else None,
        f"measured on test faces: {measured[k].summary()}" if measured[k] else None))) for k in page.keys]
    with gr.Blocks(title="Age and gender: from scratch vs transfer learning") as demo:
        gr.Markdown(
            "# Age and gender, two ways\n"
            "Every face is found with MTCNN and judged by **Model A**, a CNN trained from scratch, and "
            "**Model B**, a face-recognition network fine-tuned on the same data. Ages come with an 80 % range. "
            "Both models were trained on UTKFace and FairFace and estimate apparent age and binary gender as "
            "labelled there: a demonstration, not a judgement about anyone. Photos and camera frames are sent "
            f"to this server to be judged; uploads and answers are deleted after {CACHE_AGE_S // 60} minutes."
        )
        gr.Markdown("Models in use:\n" + "\n".join(source_lines), elem_id="model-sources")
        with gr.Tab("Photo") as photo_tab:
            photo_tab_contents(page, {k: m.gender_accuracy if m else None for k, m in measured.items()})
        with gr.Tab("Webcam") as webcam_tab:
            session, live_rate = webcam_tab_contents(page, turns, stream_every)
        with gr.Tab("Video"):
            video_tab_contents(page)
        # While the Webcam tab is open, a tick a second notices a stream that stopped (Gradio tells the
        # server nothing when Stop is pressed).
        watch = gr.Timer(1.0, active=False)
        watch.tick(partial(watch_stream, turns), [session], [live_rate], show_progress="hidden",
                   api_visibility="private", concurrency_limit=None)
        webcam_tab.select(lambda: gr.Timer(active=True), None, watch, api_visibility="private")
        photo_tab.select(lambda: gr.Timer(active=False), None, watch, api_visibility="private")
    return demo


def photo_tab_contents(page: Page, gender_accuracy: dict[str, float | None]) -> None:
    """The Photo tab: upload, paste or pick a photo; every face boxed with both models' answers, a table, the
    crops, a note, the results as data, and on request where each model looks. Its event is the `/predict` API."""
    explainers = {key: Explainer(model) for key, model in page.predictor.models.items()}

    def predict_photo(path: str | None, min_score: float = MIN_SCORE, explain: bool = False):
        """Annotated photo, table, crops, note, per-face data, the data's files and, on request, where each
        model looks, for one upload."""
        if not path:
            return None, [], [], "Upload a photo first.", [], None, []
        try:
            image = load_image(path)
        except ImageError as error:
            # In the page, where it stays, with the previous photo's answers cleared.
            return None, [], [], f"**Could not use this file:** {error}.", [], None, []
        result = page.predictor.predict(image, min_score=min_score)
        # The files go to Gradio's cache, which sweep_cache empties of old files.
        files = write_results(page.results_folder / uuid.uuid4().hex, Path(path).name, result)
        return (annotate(image, result, page.keys), result_table(result, page.names), gallery_items(result, page.names),
                photo_note(result, min_score, gender_accuracy), faces_data(result), [str(f) for f in files],
                saliency_items(result, explainers) if explain else [])

    def rescore_photo(path: str | None, min_score: float, explain: bool):
        """Moving the slider or ticking the maps re-runs the photo shown, if there is one."""
        if not path:
            return (gr.skip(),) * 7
        return predict_photo(path, min_score, explain)

    with gr.Row():
        photo = pass_uploads_as_they_are(
            gr.Image(type="filepath", sources=["upload", "clipboard"], label="Photo", height=420))
        annotated = gr.Image(type="pil", label="Faces", format="jpeg", height=420, elem_id="annotated")
    min_score = gr.Slider(0.8, 1.0, value=MIN_SCORE, step=0.01, label="Minimum detection score",
                          info="Detections scoring lower are left out: below the default they are "
                               "mostly ears, hands and patterns. (MTCNN reports nothing under 0.8.)")
    note = gr.Markdown(label="note", elem_id="note")
    table = gr.Dataframe(headers=page.headers, label="Per face", interactive=False, elem_id="faces-table")
    # fit_columns=False: one crop stays a thumbnail instead of filling the width.
    crops = gr.Gallery(label="Face crops as the models see them", columns=6, height=230, fit_columns=False,
                       object_fit="contain", elem_id="crops")
    button = gr.Button("Find faces", variant="primary")
    explain = gr.Checkbox(False, label="Show where each model looks",
                          info="A heatmap per face and model, for the age and gender answers shown "
                               "(HiResCAM); 20-40 ms more for one face, 50-110 ms for five, on a "
                               "quiet 2-core CPU.", elem_id="explain")
    looks = gr.Gallery(label="Where each model looks: age | gender", columns=4, height="auto",
                       object_fit="contain", elem_id="saliency")
    gr.Markdown("How to read the maps: warm colours mark the parts of the face whose features raised that "
                "answer most (the age range the model gave, on the left; the gender it gave, on the right); "
                "dark parts counted little. Each map is scaled to its own peak, so compare where the models "
                "look, not how strongly. [More](https://github.com/jacobgil/pytorch-grad-cam#readme) on "
                "Grad-CAM and HiResCAM; how these maps were checked: docs/serving.md.", elem_id="saliency-help")
    with gr.Accordion("Results as data: JSON and CSV", open=False):
        faces = gr.JSON(label="faces", elem_id="faces-json")
        downloads = gr.File(label="Download", file_count="multiple", elem_id="downloads")
    outputs = [annotated, table, crops, note, faces, downloads, looks]
    examples = sorted(str(p) for p in EXAMPLES_DIR.glob("*.jpg"))
    if examples:  # a click on an example runs it, as an upload does
        gr.Examples(examples=examples, inputs=[photo], outputs=outputs, fn=predict_photo, run_on_click=True,
                    cache_examples=False, api_visibility="private")
    inputs = [photo, min_score, explain]
    button.click(predict_photo, inputs, outputs, api_name="predict", concurrency_id="photo", concurrency_limit=2)
    photo.upload(predict_photo, inputs, outputs, api_name=False, concurrency_id="photo")
    # .input: a drag, the arrow keys and a typed value all re-run the photo; while one run is
    # going, only the last value is kept.
    for control in (min_score, explain):
        control.input(rescore_photo, inputs, outputs, api_name=False, concurrency_id="photo",
                      trigger_mode="always_last")


def webcam_tab_contents(page: Page, turns: StreamTurns, stream_every: float) -> tuple[gr.State, gr.Markdown]:
    """The Webcam tab: frames streamed from the browser, answered annotated, each face followed by this page's
    tracker, the camera shared in turns. Its event is the `/stream` API. Returns the page's session state and its
    status line, which the app's timer updates when a stream stops."""

    def predict_frame(frame: np.ndarray | None, session: LiveSession | None):
        """One webcam frame; `session` (tracker, frame rate, turn) is this page's, made on its first frame."""
        if frame is None:
            return None, gr.skip(), gr.skip(), session
        session = session or LiveSession()
        session.frame_arrived(time.monotonic(), turns.gap_s)
        if message := turns.turn(session):
            return None, [], message, session
        arrived = time.perf_counter()
        image = to_rgb(Image.fromarray(frame))
        result = session.tracker.update(page.live_predictor.predict(image), at=time.monotonic())
        annotated = np.asarray(annotate(image, result, page.keys))
        session.meter.frame(arrived, time.perf_counter())
        session.last_seen = time.monotonic()
        status = f"{session.meter.status()} {turns.left_s(session):.0f} s left of your turn."
        return annotated, result_table(result, page.names), status, session

    gr.Markdown(f"Allow the camera, then press record. Each face keeps its number while it stays in view, "
                f"and its answers are averaged over its last {WINDOW} frames, so they hold still. Frames "
                f"are answered as fast as this machine can, up to {1 / stream_every:.0f} a second. "
                f"{turns.slots} people can stream at once, {turns.limit_s:.0f} s each; others wait "
                "their turn, and this page says so.")
    gr.HTML('<div id="camera-message" role="alert"></div>')
    with gr.Row():
        camera = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Camera", elem_id="camera",
                          webcam_options=gr.WebcamOptions(mirror=True, constraints={"video": WEBCAM_SIZE}))
        live = gr.Image(label="Live", format="jpeg", elem_id="live")
    live_rate = gr.Markdown(label="status", elem_id="live-rate")
    live_table = gr.Dataframe(headers=page.headers, label="Per face, averaged over its recent frames",
                              interactive=False, elem_id="live-table")
    session = gr.State(None)  # this page's LiveSession
    # No concurrency limit of Gradio's: StreamTurns decides whose frames the models answer, and a
    # waiting session's frames are answered at once with its place in line, not queued behind them.
    # Gradio's time limit only ends streams left running far past their turn.
    camera.stream(predict_frame, [camera, session], [live, live_table, live_rate, session],
                  stream_every=stream_every, time_limit=5 * turns.limit_s, concurrency_limit=None,
                  concurrency_id="webcam", show_progress="hidden", api_name="stream")
    return session, live_rate


def watch_stream(turns: StreamTurns, session: LiveSession | None):
    """Every second on the Webcam tab: when this page's frames have stopped, give up its turn and say so."""
    if session is None or session.last_seen is None or not session.stopped(time.monotonic(), turns.gap_s):
        return gr.skip()
    turns.leave(session)
    session.last_seen = None  # said once; the next frame starts a new stream
    return "Stopped. Press record to start again."


def video_tab_contents(page: Page) -> None:
    """The Video tab: a clip judged every k-th frame with the tracker; back come the annotated video, each face's
    age over time and every answer as CSV. Its event is the `/video` API."""

    def predict_video(path: str | None, every: float, progress=gr.Progress()):  # noqa: B008 (Gradio reads it)
        """Annotated video, each face's age over time, every answer as CSV, and a note, for one clip."""
        if not path:
            return None, None, None, "Upload a clip first."
        folder, name = page.results_folder / uuid.uuid4().hex, Path(path).name
        started = time.perf_counter()
        try:
            run = judge(path, page.predictor, int(every), out=folder / f"{Path(name).stem}_faces.mp4",
                        progress=lambda done, total: progress((done, total), desc="frames judged"),
                        max_seconds=VIDEO_MAX_SECONDS, max_bytes=VIDEO_MAX_MB * 1_000_000)
        except VideoError as error:
            return None, None, None, f"**Could not use this file:** {error}."
        seconds = time.perf_counter() - started
        rows = [row for j in run.judged for row in rows_for(name, j.result, j.frame, j.seconds)]
        csv_path = write_rows(folder / f"{Path(name).stem}_faces.csv", rows)
        plot = pd.DataFrame([{"time_s": r["time_s"], "age": r["age"], "face": f"#{r['face']} {r['model'].upper()}"}
                             for r in rows if r.get("age") is not None], columns=["time_s", "age", "face"])
        faces = {r["face"] for r in rows}
        note = (f"{len(run.judged)} frames judged (every {run.every}: {run.info.fps:.0f} frames a second in a "
                f"{run.info.seconds:.1f} s clip), {len(faces)} face(s) followed, in {seconds:.1f} s "
                f"({len(run.judged) / seconds:.1f} frames a second on this machine)."
                + (f" **{run.stopped}.**" if run.stopped else ""))
        return str(folder / f"{Path(name).stem}_faces.mp4"), plot, str(csv_path), note

    kinds = ", ".join(sorted(suffix.lstrip(".") for suffix in VIDEO_SUFFIXES))
    gr.Markdown(f"Upload a clip ({kinds}; up to {VIDEO_MAX_SECONDS} s and {VIDEO_MAX_MB} MB). Every "
                "k-th frame is judged with the webcam's tracker, so each face keeps its number; back come "
                "the annotated frames as a video, each face's age over time from both models, and a CSV of "
                "every answer. Longer clips: `python -m demo.predict clips/ --out x.csv --every 5`.")
    with gr.Row():
        # A file box, not a player: the browser cannot play many clips judged here (AVI, Matroska, HEVC), and
        # Gradio's player raises its own "Video not playable" popup beside this tab's message for a bad one.
        clip = gr.File(label="Clip", file_types=sorted(VIDEO_SUFFIXES), elem_id="clip")
        annotated_video = gr.Video(label="Annotated video", elem_id="annotated-video")
    every = gr.Slider(1, 30, value=VIDEO_EVERY, step=1, label="Judge every k-th frame",
                      info="1 judges every frame: slower, smoother")
    video_button = gr.Button("Judge the clip", variant="primary")
    video_note = gr.Markdown(label="note", elem_id="video-note")
    age_plot = gr.LinePlot(x="time_s", y="age", color="face", label="Age over time",
                           x_title="time (s)", y_title="age (years)", elem_id="age-plot")
    video_csv = gr.File(label="Every answer (CSV)", elem_id="video-csv")
    # One clip at a time: a clip is seconds to a minute of this machine.
    video_button.click(predict_video, [clip, every], [annotated_video, age_plot, video_csv, video_note],
                       api_name="video", concurrency_id="video", concurrency_limit=1)
