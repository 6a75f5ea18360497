"""Opening user photos: any common format, EXIF orientation applied, clear errors for bad files."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Refuse images above this many pixels before decoding them (a 2 GB bitmap can hide in a few KB).
MAX_PIXELS = 50_000_000


class ImageError(ValueError):
    """A file that cannot be used as a photo; the message is meant for the user."""


def load_image(source: str | Path | bytes | Image.Image | np.ndarray) -> Image.Image:
    """An RGB PIL image, upright, from a path, bytes, a PIL image or an HxWx(1|3|4) array."""
    if isinstance(source, np.ndarray):
        return to_rgb(Image.fromarray(source))
    if isinstance(source, Image.Image):
        return to_rgb(ImageOps.exif_transpose(source))
    name = "the upload" if isinstance(source, bytes) else Path(source).name
    if not isinstance(source, bytes) and Path(source).stat().st_size == 0:
        raise ImageError(f"{name} is empty (0 bytes)")
    if isinstance(source, bytes) and not source:
        raise ImageError("the upload is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise ImageError(
                        f"{name} is {image.width}x{image.height} pixels; photos up to "
                        f"{MAX_PIXELS // 1_000_000} megapixels are accepted"
                    )
                image.load()
                return to_rgb(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image in a format we can read (JPEG, PNG, WebP, BMP, GIF, TIFF)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"{name} declares more pixels than is safe to decode; photos up to "
            f"{MAX_PIXELS // 1_000_000} megapixels are accepted"
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{name} could not be decoded; the file looks damaged or truncated ({error})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB for every mode: alpha is composited on white, CMYK/grayscale/16-bit are converted."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = array.max() or 1.0
        return Image.fromarray((array / top * 255).astype(np.uint8)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
