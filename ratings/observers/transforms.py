"""The image changes an observer must ignore (or must not), as people do: used by the
invariance tests and ``bench.observers``. Pure numpy/PIL."""

from __future__ import annotations

import io

import numpy as np

# RGB <-> YIQ (NTSC): Y is the BT.601 luminance the observers read; I and Q carry colour.
_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_FROM_YIQ = np.linalg.inv(_TO_YIQ)


def recolour(rgb: np.ndarray, hue_degrees: float, saturation: float = 1.0) -> np.ndarray:
    """Rotate hue by ``hue_degrees`` and scale saturation, keeping luminance (up to clipping
    of colours that leave the RGB cube, and rounding)."""
    yiq = rgb.astype(np.float64) @ _TO_YIQ.T
    t = np.deg2rad(hue_degrees)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) * saturation
    yiq[..., 1:] = yiq[..., 1:] @ rot.T
    return np.clip(np.rint(yiq @ _FROM_YIQ.T), 0, 255).astype(np.uint8)


def add_noise(rgb: np.ndarray, rng: np.random.Generator, levels: int = 4) -> np.ndarray:
    """Independent integer noise, uniform in ±``levels`` grey levels, on every channel."""
    noise = rng.integers(-levels, levels + 1, size=rgb.shape)
    return np.clip(rgb.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """A JPEG round trip at ``quality`` (PIL, 4:2:0 chroma as browsers receive it)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def shift(rgb: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The picture moved by (dy, dx) px, the uncovered border filled by edge replication."""
    h, w = rgb.shape[:2]
    pad = np.pad(rgb, ((abs(dy), abs(dy)), (abs(dx), abs(dx)), (0, 0)), mode="edge")
    return np.ascontiguousarray(pad[abs(dy) - dy : abs(dy) - dy + h, abs(dx) - dx : abs(dx) - dx + w])


def negate(rgb: np.ndarray) -> np.ndarray:
    """The photographic negative (luminance inverted)."""
    return (255 - rgb).astype(np.uint8)
