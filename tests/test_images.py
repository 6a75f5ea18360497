"""Every kind of photo a user may upload, and every kind of bad file."""

import io

import numpy as np
import pytest
from PIL import Image

from demo.images import ImageError, load_image
from tests.conftest import ASTRONAUT

PHOTO = Image.open(ASTRONAUT).convert("RGB")


def _save(tmp_path, name, image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_exif_orientation_is_applied(tmp_path):
    # Stored sideways with EXIF orientation 6 ("rotate 90 CW to view"), as phones do.
    sideways = PHOTO.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(tmp_path, "phone.jpg", sideways, exif=exif.tobytes(), quality=95)
    upright = load_image(path)
    assert upright.size == PHOTO.size
    assert np.abs(np.asarray(upright, float) - np.asarray(PHOTO, float)).mean() < 6


@pytest.mark.parametrize(
    ("name", "make", "kwargs"),
    [
        ("photo.png", lambda: PHOTO.convert("RGBA"), {}),
        ("photo.webp", lambda: PHOTO, {"quality": 90}),
        ("grey.jpg", lambda: PHOTO.convert("L"), {}),
        ("cmyk.jpg", lambda: PHOTO.convert("CMYK"), {}),
        ("palette.gif", lambda: PHOTO.convert("P"), {}),
        ("photo.bmp", lambda: PHOTO, {}),
        ("photo.tiff", lambda: PHOTO, {}),
    ],
)
def test_common_formats_become_rgb(tmp_path, name, make, kwargs):
    image = load_image(_save(tmp_path, name, make(), **kwargs))
    assert image.mode == "RGB" and image.size == PHOTO.size


def test_transparent_png_is_put_on_white(tmp_path):
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert load_image(_save(tmp_path, "clear.png", rgba)).getpixel((5, 5)) == (255, 255, 255)


def test_sixteen_bit_png(tmp_path):
    deep = Image.fromarray(np.arange(100, dtype=np.uint16).reshape(10, 10) * 600)
    assert load_image(_save(tmp_path, "deep.png", deep)).mode == "RGB"


def test_arrays_and_bytes():
    assert load_image(np.asarray(PHOTO)).size == PHOTO.size
    buffer = io.BytesIO()
    PHOTO.save(buffer, format="JPEG")
    assert load_image(buffer.getvalue()).size == PHOTO.size


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _truncated_jpeg(tmp_path):
    path = _save(tmp_path, "cut.jpg", PHOTO, quality=90)
    path.write_bytes(path.read_bytes()[:5000])
    return path


def _bomb(tmp_path):
    # 20000 x 20000 one-bit PNG: 400 megapixels in about 50 KB.
    return _save(tmp_path, "bomb.png", Image.new("1", (20000, 20000)), optimize=True)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: _write(p / "empty.jpg", b""), "empty"),
        (lambda p: _write(p / "notes.txt", b"hello"), "not an image"),
        (lambda p: _write(p / "fake.jpg", b"\xff\xd8\xff\xe0garbage"), "not an image|damaged"),
        (_truncated_jpeg, "damaged or truncated"),
        (_bomb, "megapixels are accepted"),
    ],
)
def test_bad_files_give_a_clear_message(tmp_path, make, message):
    with pytest.raises(ImageError, match=message):
        load_image(make(tmp_path))


def test_a_60_megapixel_phone_photo_is_shrunk_as_it_is_decoded_and_its_face_found(tmp_path, predictor):
    from demo.images import WORK_PIXELS

    canvas = Image.new("RGB", (9000, 6750), (120, 130, 140))  # 60.75 MP, as a phone's 200 MP mode gives less
    face = Image.open(ASTRONAUT).convert("RGB").resize((2400, 2400))
    canvas.paste(face, (3300, 2100))
    path = tmp_path / "phone.jpg"
    canvas.save(path, quality=85)
    image = load_image(path)
    assert image.width * image.height <= WORK_PIXELS and abs(image.width / image.height - 9000 / 6750) < 0.01
    assert len(predictor.predict(image).faces) == 1


def test_a_png_too_large_to_decode_safely_is_refused_by_its_declared_size(tmp_path):
    path = _save(tmp_path, "huge.png", Image.new("1", (12000, 10000)), optimize=True)  # 120 MP in a few KB
    with pytest.raises(ImageError, match=r"12000x10000 pixels; PNG photos up to 100 megapixels"):
        load_image(path)
