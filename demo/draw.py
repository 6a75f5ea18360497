"""Drawing numbered face boxes with both models' answers onto a copy of the photo, labels never overlapping."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from demo.predictor import ImageResult

COLOURS = ((46, 204, 113), (52, 152, 219), (241, 196, 15), (231, 76, 60), (155, 89, 182), (26, 188, 156))
SMALL_COLOUR = (160, 160, 160)

Rect = tuple[float, float, float, float]


@dataclass
class Label:
    text: str
    rect: Rect  # x1, y1, x2, y2 of its background
    colour: tuple[int, int, int]


def face_label(result_face, model_keys: list[str]) -> str:
    """'#2 A: 31 F  B: 34 F', or '#2 too small'."""
    if not result_face.judged:
        return f"#{result_face.number} too small"
    answers = [f"{key.upper()}: {a.short()}" for key in model_keys if (a := result_face.answers.get(key))]
    return f"#{result_face.number} " + "  ".join(answers)


def _overlap(a: Rect, b: Rect) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _candidates(box: Rect, w: float, h: float, size: tuple[int, int]) -> list[Rect]:
    """Where a w x h label may go, best first: above the box, below it, further above and below (a
    ladder for faces side by side), inside its top; each left-aligned, right-aligned or centred."""
    x1, y1, x2, y2 = box
    tops = [y1 - h, y2, y1 - 2 * h, y2 + h, y1 - 3 * h, y2 + 2 * h, y1, y2 - h]
    lefts = [x1, x2 - w, (x1 + x2 - w) / 2]
    out = []
    for top in tops:
        if 0 <= top <= size[1] - h:
            for left in lefts:
                left = min(max(0.0, left), max(0.0, size[0] - w))
                out.append((left, top, left + w, top + h))
    return out or [(min(max(0.0, x1), max(0.0, size[0] - w)), 0.0, min(max(0.0, x1), max(0.0, size[0] - w)) + w, h)]


def layout(result: ImageResult, model_keys: list[str], size: tuple[int, int], measure) -> list[Label]:
    """Each face's label where it overlaps no other label and, if it can, no other face.

    `measure(text)` gives a label's (width, height). A label that fits nowhere whole is cut to the
    face's number (the table below the photo holds every answer); the faces are placed left to right.
    """
    boxes = [face.face.box for face in result.faces]
    placed: list[Label] = []
    for face in sorted(result.faces, key=lambda f: f.face.box[0]):
        colour = COLOURS[(face.number - 1) % len(COLOURS)] if face.judged else SMALL_COLOUR
        others = [b for b in boxes if b is not face.face.box]
        options = []  # per text, whole then cut: ((area over other labels, area over other faces), Label)
        for text in (face_label(face, model_keys), f"#{face.number}"):
            w, h = measure(text)
            scored = [((sum(_overlap(r, p.rect) for p in placed), sum(_overlap(r, b) for b in others)),
                       Label(text, r, colour)) for r in _candidates(face.face.box, w, h, size)]
            options.append(min(scored, key=lambda o: o[0]))  # ties: the first, in order of preference
        # Whole and clear of everything; else cut and clear; else whole over a face, not a label; else the least bad.
        chosen = (next((o for o in options if o[0] == (0, 0)), None)
                  or next((o for o in options if o[0][0] == 0), None) or min(options, key=lambda o: o[0]))
        placed.append(chosen[1])
    return placed


def annotate(image: Image.Image, result: ImageResult, model_keys: list[str]) -> Image.Image:
    canvas = image.copy()
    draw = ImageDraw.Draw(canvas)
    # Scale line width and text with the photo so labels stay legible on 4000 px phone photos.
    unit = max(1, round(max(image.size) / 640))
    font = ImageFont.load_default(size=12 * unit + 2)

    def measure(text: str) -> tuple[float, float]:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        return right - left + 4 * unit, bottom - top + 4 * unit

    for face in result.faces:
        colour = COLOURS[(face.number - 1) % len(COLOURS)] if face.judged else SMALL_COLOUR
        draw.rectangle(face.face.box, outline=colour, width=2 * unit)
    for label in layout(result, model_keys, canvas.size, measure):
        draw.rectangle(label.rect, fill=label.colour)
        left, top, _, _ = draw.textbbox((0, 0), label.text, font=font)
        draw.text((label.rect[0] + 2 * unit - left, label.rect[1] + 2 * unit - top), label.text, fill=(0, 0, 0),
                  font=font)
    return canvas
