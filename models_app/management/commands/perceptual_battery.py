"""``manage.py perceptual_battery``: the perceptual battery for a proxy version (stored with
it) or for a simulated observer (printed), on the held-out subjects' photos."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from models_app.training.models import ModelKind, ModelVersion


class Command(BaseCommand):
    help = (
        "Run the perceptual battery (changes people ignore; changes that disrupt them) for a "
        "proxy version (--proxy-version N, stored with it; default: the promoted one) or a simulated "
        "observer (--observer NAME or package.module:callable, printed only)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        who = parser.add_mutually_exclusive_group()
        who.add_argument("--proxy-version", type=int, dest="number", help="human-proxy version number")
        who.add_argument("--observer", help="observer short name or package.module:callable")
        parser.add_argument("--faces", type=int, default=0,
                            help="held-out subjects to use (0: DEID_BATTERY_FACES)")

    def handle(self, *args, number: int | None, observer: str | None, faces: int, **opts):
        from models_app.training.battery import battery_for_observer, rerun_battery

        if faces < 0:
            raise CommandError("--faces must be 0 or more")
        if observer:
            from ratings.observers import ObserverError

            try:
                result = battery_for_observer(observer, faces or None)
            except ObserverError as exc:
                raise CommandError(str(exc)) from None
            what = f"observer {observer}"
        else:
            qs = ModelVersion.objects.filter(kind=ModelKind.HUMAN_PROXY)
            target = (qs.filter(number=number) if number is not None
                      else qs.filter(status=ModelVersion.Status.PROMOTED)).first()
            if target is None:
                raise CommandError(
                    f"no human-proxy version {number}" if number is not None
                    else "no promoted human-proxy version (give --proxy-version N)"
                )
            result = rerun_battery(target, faces or None)
            what = f"v{target.number} (stored with the version)"
        if result is None:
            raise CommandError("too few held-out subjects with photos for the battery (need 2)")
        self.stdout.write(json.dumps(result, indent=2))
        verdict = "passed" if result["passed"] else "failed: " + ", ".join(result["failed"])
        self.stderr.write(f"perceptual battery for {what}: {verdict} ({result['n_faces']} faces)")
