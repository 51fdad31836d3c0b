"""``manage.py simulate_crowd``: a simulated crowd rates a campaign through the running site.

Operator-side only: it reads the campaign (entry rules, minimum response time) from the
database, then every judgment goes over HTTP like a browser's. The server marks the
raters simulated (ratings.models.Rater.save) because the campaign allows simulation; a
campaign that does not is refused here, so no simulated judgment can pass for a person's.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ratings import binding
from ratings.models import Campaign
from ratings.observers import ObserverError, load_observer
from ratings.simulation import CrowdConfig, parse_mix, run_crowd


class Command(BaseCommand):
    help = "Rate a campaign with simulated raters over HTTP against a running server."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--campaign", required=True, help="campaign slug")
        parser.add_argument("--raters", type=int, default=10)
        parser.add_argument("--observer", default="external_features",
                            help="package.module:callable or a shipped short name")
        parser.add_argument("--mix", default="careful=0.6,noisy=0.2,same_biased=0.1,spammer=0.1")
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--max-seconds", type=float, default=600.0)
        parser.add_argument("--time-scale", type=float, default=1.0,
                            help="real waiting = simulated response time x this (0: none)")
        parser.add_argument("--concurrency", type=int, default=8)
        parser.add_argument("--patience", type=float, default=10.0,
                            help="seconds a rater waits for work before leaving")

    def handle(self, *args: Any, **opts: Any) -> None:
        campaign = Campaign.objects.filter(slug=opts["campaign"]).first()
        if campaign is None:
            raise CommandError(f"--campaign: no campaign {opts['campaign']!r}")
        if not campaign.allows_simulation:
            raise CommandError(
                f"--campaign: {campaign.slug!r} does not allow simulation; turn on its "
                "allows_simulation first (only then does the server mark the raters simulated)"
            )
        if campaign.status != Campaign.Status.ACTIVE:
            raise CommandError(f"--campaign: {campaign.slug!r} is {campaign.status}, not active")
        if opts["raters"] < 1:
            raise CommandError("--raters must be at least 1")
        if opts["time_scale"] < 0 or opts["max_seconds"] <= 0:
            raise CommandError("--time-scale must be >= 0 and --max-seconds > 0")
        try:
            mix = parse_mix(opts["mix"])
        except ValueError as exc:
            raise CommandError(f"--mix: {exc}") from None
        try:
            observer = load_observer(opts["observer"])
        except ObserverError as exc:
            raise CommandError(f"--observer: {exc}") from None
        signed = campaign.require_signed_links
        cfg = CrowdConfig(
            base_url=opts["base_url"], slug=campaign.slug, raters=opts["raters"], mix=mix,
            seed=opts["seed"], max_seconds=opts["max_seconds"], time_scale=opts["time_scale"],
            min_response_ms=campaign.min_response_ms,
            study_id=campaign.external_study_id or "SIM-STUDY",
            concurrency=opts["concurrency"], patience_s=opts["patience"],
            run_id=secrets.token_hex(3),
            sign=(lambda pid: binding.link_signature(campaign, pid)) if signed else None,
        )
        report = run_crowd(cfg, observer)
        self.stdout.write(json.dumps(report.as_dict()))
