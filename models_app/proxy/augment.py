"""Known-same pairs from the perceptual battery's invariance set, for training the proxy.

People ignore a hue rotation that keeps luminance, a few grey levels of noise, JPEG at
quality 70, a 2-pixel shift, mirroring and ±10 % brightness or contrast
(:mod:`models_app.vision.battery`). A proxy trained on natural pairs alone has never seen
two versions of one photo that differ only so, so nothing tells it that such a difference
says "same" — an attack can then use exactly those directions. :func:`invariance_pairs`
makes, for each training image, variants with random parameters drawn from the invariance
set (a few composed) and pairs (image, variant) with target 1.0. They are ``natural``
pairs (no person judged them), so a proxy trained with them stays a prior.

Pure numpy/PIL (the variants are the battery's own functions), no Django.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from models_app.vision import battery

from .data import LabelledPair, PairTable

# Each draws its own parameters inside the invariance set's bounds.
INVARIANCE_AUGMENTATIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "hue": lambda x, rng: battery.recolour(x, float(rng.uniform(-180.0, 180.0))),
    "noise": lambda x, rng: battery.add_noise(x, rng, int(rng.integers(1, 5))),
    "jpeg": lambda x, rng: battery.jpeg(x, int(rng.integers(70, 96))),
    "shift": lambda x, rng: battery.shift(x, int(rng.integers(-2, 3)), int(rng.integers(-2, 3))),
    "mirror": lambda x, rng: battery.mirror(x),
    "brightness": lambda x, rng: battery.brightness(x, float(rng.uniform(0.9, 1.1))),
    "contrast": lambda x, rng: battery.contrast(x, float(rng.uniform(0.9, 1.1))),
}
AUGMENTED_KEY = "~inv"  # marks an augmented image's key: "<key>~inv<j>"


def invariance_variant(
    rgb: np.ndarray, rng: np.random.Generator, n_ops: int = 2
) -> tuple[np.ndarray, list[str]]:
    """``rgb`` (H,W,3 uint8) changed by ``n_ops`` distinct invariance augmentations in a
    random order, each with random parameters in the set's bounds; returns it and the names."""
    names = list(rng.choice(list(INVARIANCE_AUGMENTATIONS), size=n_ops, replace=False))
    out = rgb
    for name in names:
        out = INVARIANCE_AUGMENTATIONS[name](out, rng)
    return np.ascontiguousarray(out, dtype=np.uint8), [str(n) for n in names]


def invariance_pairs(
    contexts: Sequence[np.ndarray],
    keys: Sequence[str],
    subjects: Sequence[str],
    per_image: int = 1,
    *,
    weight: float = 1.0,
    n_ops: int = 2,
    seed: int = 0,
) -> tuple[list[np.ndarray], list[str], PairTable]:
    """Known-same training pairs: for each image ``per_image`` variants (see
    :func:`invariance_variant`). Returns the variants, their keys (``<key>~inv<j>``, to
    encode into the proxy's image bank beside the originals) and the pairs (image, variant),
    target 1.0, ``weight``, the image's subject on both sides (so a subject split keeps them
    with their subject). Deterministic for a seed."""
    if not len(contexts) == len(keys) == len(subjects):
        raise ValueError(f"{len(contexts)} images, {len(keys)} keys, {len(subjects)} subjects")
    if per_image < 0 or weight < 0:
        raise ValueError("per_image and weight must be >= 0")
    rng = np.random.default_rng(seed)
    images: list[np.ndarray] = []
    new_keys: list[str] = []
    pairs: list[LabelledPair] = []
    for ctx, key, subject in zip(contexts, keys, subjects, strict=True):
        if not np.asarray(ctx).any():  # an all-black crop: no face was found, nothing to vary
            continue
        for j in range(per_image):
            variant, names = invariance_variant(np.asarray(ctx, dtype=np.uint8), rng, n_ops)
            k = f"{key}{AUGMENTED_KEY}{j}"
            images.append(variant)
            new_keys.append(k)
            pairs.append(LabelledPair(key, k, 1.0, weight, subject, subject, natural=True,
                                      pair_id=f"inv:{key}:{j}:{'+'.join(names)}"))
    return images, new_keys, PairTable(pairs)


def subjects_of_images(pairs: PairTable) -> dict[str, str]:
    """Image key -> its subject, from the pairs that use it."""
    out: dict[str, str] = {}
    for p in pairs:
        out.setdefault(p.a, p.subject_a)
        out.setdefault(p.b, p.subject_b)
    return out


# Known-same variants per training image in a training run (the runner's
# ``invariance_pairs`` config key). One: it doubles the images the frozen CFRU encodes, and
# on the perception benchmark (BENCHMARKS.md) more did not change the attack's figures.
DEFAULT_INVARIANCE_PAIRS = 1


def add_invariance_pairs(
    model,
    bank,
    pairs: PairTable,
    contexts: Sequence[np.ndarray],
    keys: Sequence[str],
    train_subjects: set[str] | Sequence[str],
    per_image: int = DEFAULT_INVARIANCE_PAIRS,
    *,
    seed: int = 0,
):
    """``(bank, pairs)`` with known-same invariance pairs added for the images of the
    training subjects only (validation and test pairs stay what people or the data say, so
    early stopping, calibration and the gate are not flattered by easy pairs). ``model``
    encodes the variants into the bank (:meth:`HumanProxy.encode_images`)."""
    from .data import ImageBank

    if per_image <= 0:
        return bank, pairs
    train = set(train_subjects)
    subject = subjects_of_images(pairs)
    chosen = [i for i, k in enumerate(keys) if subject.get(k) in train]
    if not chosen:
        return bank, pairs
    variants, new_keys, extra = invariance_pairs(
        [contexts[i] for i in chosen], [keys[i] for i in chosen],
        [subject[keys[i]] for i in chosen], per_image, seed=seed)
    if not extra.pairs:
        return bank, pairs
    added = model.encode_images(np.stack(variants), new_keys)
    return ImageBank.concat([bank, added]), pairs + extra
