"""Data for the models_app tests: real faces in the database (LFW photos, ingested for real),
human labels on pairs of them, and a promoted (untrained) human proxy."""

from __future__ import annotations

import uuid
from pathlib import Path

from models_app.faces.services import ingest_image
from models_app.models import FaceImage, ModelKind, ModelVersion, Subject
from models_app.training import registry


def lfw_subjects(lfw_dir: Path, n_subjects: int, per_subject: int) -> list[list[Path]]:
    out = []
    for d in sorted(p for p in lfw_dir.iterdir() if p.is_dir()):
        files = sorted(d.glob("*.jpg"))
        if len(files) >= per_subject:
            out.append(files[:per_subject])
            if len(out) == n_subjects:
                break
    return out


def ingest_subjects(lfw_dir: Path, n_subjects: int = 10, per_subject: int = 3) -> list[list[FaceImage]]:
    """Subjects with fixed ids: the held-out split hashes subject ids (training.selectors),
    so random ids would give every run another split, and now and then too few pairs."""
    groups = []
    for i, files in enumerate(lfw_subjects(lfw_dir, n_subjects, per_subject)):
        label = f"subject-{i:03d}"
        subject, _ = Subject.objects.get_or_create(
            label=label, defaults={"id": uuid.uuid5(uuid.NAMESPACE_URL, f"test:{label}"),
                                   "source": "test"},
        )
        imgs = [ingest_image(f.read_bytes(), subject=subject).image for f in files]
        groups.append([im for im in imgs if im is not None])
    return groups


def label_pairs(groups: list[list[FaceImage]], campaign) -> int:
    """Human labels: same-subject pairs judged mostly "same", cross-subject mostly "different"."""
    from ratings.models import Pair, PairLabel

    items = []
    for gi, imgs in enumerate(groups):
        items += [(imgs[0], imgs[1], 0.9), (imgs[1], imgs[2], 0.8)]
        items += [(imgs[2], other[0], 0.1) for other in groups[gi + 1 :]]
    for a, b, score in items:
        pair = Pair.objects.create(campaign=campaign, image_a=a, image_b=b, kind="deid")
        PairLabel.objects.create(
            pair=pair, score_a=score, same=score > 0.5, n_judgments=3, method="dawid_skene"
        )
    return len(items)


def promote_untrained_proxy() -> ModelVersion:
    """A real HumanProxy network (untrained weights): enough to drive the loop in tests."""
    import torch

    from models_app.proxy.config import ProxyMeta
    from models_app.proxy.io import proxy_to_bytes
    from models_app.proxy.network import HumanProxy

    torch.manual_seed(0)
    model = HumanProxy(meta=ProxyMeta(prior=True, description="test"))
    v = registry.register_version(
        kind=ModelKind.HUMAN_PROXY, weights=proxy_to_bytes(model), config={}, metrics={},
        is_prior=True,
    )
    return registry.promote(v)
