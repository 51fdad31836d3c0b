"""Validation and normalisation of uploaded image files.

Pure module (bytes in, RGB pixels out; no Django import). Every refusal is an
``ImageRejected`` with a stable ``code`` that the API and the CLI show as they are.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
# dlib's HOG window is 80 px; at upsample 1 the smallest face it can find is 40 px wide.
# Smaller images cannot hold a detectable face (and 1-8 px ones crash dlib's CNN).
DEFAULT_MIN_SIDE = 40

# Truncated files must fail, never load half an image silently.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageRejected(ValueError):
    """A file that is not accepted as a face photo; ``code`` is machine-readable."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class NormalisedImage:
    rgb: np.ndarray  # uint8 HxWx3
    source_format: str
    source_mode: str

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def load_rgb(
    data: bytes,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
) -> NormalisedImage:
    """Validate an uploaded file and return its pixels as RGB with EXIF orientation applied.

    Metadata (EXIF, ICC, XMP, comments) does not survive: only pixels come out.
    """
    if len(data) == 0:
        raise ImageRejected("empty_file", "The file is empty.")
    if len(data) > max_bytes:
        raise ImageRejected(
            "file_too_large", f"The file is {len(data)} bytes; the limit is {max_bytes} bytes."
        )
    with warnings.catch_warnings():
        # PIL warns between MAX_IMAGE_PIXELS and twice that; we refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            probe = Image.open(io.BytesIO(data))
        except (UnidentifiedImageError, SyntaxError) as exc:
            raise ImageRejected("not_an_image", "The file is not an image we can read.") from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected("too_many_pixels", "The image has too many pixels.") from exc
        except Exception as exc:  # PIL raises many types for corrupt headers
            raise ImageRejected("corrupt_image", f"The image is corrupt: {exc}") from exc
        try:
            # A recognised format whose data fails its checks (a bad PNG CRC) is corrupt.
            probe.verify()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected("too_many_pixels", "The image has too many pixels.") from exc
        except Exception as exc:  # PIL raises many types for corrupt data
            raise ImageRejected("corrupt_image", f"The image is corrupt: {exc}") from exc

        img = Image.open(io.BytesIO(data))
        fmt = img.format or "unknown"
        w, h = img.size
        if w * h > max_pixels:
            raise ImageRejected(
                "too_many_pixels",
                f"The image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}.",
            )
        if min(w, h) < min_side:
            raise ImageRejected(
                "too_small",
                f"The image is {w}x{h} pixels; each side must be at least {min_side}.",
            )
        if getattr(img, "n_frames", 1) > 1:
            raise ImageRejected("animated_image", "Animated images are not accepted.")
        mode = img.mode
        if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F") or mode.startswith("I;16"):
            raise ImageRejected(
                "unsupported_bit_depth",
                f"{mode} images (16-bit or float) are not accepted; send 8 bits per channel.",
            )
        try:
            img.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageRejected("corrupt_image", f"The image is truncated or corrupt: {exc}") from exc
    img = ImageOps.exif_transpose(img)
    rgb = _to_rgb(img)
    return NormalisedImage(rgb=np.asarray(rgb, dtype=np.uint8).copy(), source_format=fmt, source_mode=mode)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    # CMYK, YCbCr, L, 1, P, LAB: PIL's converters handle them.
    return img.convert("RGB")


def encode_png(rgb: np.ndarray) -> bytes:
    """Lossless, metadata-free PNG bytes of an RGB uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB").save(
        buf, format="PNG", compress_level=1
    )
    return buf.getvalue()
