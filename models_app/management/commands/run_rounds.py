"""``manage.py run_rounds``: run rounds of the closed loop, in this process, until done.

Start a series (``--rounds N --faces M``), resume one (``--resume ROUND_OR_SERIES``), or
re-run one stage of a round (``--round ID --stage labels``). A dry run adds ``--observer``:
a simulated crowd (marked simulated everywhere) rates each round's campaign over HTTP
against the site at ``--base-url``, which must be running. Without ``--observer`` the round
waits for people at the judgments stage (see the README: "A round with people").

Stopping this command loses nothing: the beat task ``advance_rounds`` (every minute) or
``--resume`` continues from the stage the database shows.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from deidplatform.errors import AppError
from models_app.rounds import selectors, services
from models_app.rounds.models import Round


class Command(BaseCommand):
    help = "Run closed-loop rounds (jobs → judgments → labels → retraining) until done."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rounds", type=int, default=1, help="rounds in the series")
        parser.add_argument("--faces", type=int, help="faces per round (default 30)")
        parser.add_argument("--series", help="series name (default: a new random one)")
        parser.add_argument("--config", default="{}", help="round settings as JSON")
        parser.add_argument("--sampling", choices=["active", "uniform"])
        parser.add_argument("--max-pairs", type=int, help="cap on deid pairs per round")
        parser.add_argument("--seed", type=int)
        parser.add_argument("--observer", help="dry run: package.module:callable or a shipped name")
        parser.add_argument("--raters", type=int, default=20)
        parser.add_argument("--mix", default=services.SIMULATE_DEFAULTS["mix"])
        parser.add_argument("--base-url", default=services.SIMULATE_DEFAULTS["base_url"])
        parser.add_argument("--time-scale", type=float, default=0.0,
                            help="simulated raters really wait response time x this")
        parser.add_argument("--resume", help="a round id or a series name to continue")
        parser.add_argument("--round", dest="round_id", help="with --stage: the round")
        parser.add_argument("--stage", choices=list(services.STAGES),
                            help="re-run the round from this stage")
        parser.add_argument("--no-wait", action="store_true",
                            help="only start (or re-stage); the beat task advances it")
        parser.add_argument("--poll", type=float, default=2.0)
        parser.add_argument("--timeout", type=float, default=0.0, help="seconds; 0: none")

    def _config(self, opts: dict[str, Any]) -> dict[str, Any]:
        try:
            cfg = json.loads(opts["config"])
        except ValueError as exc:
            raise CommandError(f"--config: not JSON ({exc})") from None
        if not isinstance(cfg, dict):
            raise CommandError("--config: must be a JSON object")
        if opts["rounds"] < 1:
            raise CommandError("--rounds must be at least 1")
        cfg["rounds_left"] = opts["rounds"] - 1
        for opt, key in (("faces", "faces"), ("sampling", "sampling"),
                         ("max_pairs", "max_pairs"), ("seed", "seed")):
            if opts[opt] is not None:
                cfg[key] = opts[opt]
        if opts["observer"]:
            cfg["simulate"] = {**(cfg.get("simulate") or {}), "observer": opts["observer"],
                               "raters": opts["raters"], "mix": opts["mix"],
                               "base_url": opts["base_url"], "time_scale": opts["time_scale"]}
        return cfg

    def _fail(self, exc: AppError) -> CommandError:
        where = "--config: " if (exc.field or "").startswith("config") else ""
        return CommandError(f"{where}{exc.detail} ({exc.field or exc.code})")

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["stage"]:
            rnd = self._find(opts["round_id"] or opts["resume"], "--round")
            try:
                rnd = services.rerun_stage(rnd, opts["stage"])
            except AppError as exc:
                raise self._fail(exc) from None
        elif opts["resume"]:
            rnd = self._find(opts["resume"], "--resume")
        else:
            try:
                rnd = services.start_round(series=opts["series"], config=self._config(opts))
            except AppError as exc:
                raise self._fail(exc) from None
        self._say(rnd)
        if opts["no_wait"]:
            return
        self._drive(rnd, opts["poll"], opts["timeout"])

    def _find(self, key: str | None, flag: str) -> Round:
        if not key:
            raise CommandError(f"{flag}: give a round id or a series name")
        rnd = None
        try:
            rnd = Round.objects.filter(pk=key).first()
        except Exception:  # not a UUID: a series name
            rnd = None
        if rnd is None:
            rnd = Round.objects.filter(series=key).order_by("-number").first()
        if rnd is None:
            raise CommandError(f"{flag}: no round or series {key!r}")
        return rnd

    def _drive(self, rnd: Round, poll: float, timeout: float) -> None:
        started = time.monotonic()
        last = None
        while True:
            rnd = services.advance(rnd.pk)
            now = (rnd.stage, rnd.status, json.dumps(selectors.progress(rnd), sort_keys=True))
            if now != last:
                self._say(rnd)
                last = now
            if rnd.status in (Round.Status.FAILED, Round.Status.CANCELLED):
                raise CommandError(f"round {rnd.pk} {rnd.status}: {rnd.error}")
            if rnd.stage == Round.Stage.DONE:
                self.stdout.write(json.dumps({"round_report": _summary(rnd)}))
                nxt = Round.objects.filter(previous=rnd).first()
                if nxt is None:
                    if rnd.error:
                        self.stderr.write(rnd.error)
                    return
                rnd = nxt
                continue
            if timeout and time.monotonic() - started > timeout:
                raise CommandError(f"--timeout: round {rnd.pk} still at {rnd.stage}; "
                                   f"resume with --resume {rnd.series}")
            time.sleep(poll)

    def _say(self, rnd: Round) -> None:
        self.stdout.write(json.dumps({"round": str(rnd.pk), "series": rnd.series,
                                      "number": rnd.number, **selectors.progress(rnd)}))


def _summary(rnd: Round) -> dict[str, Any]:
    r = rnd.report or {}
    return {k: r.get(k) for k in ("round", "series", "number", "jobs", "crowd", "proxy_before",
                                  "proxy_after", "success", "judgments", "stage_seconds")}
