"""``manage.py import_faces DIR``: import a folder-per-subject tree (the LFW layout)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from models_app.faces.services import get_or_create_subject, ingest_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class Command(BaseCommand):
    help = "Import face images from DIR/<subject>/<image> (one folder per subject)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path)
        parser.add_argument("--source", default="", help="Where the subjects come from (e.g. lfw).")
        parser.add_argument("--limit", type=int, default=0, help="Stop after N files (0 = all).")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, directory: Path, source: str, limit: int, no_progress: bool, **opts):
        if not directory.exists():
            raise CommandError(f"Folder not found: {directory}")
        if not directory.is_dir():
            raise CommandError(f"Not a folder: {directory}")
        files = sorted(
            p for p in directory.glob("*/*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise CommandError(f"No images found under {directory} (expected DIR/<subject>/<image>).")
        if limit:
            files = files[:limit]
        source = source or directory.name
        counts: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        subjects: dict[str, object] = {}
        started = time.perf_counter()
        bar = tqdm(files, unit="img", disable=no_progress, file=self.stderr._out)
        for path in bar:
            label = path.parent.name
            subject = subjects.get(label)
            if subject is None:
                subject = subjects[label] = get_or_create_subject(label, source=source)
            result = ingest_image(path.read_bytes(), subject=subject)
            counts[result.outcome] += 1
            if result.outcome == "rejected":
                reasons[result.code] += 1
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"Imported {counts['imported']}, duplicates {counts['duplicate']}, "
            f"rejected {counts['rejected']} of {len(files)} files from {len(subjects)} subjects "
            f"in {elapsed:.1f} s ({len(files) / max(elapsed, 1e-9):.1f} images/s)."
        )
        for code, n in sorted(reasons.items()):
            self.stdout.write(f"  rejected, {code}: {n}")
