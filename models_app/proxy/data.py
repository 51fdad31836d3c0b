"""Pair data for the human proxy: natural LFW pairs, human-labelled pairs, subject-disjoint splits.

Two levels:

* :class:`PairTable` — the pairs as data (:class:`LabelledPair` rows: image keys, soft target,
  weight, subjects; not ``ratings.models.Pair``, the pair people are asked about), what a
  training run snapshots and what :func:`split_by_subject` splits;
* :class:`ImageBank` — per-image network inputs (:class:`ImageInputs`: frozen identity
  features + the downsampled context crop), computed once per image so training does not
  rerun the frozen CFRU.

:class:`ContextPairDataset` is the generic torch ``Dataset`` of
``(context_a, context_b, soft_target, weight, subject_a, subject_b)`` for end-to-end use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from . import SingleSubjectError, TooFewPairsError


@dataclass(frozen=True)
class LabelledPair:
    """One pair of images with its (soft) answer.

    ``target`` is human score-A in [0, 1] (1 = people say "same"); natural pairs use 1.0/0.0.
    ``weight`` scales the pair's loss (see :func:`human_pair_weight`).
    """

    a: str
    b: str
    target: float
    weight: float = 1.0
    subject_a: str = ""
    subject_b: str = ""
    natural: bool = False
    pair_id: str = ""


def human_pair_weight(n_judgments: int, reliability: float = 1.0) -> float:
    """Loss weight of a human-labelled pair: number of judgments x mean rater reliability."""
    if n_judgments < 0 or not 0.0 <= reliability <= 1.0:
        raise ValueError(f"bad judgments/reliability: {n_judgments}, {reliability}")
    return float(n_judgments) * float(reliability)


@dataclass
class PairTable:
    """Pairs as parallel lists, JSON-serialisable through :meth:`to_records`."""

    pairs: list[LabelledPair] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self):
        return iter(self.pairs)

    def __add__(self, other: PairTable) -> PairTable:
        return PairTable(self.pairs + other.pairs)

    @property
    def subjects(self) -> set[str]:
        return {s for p in self.pairs for s in (p.subject_a, p.subject_b)}

    @property
    def image_keys(self) -> list[str]:
        """Distinct image keys in first-seen order."""
        return list(dict.fromkeys(k for p in self.pairs for k in (p.a, p.b)))

    def targets(self) -> np.ndarray:
        return np.array([p.target for p in self.pairs], dtype=np.float64)

    def weights(self) -> np.ndarray:
        return np.array([p.weight for p in self.pairs], dtype=np.float64)

    def to_records(self) -> list[dict]:
        return [asdict(p) for p in self.pairs]

    @classmethod
    def from_records(cls, records: Iterable[Mapping]) -> PairTable:
        return cls([LabelledPair(**dict(r)) for r in records])

    def select(self, keep: Callable[[LabelledPair], bool]) -> PairTable:
        return PairTable([p for p in self.pairs if keep(p)])


# --------------------------------------------------------------------------------------------
# LFW natural pairs.
# --------------------------------------------------------------------------------------------


def lfw_image_key(name: str, number: int | str) -> str:
    """Path of an LFW image relative to ``lfw-deepfunneled/``."""
    return f"{name}/{name}_{int(number):04d}.jpg"


def read_lfw_pairs(path: str | Path) -> list[PairTable]:
    """LFW pairs file (``pairs.txt``: 10 folds; ``pairsDevTrain/Test.txt``: one) as folds.

    Matched lines ``name n1 n2`` give target 1, mismatched ``name1 n1 name2 n2`` target 0;
    subjects are the LFW names. Raises ``ValueError`` for a malformed file.
    """
    path = Path(path)
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: empty pairs file")
    head = lines[0].split()
    if len(head) == 1:  # DevTrain/DevTest: "N" matched then N mismatched, one fold
        n_folds, n_per = 1, int(head[0])
    elif len(head) == 2:
        n_folds, n_per = int(head[0]), int(head[1])
    else:
        raise ValueError(f"{path}: bad header {lines[0]!r}")
    rows = [ln.split() for ln in lines[1:]]
    if len(rows) != n_folds * 2 * n_per:
        raise ValueError(f"{path}: {len(rows)} pairs, expected {n_folds * 2 * n_per}")
    folds = []
    for f in range(n_folds):
        fold = []
        for i, r in enumerate(rows[f * 2 * n_per : (f + 1) * 2 * n_per]):
            pid = f"{path.stem}:{f}:{i}"
            if len(r) == 3:
                a, b = lfw_image_key(r[0], r[1]), lfw_image_key(r[0], r[2])
                fold.append(LabelledPair(a, b, 1.0, 1.0, r[0], r[0], True, pid))
            elif len(r) == 4:
                a, b = lfw_image_key(r[0], r[1]), lfw_image_key(r[2], r[3])
                fold.append(LabelledPair(a, b, 0.0, 1.0, r[0], r[2], True, pid))
            else:
                raise ValueError(f"{path}: bad line {' '.join(r)!r}")
        folds.append(PairTable(fold))
    return folds


def make_natural_pairs(
    subject_of: Mapping[str, str], n_same: int, n_different: int, seed: int = 0
) -> PairTable:
    """Natural (gold) pairs from images with known subjects: up to ``n_same`` pairs of two
    photos of one subject (target 1) and ``n_different`` of two subjects (target 0), drawn
    without repetition with a seeded RNG."""
    rng = np.random.default_rng(seed)
    keys = sorted(subject_of)
    by_subject: dict[str, list[str]] = {}
    for k in keys:
        by_subject.setdefault(subject_of[k], []).append(k)
    same = [(a, b) for ks in by_subject.values() for i, a in enumerate(ks) for b in ks[i + 1 :]]
    out: list[LabelledPair] = []
    for i in rng.permutation(len(same))[:n_same]:
        a, b = same[i]
        pid = f"nat:{a}|{b}"
        out.append(LabelledPair(a, b, 1.0, 1.0, subject_of[a], subject_of[b], True, pid))
    seen: set[tuple[str, str]] = set()
    if len(by_subject) > 1:
        for _ in range(20 * n_different):
            if len(seen) >= n_different:
                break
            a, b = (keys[int(i)] for i in rng.integers(0, len(keys), size=2))
            if subject_of[a] == subject_of[b] or (a, b) in seen or (b, a) in seen:
                continue
            seen.add((a, b))
            pid = f"nat:{a}|{b}"
            out.append(LabelledPair(a, b, 0.0, 1.0, subject_of[a], subject_of[b], True, pid))
    return PairTable(out)


# --------------------------------------------------------------------------------------------
# Subject-disjoint splits.
# --------------------------------------------------------------------------------------------


@dataclass
class SubjectSplit:
    """Subject ids of each part; stored with the training run (``asdict`` is JSON-ready)."""

    train: list[str]
    val: list[str]
    test: list[str] = field(default_factory=list)

    def part_of(self) -> dict[str, str]:
        out = {}
        for name in ("train", "val", "test"):
            for s in getattr(self, name):
                out[s] = name
        return out

    def apply(self, pairs: PairTable) -> dict[str, PairTable]:
        """Pairs of each part: a pair belongs to a part when both its subjects do.

        Pairs that straddle two parts (or name an unknown subject) go to ``"dropped"``,
        which keeps the parts disjoint by subject.
        """
        part = self.part_of()
        out: dict[str, list[LabelledPair]] = {"train": [], "val": [], "test": [], "dropped": []}
        for p in pairs:
            pa, pb = part.get(p.subject_a), part.get(p.subject_b)
            out[pa if pa is not None and pa == pb else "dropped"].append(p)
        return {k: PairTable(v) for k, v in out.items()}

    def to_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}


def check_pairs(pairs: PairTable, min_pairs: int = 1) -> None:
    """Raise the proxy's errors for unusable training data (before any work is done)."""
    if len(pairs) == 0:
        raise TooFewPairsError("no labelled pairs to train on")
    if len(pairs) < min_pairs:
        raise TooFewPairsError(f"{len(pairs)} labelled pairs; at least {min_pairs} are needed")
    for p in pairs:
        if not (0.0 <= p.target <= 1.0 and np.isfinite(p.target)):
            raise TooFewPairsError(
                f"pair {p.pair_id or (p.a, p.b)}: target {p.target} not in [0,1]"
            )
        if not (p.weight >= 0.0 and np.isfinite(p.weight)):
            raise TooFewPairsError(f"pair {p.pair_id or (p.a, p.b)}: bad weight {p.weight}")
        if not p.subject_a or not p.subject_b:
            raise TooFewPairsError(f"pair {p.pair_id or (p.a, p.b)}: subject ids are missing")
    if len(pairs.subjects) < 2:
        raise SingleSubjectError(
            f"all {len(pairs)} pairs come from one subject ({next(iter(pairs.subjects))!r}): "
            "a subject-disjoint train/validation split is impossible"
        )


def split_by_subject(
    pairs: PairTable,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> SubjectSplit:
    """Random subject-disjoint split whose parts hold about the given fractions of pairs.

    Subjects are shuffled (seeded) and filled into test, then val, then train by the number
    of pairs that touch them. Raises :class:`SingleSubjectError` with fewer than 2 subjects
    (3 when a test part is asked for).
    """
    if not 0.0 < val_fraction < 1.0 or not 0.0 <= test_fraction < 1.0 - val_fraction:
        raise ValueError(f"bad fractions val={val_fraction} test={test_fraction}")
    subjects = sorted(pairs.subjects)
    need = 3 if test_fraction > 0 else 2
    if len(subjects) < need:
        raise SingleSubjectError(
            f"{len(subjects)} subject(s) in {len(pairs)} pairs; a subject-disjoint split "
            f"needs at least {need}"
        )
    load = dict.fromkeys(subjects, 0)
    for p in pairs:
        load[p.subject_a] += 1
        if p.subject_b != p.subject_a:
            load[p.subject_b] += 1
    order = [subjects[i] for i in np.random.default_rng(seed).permutation(len(subjects))]
    total = sum(load.values())
    parts: dict[str, list[str]] = {"test": [], "val": [], "train": []}
    filled = {"test": 0.0, "val": 0.0}
    goal = {"test": test_fraction * total, "val": val_fraction * total}
    for s in order:
        name = next((n for n in ("test", "val") if filled[n] < goal[n]), "train")
        parts[name].append(s)
        if name != "train":
            filled[name] += load[s]
    # Every asked-for part gets at least one subject, taken from train.
    for name, frac in (("val", val_fraction), ("test", test_fraction)):
        if frac > 0 and not parts[name] and len(parts["train"]) > 1:
            parts[name].append(parts["train"].pop())
    if not parts["train"]:
        donor = "val" if len(parts["val"]) > 1 else "test"
        parts["train"].append(parts[donor].pop())
    return SubjectSplit(sorted(parts["train"]), sorted(parts["val"]), sorted(parts["test"]))


# --------------------------------------------------------------------------------------------
# Per-image inputs.
# --------------------------------------------------------------------------------------------


class ImageInputs(NamedTuple):
    """Per-image inputs of the pair head (rows of an :class:`ImageBank`).

    ``identity`` (N, identity_dim): frozen CFRU features; ``small`` (N, 3, 75, 75): the
    pooled context crop (the CNN's input); ``descriptors`` (N, descriptor_dim): the fixed
    colour/low-pass descriptors. None has parameters, so all three can be cached.
    """

    identity: torch.Tensor
    small: torch.Tensor
    descriptors: torch.Tensor



@dataclass
class ImageBank:
    """Per-image inputs of the proxy, row ``i`` for ``keys[i]``, built once per image with
    :meth:`HumanProxy.encode_images` so training does not rerun the frozen CFRU.

    ``identity``: (M, D) frozen CFRU features; ``small``: (M, 3, 75, 75) pooled context
    crops (the trainable CNN's input); ``descriptors``: (M, K) fixed colour/low-pass
    descriptors. A bank is tied to the proxy config that built it (same taps, pooling).
    """

    keys: list[str]
    identity: torch.Tensor
    small: torch.Tensor
    descriptors: torch.Tensor

    def __post_init__(self) -> None:
        n = len(self.keys)
        if not n == len(self.identity) == len(self.small) == len(self.descriptors):
            raise ValueError("keys, identity, small and descriptors must have the same length")
        self.index = {k: i for i, k in enumerate(self.keys)}
        if len(self.index) != n:
            raise ValueError("duplicate image keys in the bank")

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def concat(cls, banks: Sequence[ImageBank]) -> ImageBank:
        """One bank from several (e.g. cached per-image rows plus newly encoded images)."""
        return cls(
            [k for b in banks for k in b.keys],
            torch.cat([b.identity for b in banks]),
            torch.cat([b.small for b in banks]),
            torch.cat([b.descriptors for b in banks]),
        )

    def rows(self, idx: torch.Tensor) -> ImageInputs:
        """:class:`ImageInputs` for these row indices."""
        return ImageInputs(self.identity[idx], self.small[idx], self.descriptors[idx])

    def indices(self, pairs: PairTable) -> tuple[torch.Tensor, torch.Tensor]:
        """Row indices (ia, ib) of each pair's images; KeyError for an image not in the bank."""
        missing = [k for k in pairs.image_keys if k not in self.index]
        if missing:
            raise KeyError(f"{len(missing)} image(s) not in the bank, e.g. {missing[0]!r}")
        ia = torch.tensor([self.index[p.a] for p in pairs], dtype=torch.long)
        ib = torch.tensor([self.index[p.b] for p in pairs], dtype=torch.long)
        return ia, ib

    def save(self, path: str | Path) -> None:
        """A cache file (safetensors; keys in its metadata)."""
        import json

        from safetensors.torch import save_file

        save_file(
            {
                "identity": self.identity.contiguous(),
                "small": self.small.contiguous(),
                "descriptors": self.descriptors.contiguous(),
            },
            str(path),
            metadata={"keys": json.dumps(self.keys)},
        )

    @classmethod
    def load(cls, path: str | Path) -> ImageBank:
        import json

        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            keys = json.loads(f.metadata()["keys"])
            t = {k: f.get_tensor(k) for k in ("identity", "small", "descriptors")}
        return cls(keys, t["identity"], t["small"], t["descriptors"])


class ContextPairDataset(Dataset):
    """``(context_a, context_b, soft_target, weight, subject_a, subject_b)`` per pair.

    Contexts are float (3, 300, 300) tensors in [0, 255] RGB, read through ``load(key)`` which
    returns a uint8 (300, 300, 3) array (a dict's ``__getitem__`` works, or a function that
    reads private storage).
    """

    def __init__(
        self, pairs: PairTable | Sequence[LabelledPair], load: Callable[[str], np.ndarray]
    ) -> None:
        self.pairs = list(pairs)
        self.load = load

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        p = self.pairs[i]
        return (
            context_to_tensor(self.load(p.a)),
            context_to_tensor(self.load(p.b)),
            torch.tensor(p.target, dtype=torch.float32),
            torch.tensor(p.weight, dtype=torch.float32),
            p.subject_a,
            p.subject_b,
        )


def context_to_tensor(ctx: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (H, W, 3) or (N, H, W, 3) RGB -> float (3, H, W) / (N, 3, H, W) in [0, 255]."""
    arr = np.asarray(ctx)
    if arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise ValueError(f"expected (..., H, W, 3) RGB, got {arr.shape}")
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(dtype)
    return t.permute(2, 0, 1) if arr.ndim == 3 else t.permute(0, 3, 1, 2)
