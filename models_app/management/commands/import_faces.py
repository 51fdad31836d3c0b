"""``manage.py import_faces DIR``: import a folder-per-subject tree (the LFW layout)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from models_app.faces.models import FaceImage, Subject
from models_app.faces.services import ingest_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class Command(BaseCommand):
    help = ("Import face images from DIR/<subject>/<image> (one folder per subject); with "
            "--kind donor, into the donor pool (no subjects; DIR/<image> works too).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path)
        parser.add_argument("--source", default="", help="Where the subjects come from (e.g. lfw).")
        parser.add_argument("--limit", type=int, default=0, help="Stop after N files (0 = all).")
        parser.add_argument("--no-progress", action="store_true")
        parser.add_argument(
            "--kind", choices=["source", "donor"], default="source",
            help="donor: photos for the disguise parameterisation's donor pool (consented or "
            "licensed), stored without a subject; never rating sources.",
        )

    def handle(self, *args, directory: Path, source: str, limit: int, no_progress: bool,
               kind: str = "source", **opts):
        if not directory.exists():
            raise CommandError(f"Folder not found: {directory}")
        if not directory.is_dir():
            raise CommandError(f"Not a folder: {directory}")
        # Donors have no subject: a flat folder of photos is fine too.
        patterns = ("*/*", "*") if kind == FaceImage.Kind.DONOR else ("*/*",)
        files = sorted(
            p for pat in patterns for p in directory.glob(pat)
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise CommandError(f"No images found under {directory} (expected DIR/<subject>/<image>).")
        if limit:
            files = files[:limit]
        source = source or directory.name
        counts: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        subjects: dict[str, Subject] = {}
        started = time.perf_counter()
        bar = tqdm(files, unit="img", disable=no_progress, file=self.stderr._out)
        for path in bar:
            label = path.parent.name
            code = ""
            try:
                # The subject is created with its first stored image, never for a folder
                # whose files are all rejected.
                if kind == FaceImage.Kind.DONOR:  # no identity: no subject at all
                    result = ingest_image(path.read_bytes(), kind=FaceImage.Kind.DONOR)
                else:
                    result = ingest_image(
                        path.read_bytes(), subject=subjects.get(label), subject_label=label,
                        subject_source=source,
                    )
            except Exception as exc:  # one bad file (a dlib error, a read error) never aborts
                log.exception("import of %s failed", path)
                code = f"error ({type(exc).__name__})"
            else:
                if result.outcome == "rejected":
                    code = result.code
                else:
                    counts[result.outcome] += 1
                    if result.outcome == "imported" and result.image.subject is not None:
                        subjects.setdefault(label, result.image.subject)
            if code:
                counts["rejected"] += 1
                reasons[code] += 1
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"Imported {counts['imported']}, duplicates {counts['duplicate']}, "
            f"rejected {counts['rejected']} of {len(files)} files from {len({p.parent.name for p in files})} subjects "
            f"in {elapsed:.1f} s ({len(files) / max(elapsed, 1e-9):.1f} images/s)."
        )
        for code, n in sorted(reasons.items()):
            self.stdout.write(f"  rejected, {code}: {n}")
