"""The image changes an observer must ignore (or must not), as people do: used by the
invariance tests and ``bench.observers``. They live with the perceptual battery
(:mod:`models_app.vision.battery`), which scores proxies and observers alike."""

from models_app.vision.battery import (
    add_noise,
    brightness,
    contrast,
    jpeg,
    mirror,
    negate,
    recolour,
    shift,
)

__all__ = ["add_noise", "brightness", "contrast", "jpeg", "mirror", "negate", "recolour", "shift"]
