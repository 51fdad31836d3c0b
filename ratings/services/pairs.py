"""Pairs: bulk creation for a campaign (staff API, de-identification jobs, benchmarks)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db import transaction

from models_app.models import FaceImage

from ..models import Campaign, Pair


def create_pairs(campaign: Campaign, items: Iterable[Mapping[str, Any]]) -> list[Pair]:
    """Bulk-create pairs; all or nothing."""
    rows = []
    for item in items:
        kind = item.get("kind", Pair.Kind.DEID)
        expected = item.get("expected_same")
        if kind == Pair.Kind.GOLD_SAME:
            expected = True
        elif kind == Pair.Kind.GOLD_DIFFERENT:
            expected = False
        elif kind == Pair.Kind.DEID:
            expected = None
        elif expected is None:
            expected = item["image_a"] == item["image_b"]
        rows.append(Pair(
            campaign=campaign, image_a_id=_image_pk(item["image_a"]),
            image_b_id=_image_pk(item["image_b"]), kind=kind, expected_same=expected,
            deid_job_id=item.get("deid_job"),
        ))
    with transaction.atomic():
        return Pair.objects.bulk_create(rows, batch_size=1000)


def _image_pk(value: Any) -> Any:
    return value.pk if isinstance(value, FaceImage) else value
