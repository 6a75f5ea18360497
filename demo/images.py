"""Opening user photos: any common format, EXIF orientation applied, clear errors for bad files."""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Phones take 50-200 megapixel photos; faces need far fewer. A photo is shrunk to WORK_PIXELS as it
# is decoded: a JPEG by decoding it at 1/2, 1/4 or 1/8 scale (libjpeg's own, so a 200 MP photo costs
# the memory of a 25 MP one), other formats after decoding them whole. What could exhaust memory is
# refused before decoding, from the size the file declares (a 2 GB bitmap can hide in a few KB).
WORK_PIXELS = 24_000_000
MAX_PIXELS = {"JPEG": 1_000_000_000}  # by format: JPEG decodes at 1/8 scale at best
MAX_PIXELS_OTHER = 100_000_000  # decoded whole: 300 MB as RGB
# Pillow's own bomb check, at our largest limit (ours, per format, is stricter below it).
Image.MAX_IMAGE_PIXELS = max(MAX_PIXELS.values())


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
                pixels, limit = image.width * image.height, MAX_PIXELS.get(image.format, MAX_PIXELS_OTHER)
                if pixels > limit:
                    raise ImageError(
                        f"{name} is {image.width}x{image.height} pixels; {image.format or 'such'} photos up to "
                        f"{limit // 1_000_000} megapixels are accepted"
                    )
                if pixels > WORK_PIXELS:  # a JPEG decodes straight at a smaller scale (others ignore this)
                    scale = math.sqrt(WORK_PIXELS / pixels)
                    image.draft(image.mode, (math.ceil(image.width * scale), math.ceil(image.height * scale)))
                image.load()
                return shrunk(to_rgb(ImageOps.exif_transpose(image)))
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image in a format we can read (JPEG, PNG, WebP, BMP, GIF, TIFF)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"{name} declares more pixels than is safe to decode; photos up to "
            f"{MAX_PIXELS_OTHER // 1_000_000} megapixels (JPEG: {MAX_PIXELS['JPEG'] // 1_000_000}) are accepted"
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{name} could not be decoded; the file looks damaged or truncated ({error})") from None


def shrunk(image: Image.Image, pixels: int = WORK_PIXELS) -> Image.Image:
    """The image scaled down to at most `pixels` (aspect kept), or itself when it is that small."""
    if image.width * image.height <= pixels:
        return image
    scale = math.sqrt(pixels / (image.width * image.height))
    return image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))), Image.Resampling.LANCZOS,
                        reducing_gap=3.0)


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
