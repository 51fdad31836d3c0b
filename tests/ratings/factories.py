"""Fast test data: FaceImage rows with small generated PNGs in private storage."""

from __future__ import annotations

import hashlib
import io
import itertools
import uuid

from django.core.files.base import ContentFile
from PIL import Image

from models_app.models import FaceImage
from ratings.models import Campaign, Pair
from ratings.services import create_pairs

_counter = itertools.count()


def png_bytes(seed: int, size: int = 24) -> bytes:
    img = Image.new("RGB", (size, size), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def make_image() -> FaceImage:
    n = next(_counter)
    data = png_bytes(n)
    image = FaceImage(
        id=uuid.uuid4(), sha256=hashlib.sha256(data + uuid.uuid4().bytes).hexdigest(),
        width=24, height=24,
    )
    image.file.save("x.png", ContentFile(data), save=False)
    image.chip.save("x.png", ContentFile(data), save=False)
    image.save()
    return image


def make_face(seed: int, photo: tuple[int, int] = (160, 120), chip: int = 48) -> FaceImage:
    """A face with a photo, a smaller chip and a stored detection (box and 5 landmarks), so
    each variant a rater may be shown (photo, context crop, chip) has its own size."""
    w, h = photo
    data = png_bytes(seed, size=w) if w == h else _png(w, h, seed)
    image = FaceImage(
        id=uuid.uuid4(), sha256=hashlib.sha256(data + uuid.uuid4().bytes).hexdigest(),
        width=w, height=h, box=[w // 3, h // 4, 2 * w // 3, 3 * h // 4],
        landmarks=[[w * 6 // 10, h * 4 // 10], [w * 53 // 100, h * 4 // 10],
                   [w * 4 // 10, h * 4 // 10], [w * 47 // 100, h * 4 // 10],
                   [w // 2, h * 6 // 10]],
    )
    image.file.save("x.png", ContentFile(data), save=False)
    image.chip.save("x.png", ContentFile(png_bytes(seed, size=chip)), save=False)
    image.save()
    return image


def _png(w: int, h: int, seed: int) -> bytes:
    img = Image.new("RGB", (w, h), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def make_images(n: int) -> list[FaceImage]:
    return [make_image() for _ in range(n)]


def make_campaign(**overrides) -> Campaign:
    n = next(_counter)
    fields = dict(
        name=f"Campaign {n}", slug=f"c{n}-{uuid.uuid4().hex[:6]}", status=Campaign.Status.ACTIVE,
        judgments_per_pair=3, gold_rate=0.0, attention_rate=0.0, qualification_size=0,
        consent_text="", instructions="Same person or not?", min_response_ms=300,
        hold_timeout_s=300,
    )
    fields.update(overrides)
    return Campaign.objects.create(**fields)


def add_pairs(campaign: Campaign, n: int, kind: str = Pair.Kind.DEID, images=None) -> list[Pair]:
    images = images or make_images(2)
    items = []
    for i in range(n):
        a = images[(2 * i) % len(images)]
        b = images[(2 * i + 1) % len(images)]
        if kind == Pair.Kind.ATTENTION:
            b = a  # identical images: the obvious answer is "same"
        items.append({"image_a": a.pk, "image_b": b.pk, "kind": kind})
    return create_pairs(campaign, items)


def settle_label_updates(campaign: Campaign, timeout: float = 10.0) -> None:
    """Let a label update that the test's judgments queued finish before the test's
    teardown truncates the tables: a session worker (started by earlier worker tests) may be
    recomputing labels right then, and TRUNCATE against its reads deadlocks. Waits until the
    update has started (``labels_pending`` cleared), then for its transaction (the advisory
    lock it holds). With no worker running nothing starts, and nothing needs waiting for."""
    import time

    from django.db import transaction

    from deidplatform.celery import app
    from ratings.locking import lock_label_update

    pending = Campaign.objects.filter(pk=campaign.pk, labels_pending=True)
    if pending.exists() and not app.control.ping(timeout=0.5):
        return  # queued, but no worker: nothing will start
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pending.exists():
            break
        time.sleep(0.1)
    else:
        return
    with transaction.atomic():
        lock_label_update(campaign.pk)
