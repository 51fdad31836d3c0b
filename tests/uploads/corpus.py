"""The upload corpus: every class of file the ingest must refuse or accept on purpose.

Each class is made in memory from one LFW photo (no binary files in the repository) and
names the status and error code both upload routes must answer with (``code`` is None for
an accepted file). ``settings`` overrides apply to that class only; ``check`` looks at the
stored image of an accepted one.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Faces:
    """The face sources: two LFW photos of two people (250x250 RGB)."""

    jpeg: bytes
    other_jpeg: bytes

    @property
    def rgb(self) -> Image.Image:
        return Image.open(io.BytesIO(self.jpeg)).convert("RGB")

    @property
    def other_rgb(self) -> Image.Image:
        return Image.open(io.BytesIO(self.other_jpeg)).convert("RGB")


@dataclass(frozen=True)
class UploadClass:
    name: str
    make: Callable[[Faces], bytes]
    status: int
    code: str | None = None  # None: accepted
    filename: str = "upload.bin"
    settings: dict[str, Any] = field(default_factory=dict)
    check: Callable[[Any, bytes], None] | None = None  # (stored FaceImage, stored file bytes)


def save(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def blank(w: int, h: int) -> bytes:
    return save(Image.new("RGB", (w, h), (128, 128, 128)), "PNG")


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("photo.jpg", b"\xff\xd8\xff\xe0 not really")
    return buf.getvalue()


def _animated_gif(f: Faces) -> bytes:
    a, b = f.rgb, f.other_rgb
    return save(a, "GIF", save_all=True, append_images=[b], loop=0, duration=100)


def _png16(f: Faces) -> bytes:
    grey = np.asarray(f.rgb.convert("L"), dtype=np.uint16) * 257
    return save(Image.fromarray(grey), "PNG")


def _float_tiff(f: Faces) -> bytes:
    return save(Image.fromarray(np.asarray(f.rgb.convert("L"), dtype=np.float32)), "TIFF")


def _bomb(f: Faces) -> bytes:
    # 49 Mpx of zeros compress to a few tens of KB: over the 40 Mpx cap.
    return save(Image.new("1", (7000, 7000)), "PNG")


def _bad_crc_png(f: Faces) -> bytes:
    data = bytearray(save(f.rgb, "PNG"))
    i = data.index(b"IDAT") + 4 + 100  # a byte inside the first IDAT chunk's data
    data[i] ^= 0xFF
    return bytes(data)


def _exif_rotated(f: Faces) -> bytes:
    # Pixels stored rotated, with EXIF orientation 8 undoing it on display; cropped to
    # 250x200 (stored) so that an applied orientation shows as 200x250.
    img = f.rgb.rotate(90, expand=True).crop((0, 0, 250, 200))
    exif = Image.Exif()
    exif[0x0112] = 8
    exif[0x010E] = "private description"
    return save(img, "JPEG", exif=exif, quality=95)


def _rgba(f: Faces) -> bytes:
    rgba = f.rgb.convert("RGBA")
    alpha = np.full((250, 250), 255, np.uint8)
    alpha[:30, :30] = 0  # a transparent corner
    rgba.putalpha(Image.fromarray(alpha))
    return save(rgba, "PNG")


def _png_with_text_chunk(f: Faces) -> bytes:
    """A PNG that is also an HTML page: the payload sits in a tEXt chunk."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", "<html><script>alert('polyglot')</script></html>")
    return save(f.rgb, "PNG", pnginfo=info)


def _two_faces(f: Faces) -> bytes:
    canvas = Image.new("RGB", (600, 260), (90, 90, 90))
    canvas.paste(f.rgb, (0, 5))
    canvas.paste(f.other_rgb.resize((200, 200)), (340, 30))
    return save(canvas, "PNG")


def _large_photo(f: Faces) -> bytes:
    """A 4000x3000 photo (12 Mpx, over the 8 Mpx detector budget) with the face at 2x."""
    canvas = Image.new("RGB", (4000, 3000), (70, 110, 90))
    canvas.paste(f.rgb.resize((500, 500), Image.Resampling.BICUBIC), (2600, 900))
    return save(canvas, "JPEG", quality=90)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_huge_header(f: Faces) -> bytes:
    """A 60-byte PNG declaring 100000x100000 pixels (the header alone is the bomb)."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


def _check_orientation(image: Any, stored: bytes) -> None:
    assert (image.width, image.height) == (200, 250)
    assert b"private description" not in stored and b"Exif" not in stored


def _check_no_payload(payload: bytes) -> Callable[[Any, bytes], None]:
    def check(image: Any, stored: bytes) -> None:
        assert payload not in stored
        assert Image.open(io.BytesIO(stored)).format == "PNG"

    return check


def _check_multi(image: Any, stored: bytes) -> None:
    assert image.multi_face and image.n_faces == 2


def _check_large(image: Any, stored: bytes) -> None:
    # Found on a downscaled copy; the box and the landmarks are in full-resolution pixels,
    # inside the pasted face (x 2600..3100, y 900..1400).
    assert (image.width, image.height) == (4000, 3000)
    left, top, right, bottom = image.box
    assert 2550 <= left < right <= 3150 and 850 <= top < bottom <= 1450
    assert all(2600 <= x <= 3100 and 900 <= y <= 1400 for x, y in image.landmarks)


CLASSES: list[UploadClass] = [
    # --- not images at all: 400 -------------------------------------------------------
    UploadClass("empty", lambda f: b"", 400, "empty_file", "empty.jpg"),
    UploadClass("text_named_jpg", lambda f: b"just some text\n" * 40, 400, "not_an_image", "a.jpg"),
    UploadClass(
        "html", lambda f: b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>",
        400, "not_an_image", "page.png",
    ),
    UploadClass(
        "svg",
        lambda f: b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="200" '
        b'height="200"><circle cx="100" cy="100" r="80"/></svg>',
        400, "not_an_image", "face.svg",
    ),
    UploadClass(
        "pdf", lambda f: b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<<>>\n%%EOF\n",
        400, "not_an_image", "scan.pdf",
    ),
    UploadClass("zip", lambda f: _zip(), 400, "not_an_image", "photos.zip"),
    # --- broken images: 400 -----------------------------------------------------------
    UploadClass("truncated_jpeg", lambda f: f.jpeg[: len(f.jpeg) // 2], 400, "corrupt_image"),
    UploadClass(
        "truncated_png", lambda f: (lambda d: d[: len(d) // 2])(save(f.rgb, "PNG")),
        400, "corrupt_image",
    ),
    UploadClass("png_bad_crc", _bad_crc_png, 400, "corrupt_image"),
    # --- images we do not take: 400 ---------------------------------------------------
    UploadClass("animated_gif", _animated_gif, 400, "animated_image", "anim.gif"),
    UploadClass("png_16bit", _png16, 400, "unsupported_bit_depth"),
    UploadClass("tiff_float", _float_tiff, 400, "unsupported_bit_depth"),
    UploadClass("bomb_49mpx", _bomb, 400, "too_many_pixels"),
    UploadClass("bomb_header_only", _png_huge_header, 400, "too_many_pixels"),
    UploadClass("tiny_1x1", lambda f: blank(1, 1), 400, "too_small"),
    UploadClass("tiny_8x8", lambda f: save(f.rgb.resize((8, 8)), "PNG"), 400, "too_small"),
    UploadClass("sliver_2000x10", lambda f: blank(2000, 10), 400, "too_small"),
    UploadClass(
        "over_size_bytes", lambda f: f.jpeg, 413, "file_too_large",
        settings={"DEID_MAX_UPLOAD_BYTES": 1000},
    ),
    # --- readable, but no usable face: 422 --------------------------------------------
    UploadClass("blank_640x480", lambda f: blank(640, 480), 422, "no_face"),
    UploadClass("blank_6000x6000", lambda f: blank(6000, 6000), 422, "no_face"),
    UploadClass(
        "two_faces_reject_policy", _two_faces, 422, "several_faces",
        settings={"DEID_MULTI_FACE_POLICY": "reject"},
    ),
    # --- accepted: 201 ----------------------------------------------------------------
    UploadClass("jpeg", lambda f: f.jpeg, 201, filename="face.jpg"),
    UploadClass("jpeg_named_png", lambda f: f.jpeg, 201, filename="face.png"),
    UploadClass(
        "cmyk_jpeg", lambda f: save(f.rgb.convert("CMYK"), "JPEG", quality=95), 201
    ),
    UploadClass("grayscale_jpeg", lambda f: save(f.rgb.convert("L"), "JPEG", quality=95), 201),
    UploadClass("grayscale_pgm", lambda f: save(f.rgb.convert("L"), "PPM"), 201, filename="a.pgm"),
    UploadClass("rgba_png", _rgba, 201),
    UploadClass("palette_png", lambda f: save(f.rgb.quantize(256), "PNG"), 201),
    UploadClass("gif_single_frame", lambda f: save(f.rgb, "GIF"), 201, filename="face.gif"),
    UploadClass("webp", lambda f: save(f.rgb, "WEBP", quality=95), 201),
    UploadClass("tiff", lambda f: save(f.rgb, "TIFF"), 201),
    UploadClass("bmp", lambda f: save(f.rgb, "BMP"), 201),
    UploadClass("exif_rotated_jpeg", _exif_rotated, 201, check=_check_orientation),
    UploadClass("jpeg_trailing_garbage", lambda f: f.jpeg + b"\x00garbage" * 500, 201),
    UploadClass(
        "polyglot_jpeg_zip", lambda f: f.jpeg + _zip(), 201,
        check=_check_no_payload(b"photo.jpg"),
    ),
    UploadClass(
        "polyglot_png_html", _png_with_text_chunk, 201,
        check=_check_no_payload(b"<script>"),
    ),
    UploadClass("two_faces_flag_policy", _two_faces, 201, check=_check_multi),
    UploadClass("large_photo_12mpx", _large_photo, 201, check=_check_large),
]
