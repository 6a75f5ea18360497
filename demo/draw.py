"""Drawing numbered face boxes with both models' answers onto a copy of the photo."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from demo.predictor import ImageResult

COLOURS = ((46, 204, 113), (52, 152, 219), (241, 196, 15), (231, 76, 60), (155, 89, 182), (26, 188, 156))
SMALL_COLOUR = (160, 160, 160)


def face_label(result_face, model_keys: list[str]) -> str:
    """'#2 A: 31 F  B: 34 F', or '#2 too small'."""
    if not result_face.judged:
        return f"#{result_face.number} too small"
    answers = [f"{key.upper()}: {a.short()}" for key in model_keys if (a := result_face.answers.get(key))]
    return f"#{result_face.number} " + "  ".join(answers)


def annotate(image: Image.Image, result: ImageResult, model_keys: list[str]) -> Image.Image:
    canvas = image.copy()
    draw = ImageDraw.Draw(canvas)
    # Scale line width and text with the photo so labels stay legible on 4000 px phone photos.
    unit = max(1, round(max(image.size) / 640))
    font = ImageFont.load_default(size=12 * unit + 2)
    for face in result.faces:
        colour = COLOURS[(face.number - 1) % len(COLOURS)] if face.judged else SMALL_COLOUR
        x1, y1, x2, y2 = face.face.box
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=2 * unit)
        text = face_label(face, model_keys)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        w, h = right - left + 4 * unit, bottom - top + 4 * unit
        # Above the box; below it where the box touches the top; inside its top where it fills the photo.
        if y1 - h >= 0:
            ty = y1 - h
        elif y2 + h <= canvas.height:
            ty = y2
        else:
            ty = min(max(0, y1), max(0, canvas.height - h))
        tx = min(max(0, x1), max(0, canvas.width - w))
        draw.rectangle((tx, ty, tx + w, ty + h), fill=colour)
        draw.text((tx + 2 * unit - left, ty + 2 * unit - top), text, fill=(0, 0, 0), font=font)
    return canvas
