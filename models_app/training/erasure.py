"""Erasure in the training domain: forget erased images and subjects in runs' snapshots.

A run's ``data_snapshot`` lists the pairs it trained on (image ids, subject ids) and the
subject split; after an erasure none of those ids may remain. A generator run's snapshot
lists its training and held-out faces (``train_faces``, ``held_out_faces``): erased ones are
taken out too (``erased_faces`` counts them). The counts and metrics of
the run stay (they are about the run, not the person); ``erased_pairs`` says how many
pairs were taken out.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Q

from .models import TrainingRun


def scrub_snapshots(image_ids: Iterable[str], subject_ids: Iterable[str]) -> int:
    """Remove the ids from every run's snapshot; the number of runs changed."""
    images = {str(i) for i in image_ids}
    subjects = {str(s) for s in subject_ids} | {f"image:{i}" for i in images}
    if not images and not subjects:
        return 0
    # A cheap pre-filter on the JSON text (for a few ids); the exact work is done below.
    values = images | {str(s) for s in subject_ids}
    needles = ~Q(data_snapshot={})
    if len(values) <= 100:
        any_of = Q()
        for value in values:
            any_of |= Q(data_snapshot__icontains=value)
        needles &= any_of
    changed = 0
    for run in TrainingRun.objects.select_for_update().filter(needles).order_by("pk"):
        snap = dict(run.data_snapshot or {})
        pairs = snap.get("pairs") or []
        kept = [
            p for p in pairs
            if not ({p.get("a"), p.get("b")} & images
                    or {p.get("subject_a"), p.get("subject_b")} & subjects)
        ]
        split = {
            part: [s for s in members if s not in subjects]
            for part, members in (snap.get("split") or {}).items()
        }
        new = ({**snap, "pairs": kept, "split": split} if "pairs" in snap or "split" in snap
               else dict(snap))
        if len(kept) != len(pairs):
            new["erased_pairs"] = int(snap.get("erased_pairs", 0)) + len(pairs) - len(kept)
        # A generator run lists the faces it trained and was scored on (image ids).
        for key in ("train_faces", "held_out_faces"):
            if key in snap:
                faces = [i for i in snap[key] if i not in images]
                if len(faces) != len(snap[key]):
                    new[key] = faces
                    new["erased_faces"] = (int(new.get("erased_faces", 0))
                                           + len(snap[key]) - len(faces))
        if new != snap:
            run.data_snapshot = new
            run.save(update_fields=["data_snapshot"])
            changed += 1
    return changed
