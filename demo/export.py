"""Results as data: the CSV rows of the batch CLI and the Photo and Video tabs' downloads, and the per-face JSON.

One format each, shared: a row per (file, [video frame,] face, model) with the columns below, and per
face a record holding its box, its detection score and each model's age, 80 % range and P(female).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from demo.predictor import ImageResult, ModelAnswer

# frame and time_s: empty for a photo; for a video, the frame's index (from 0) and time in seconds.
COLUMNS = ["file", "frame", "time_s", "face", "x1", "y1", "x2", "y2", "det_score", "model", "age", "age_low",
           "age_high", "gender", "p_female", "note", "error"]


def rows_for(file: str, result: ImageResult, frame: int | None = None, seconds: float | None = None) -> list[dict]:
    """The CSV rows of one photo, or of one video frame (`frame` from 0, at `seconds`): one per (face, model);
    a face too small to judge, or a photo without faces, gets one row with a `note` (a frame without faces
    gets none)."""
    rows = []
    where = {"file": file} if frame is None else {"file": file, "frame": frame, "time_s": _rounded(seconds, 3)}
    for face in result.faces:
        x1, y1, x2, y2 = (round(v, 1) for v in face.face.box)
        base = {**where, "face": face.number, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                "det_score": round(face.face.score, 4)}
        if not face.judged:
            rows.append({**base, "note": "face too small to judge"})
            continue
        rows += [{**base, "model": key, **_answer(answer)} for key, answer in face.answers.items()]
    if not result.faces and frame is None:
        rows.append({"file": file, "note": result.note})
    return rows


def faces_data(result: ImageResult) -> list[dict]:
    """Per face, numbered left to right: {"face", "box": [x1, y1, x2, y2] in pixels, "detection_score",
    "judged", "models": {key: {"age", "age_low", "age_high", "gender", "p_female"}}} (an empty
    "models" for a face too small to judge; None for a task a model was not trained on)."""
    return [{"face": face.number, "box": [round(v, 1) for v in face.face.box],
             "detection_score": round(face.face.score, 4), "judged": face.judged,
             "models": {key: _answer(a) for key, a in face.answers.items()}} for face in result.faces]


def write_results(folder: Path, file: str, result: ImageResult) -> list[Path]:
    """The photo's results as `<name>_faces.csv` (the batch CLI's columns) and `<name>_faces.json`."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(file).stem or "photo"
    csv_path, json_path = folder / f"{stem}_faces.csv", folder / f"{stem}_faces.json"
    write_rows(csv_path, rows_for(Path(file).name, result))
    json_path.write_text(json.dumps({"file": Path(file).name, "image_size": list(result.size),
                                     "faces": faces_data(result)}, indent=1) + "\n")
    return [csv_path, json_path]


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Rows as a CSV file with the shared columns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _answer(answer: ModelAnswer) -> dict:
    """One model's answer for one face, as both formats give it."""
    return {"age": _rounded(answer.age, 1), "age_low": answer.age_low, "age_high": answer.age_high,
            "gender": answer.gender, "p_female": _rounded(answer.p_female, 4)}


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)  # None: a task the model was not trained on
