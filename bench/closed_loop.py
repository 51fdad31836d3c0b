"""Closed-loop rounds, dry-run with simulated observers through the real rater site (issue 11).

For each observer: a scratch PostgreSQL database copied from one base (LFW faces ingested,
a prior proxy trained on natural pairs only), a private Redis, one Celery worker (jobs and
training), the site under granian, and ``--rounds`` rounds of ``--faces`` faces each (a
disjoint set of subjects per round), driven in this process exactly as ``run_rounds`` does.
A simulated crowd of ``--raters`` raters (careful, noisy, same-biased and spammers) rates
every round's campaign over HTTP. Then, in the same run:

* active vs uniform sampling: proxies trained (warm start from the prior) on growing shares
  of the judged pairs, taken in the loop's expected-information order or uniformly, scored
  by AUC against the crowd on the last round's pairs; the judgments each needs to reach the
  full pool's AUC;
* the cross-observer table: the last round's outputs (made with a proxy trained on X's
  crowd) judged by every observer's own P(same) without rater noise;
* a gallery of successes (PNG, in --gallery; not committed).

Every crowd here is simulated: these are the observers' figures, not what people would do.
Prints one JSON line last.

    python -m bench.closed_loop            # 4 rounds x 30 faces x 20 raters, both observers
    python -m bench.closed_loop --quick    # 2 rounds x 6 faces x 8 raters, one observer
    python -m bench.closed_loop --observer mypkg.mod:observe --rounds 3 --faces 20
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    REPO,
    SHARED_DATA,
    emit,
    free_port,
    log,
    machine,
    parse_args,
    redis_ping,
    wait,
)

LFW = SHARED_DATA / "lfw" / "lfw-deepfunneled"
SHIPPED = ["external_features", "inner_face_band"]


# --- Processes: databases, Redis, worker, server ---------------------------------------------


class Stack:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        import dj_database_url

        base = os.environ.get("DATABASE_URL", "")
        if not base.startswith("postgres"):
            sys.exit("set DATABASE_URL to a PostgreSQL server (scratch databases are made)")
        self.server_root = base.rsplit("/", 1)[0]
        self.prefix = f"{dj_database_url.parse(base)['NAME']}_loop"
        self.admin = self.server_root + "/postgres"
        self.tmp, self.args = tmp, args
        self.media = tmp / "media"
        self.media.mkdir()
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.procs: list[subprocess.Popen] = []
        self.dbs: list[str] = []

    def env(self, db: str) -> dict[str, str]:
        return dict(
            os.environ, DJANGO_SETTINGS_MODULE="deidplatform.settings_test",
            DATABASE_URL=f"{self.server_root}/{db}", CELERY_BROKER_URL=self.redis_url,
            CELERY_RESULT_BACKEND=self.redis_url, PRIVATE_MEDIA_ROOT=str(self.media),
            PYTHONUNBUFFERED="1", DEID_SHARED_DATA=str(SHARED_DATA),
        )

    def sql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.admin, autocommit=True) as c:
            c.execute(statement)

    def create_db(self, name: str, template: str | None = None) -> str:
        db = f"{self.prefix}_{name}"
        self.sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        self.sql(f'CREATE DATABASE "{db}"' + (f' TEMPLATE "{template}"' if template else ""))
        self.dbs.append(db)
        return db

    def drop_all(self) -> None:
        for db in self.dbs:
            try:
                self.sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            except Exception as exc:  # noqa: BLE001 - cleanup goes on
                log(f"drop {db}: {exc}")

    def start(self, cmd: list[str], env: dict[str, str], name: str, ready) -> subprocess.Popen:
        path = self.tmp / f"{name}.log"
        with open(path, "w") as out:
            p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        self.procs.append(p)
        try:
            wait(lambda: p.poll() is None and ready(path), 180, name)
        except TimeoutError:
            print(path.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        return p

    def redis(self) -> None:
        def up(_path) -> bool:
            return redis_ping(self.redis_port)

        self.start(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no", "--dir", str(self.tmp)],
                   dict(os.environ), "redis", up)

    def services(self, db: str) -> str:
        """A worker (gpu and cpu queues) and the site on this database; the site's URL."""
        env = self.env(db)
        self.start([sys.executable, "-m", "celery", "-A", "deidplatform", "worker", "-Q",
                    "gpu,cpu", "-P", "solo", "-l", "info", "--without-gossip",
                    "--without-mingle", "-n", f"loop-{db}@%h"],
                   {**env, "OMP_NUM_THREADS": str(self.args.worker_threads)}, f"worker-{db}",
                   lambda p: " ready." in p.read_text(errors="replace"))
        port = free_port()

        def listening(_p) -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        self.start([sys.executable, "-m", "granian", "--interface", "wsgi", "--host",
                    "127.0.0.1", "--port", str(port), "--workers", "1",
                    "--blocking-threads", "8", "--runtime-threads", "1", "--no-ws",
                    "--log-level", "warning", "deidplatform.wsgi:application"],
                   {**env, "OMP_NUM_THREADS": "1"}, f"server-{db}", listening)
        return f"http://127.0.0.1:{port}"

    def stop_services(self) -> None:
        keep = []
        for p in self.procs:
            if p.args[0] == "redis-server":
                keep.append(p)
                continue
            self._stop(p)
        self.procs = keep

    @staticmethod
    def _stop(p: subprocess.Popen) -> None:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def stop_all(self) -> None:
        for p in self.procs:
            self._stop(p)
        self.procs = []

    def child(self, db: str, phase: str, extra: list[str]) -> dict[str, Any]:
        """Run a phase of this script in a child process on ``db``; its last JSON line."""
        cmd = [sys.executable, "-m", "bench.closed_loop", "--phase", phase, *extra]
        r = subprocess.run(cmd, cwd=REPO, env=self.env(db), stdout=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"phase {phase} failed ({r.returncode})")
        return json.loads(r.stdout.strip().splitlines()[-1])


# --- Phases (in a child process, Django set up on one database) -------------------------------


def phase_setup(args: argparse.Namespace) -> dict[str, Any]:
    """LFW subjects with two photos each, and a prior proxy trained on natural pairs only."""
    from models_app.faces.services import get_or_create_subject, ingest_image
    from models_app.training.models import TrainingRun
    from models_app.training.runner import execute_training_run
    from models_app.training.selectors import promoted_version

    t0 = time.perf_counter()
    need = args.rounds * args.faces + args.extra_subjects
    dirs = sorted(d for d in LFW.iterdir() if d.is_dir() and len(list(d.glob("*.jpg"))) >= 2)
    order = np.random.default_rng(args.seed).permutation(len(dirs))
    n_ok = 0
    for i in order[:need]:
        subject = get_or_create_subject(f"lfw:{dirs[i].name}", source="lfw")
        for f in sorted(dirs[i].glob("*.jpg"))[:2]:
            img = ingest_image(f.read_bytes(), subject=subject).image
            n_ok += img is not None and img.status == "ok"
    # The donor pool of `disguise` (FaceImage kind donor, no subject: donors carry no
    # identity): first photos of other LFW subjects than the rounds'.
    n_donors = 0
    for i in order[need:]:
        if n_donors >= args.donors:
            break
        first = sorted(dirs[i].glob("*.jpg"))[0]
        img = ingest_image(first.read_bytes(), kind="donor").image
        n_donors += img is not None and img.status == "ok"
    ingest_s = time.perf_counter() - t0
    log(f"ingested {n_ok} faces of {need} subjects and {n_donors} donors in {ingest_s:.0f} s")
    t1 = time.perf_counter()
    run = TrainingRun.objects.create(trigger=TrainingRun.Trigger.BOOTSTRAP, config={
        "natural_same": args.natural, "natural_different": args.natural,
        "train": {"stop": {"max_epochs": args.epochs}}})
    out = execute_training_run(str(run.pk))
    prior = promoted_version()
    log(f"prior proxy: {out} ({time.perf_counter() - t1:.0f} s)")
    forced = None
    if prior is None and out.get("version"):
        # The rounds need a prior; an operator would force it the same way. Its gate
        # reasons (e.g. an invariance item of the battery) go into the output.
        from models_app.training import registry
        from models_app.training.models import ModelKind, ModelVersion

        version = ModelVersion.objects.get(kind=ModelKind.HUMAN_PROXY, number=out["version"])
        forced = version.gate.get("reasons", version.gate)
        prior = registry.promote(version, force=True)
        log(f"prior proxy v{prior.number} promoted by force (gate: {forced})")
    if prior is None:
        raise RuntimeError(f"no prior proxy promoted: {out}")
    return {"faces": n_ok, "subjects": need, "donors": n_donors, "ingest_s": round(ingest_s, 1),
            "prior_train_s": round(time.perf_counter() - t1, 1), "prior_version": prior.number,
            "prior_metrics": prior.metrics.get("held_out", {}).get("auc"),
            "prior_forced": forced}


def _round_config(args: argparse.Namespace, observer: str, base_url: str) -> dict[str, Any]:
    return {
        "faces": args.faces, "seed": args.seed, "rounds_left": args.rounds - 1,
        "sampling": "active", "max_pairs": 0,
        "job_params": {"max_iterations": args.max_iterations, **json.loads(args.job_params)},
        "gold_same": max(2, args.faces // 5), "gold_different": max(2, args.faces // 5),
        "attention": max(1, args.faces // 10),
        "campaign": {"judgments_per_pair": args.judgments_per_pair, "qualification_size": 4, "gold_rate": 0.1,
                     "attention_rate": 0.05, "pass_mark": args.pass_mark,
                     "min_response_ms": 700},
        "simulate": {"observer": observer, "raters": args.raters, "mix": args.mix,
                     "base_url": base_url, "time_scale": 0.0, "max_seconds": 1800.0,
                     "concurrency": args.concurrency, "patience_s": 5.0, "seed": args.seed},
        "training": {"natural_same": args.natural, "natural_different": args.natural,
                     "train": _train_config(args)},
    }


def _train_config(args: argparse.Namespace) -> dict[str, Any]:
    """The rounds' TrainConfig: epochs and natural weight, then ``--train-config`` over them."""
    extra = json.loads(args.train_config)
    stop = {"max_epochs": args.epochs, **extra.pop("stop", {})}
    return {"natural_weight": args.natural_weight, **extra, "stop": stop}


def phase_series(args: argparse.Namespace) -> dict[str, Any]:
    """The rounds of one observer, then sampling, the cross-observer row and a gallery."""
    from models_app.rounds import services
    from models_app.rounds.models import Round

    observer = args.observer_one
    series = f"bench-{observer.replace(':', '-').replace('.', '-')}"[:64]
    rnd = services.start_round(series=series, config=_round_config(args, observer, args.base_url))
    rounds: list[dict[str, Any]] = []
    t_series = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        while True:
            rnd = services.advance(rnd.pk)
            if rnd.status != Round.Status.RUNNING:
                break
            time.sleep(1.0)
        if rnd.status != Round.Status.SUCCEEDED:
            raise RuntimeError(f"round {rnd.number}: {rnd.status} {rnd.error}")
        rounds.append({**_round_row(rnd, time.perf_counter() - t0),
                       "observer_view": observer_view(rnd, observer)})
        log(f"{observer} round {rnd.number}: {json.dumps(rounds[-1])}")
        nxt = Round.objects.filter(previous=rnd).first()
        if nxt is None:
            break
        if args.force_promote:
            _force_promote(rnd)
        rnd = nxt
    series_s = time.perf_counter() - t_series
    all_rounds = list(Round.objects.filter(series=series).order_by("number"))
    sampling = active_vs_uniform(all_rounds, args)
    cross = cross_row(all_rounds[-1], args.all_observers)
    # Whose proxy made the outputs the row judges: the table tests learning from X's
    # judgments only when that proxy was trained on them (not the natural-pairs prior).
    made_with = all_rounds[-1].proxy_before
    cross_made_with = {"version": made_with.number if made_with else None,
                       "prior": bool(made_with.is_prior) if made_with else None}
    with_prior = None
    if args.prior_row:
        t0 = time.perf_counter()
        with_prior = prior_row(all_rounds[-1], args.all_observers)
        log(f"{observer}: the last round's faces with the prior: {with_prior} "
            f"({time.perf_counter() - t0:.0f} s)")
    gallery = make_gallery(all_rounds, Path(args.gallery) / _slug(observer)) if args.gallery else None
    return {"observer": observer, "rounds": rounds, "series_seconds": round(series_s, 1),
            "active_vs_uniform": sampling, "cross": cross, "cross_made_with": cross_made_with,
            "cross_with_prior": with_prior, "gallery": gallery}


def _force_promote(rnd) -> None:
    """The operator's override (``--force-promote``): promote the version this round
    trained even when its gate refused it, so the next round's outputs are made with a proxy
    trained on every judgment so far. An experimental arm: it separates "does training on
    judgments help" from "does the gate let it through"."""
    from models_app.training.models import ModelKind, ModelVersion
    from models_app.training.registry import promote

    number = (rnd.report.get("proxy_after") or {}).get("version")
    version = ModelVersion.objects.filter(kind=ModelKind.HUMAN_PROXY, number=number).first()
    if version is not None and version.status != ModelVersion.Status.PROMOTED:
        promote(version, force=True)
        log(f"round {rnd.number}: v{number} promoted by force (its gate: "
            f"{(rnd.report.get('gate') or {}).get('passed')})")


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s)


def _round_row(rnd, seconds: float) -> dict[str, Any]:
    rep = rnd.report
    crowd = rnd.state.get("crowd", {})
    return {
        "round": rnd.number, "faces": rep["faces"], "proxy_version": rep["proxy_before"]["version"],
        "success_rate": rep["success"]["rate"], "successes": rep["success"]["successes"],
        "judged_outputs": rep["success"]["judged_outputs"],
        "loop_believed_rate": rep["success"]["loop_believed_rate"],
        "belief_gap": rep["success"]["belief_gap"],
        "proxy_auc_before": rep["proxy_before"]["all_pairs"]["auc"],
        "proxy_brier_before": rep["proxy_before"]["all_pairs"]["brier"],
        "proxy_auc_after": rep["proxy_after"]["all_pairs"]["auc"],
        "proxy_brier_after": rep["proxy_after"]["all_pairs"]["brier"],
        "new_version": rep["proxy_after"]["version"], "new_status": rep["proxy_after"]["status"],
        "gate_passed": (rep.get("gate") or {}).get("passed"),
        "crowd_score_a_outputs": rep["crowd"]["score_a_outputs_mean"],
        "pairs": rep["sampling"]["chosen"] if rep.get("sampling") else None,
        "judgments": rep["judgments"].get("all"), "judgments_counted": rep["judgments"].get("counted"),
        "judgments_per_s": crowd.get("judgments_per_s"), "crowd_ends": crowd.get("ends"),
        "ssim_successes": rep["success"]["ssim_mean"], "mac_successes": rep["success"]["mac_mean"],
        "natural_share": rep["success"].get("natural_share"),
        "natural_share_successes": rep["success"].get("natural_share_successes"),
        # What this crowd does with two genuinely different people (gold pairs): the most
        # crowd-judged success an output that looks like someone else can reach.
        "ceiling_majority_different": ((rep["success"].get("ceiling") or {})
                                       .get("gold_different") or {}).get("majority_different_rate"),
        "stage_seconds": {k: v.get("seconds") for k, v in rnd.stage_times.items()},
        "seconds": round(seconds, 1),
    }


def _labelled_pairs(rounds) -> list[dict[str, Any]]:
    """Every judged deid pair of these rounds: its label, judgments, information, subject."""
    from models_app.faces.models import FaceImage
    from ratings.models import PairLabel
    from ratings.selectors import label_judgments

    out = []
    for rnd in rounds:
        counts: dict[int, int] = {}
        for pid in label_judgments(rnd.campaign_id).values_list("pair_id", flat=True):
            counts[pid] = counts.get(pid, 0) + 1
        info = rnd.state.get("pairs", {})
        for pl in PairLabel.objects.filter(pair__campaign_id=rnd.campaign_id,
                                           pair__kind="deid").select_related("pair"):
            src = FaceImage.objects.only("subject_id").get(pk=pl.pair.image_a_id)
            out.append({
                "pair": pl.pair_id, "a": str(pl.pair.image_a_id), "b": str(pl.pair.image_b_id),
                "target": float(pl.score_a), "n": counts.get(pl.pair_id, 0), "round": rnd.number,
                "info": (info.get(str(pl.pair_id)) or {}).get("information") or 0.0,
                # Ties of a saturated prior go by |log-odds| (as the rounds order them).
                "sureness": abs((info.get(str(pl.pair_id)) or {}).get("logit_before") or 0.0),
                "subject": str(src.subject_id),
            })
    return out


def active_vs_uniform(rounds, args: argparse.Namespace) -> dict[str, Any]:
    """Proxies warm-started from the prior and trained on the first b judged pairs of the
    earlier rounds (the loop's expected-information order vs a uniform order), scored by AUC
    against the crowd's labels on the last round's pairs."""
    from models_app.faces.models import FaceImage
    from models_app.faces.selectors import contexts
    from models_app.proxy.data import LabelledPair, PairTable, SubjectSplit, human_pair_weight
    from models_app.proxy.train import TrainConfig, evaluate_proxy, train_proxy
    from models_app.training.models import ModelVersion
    from models_app.training.selectors import load_version_model, natural_pairs

    if len(rounds) < 2:
        return {"skipped": "needs at least 2 rounds (the last one is the test set)"}
    t0 = time.perf_counter()
    pool = _labelled_pairs(rounds[:-1])
    test = _labelled_pairs(rounds[-1:])
    prior = ModelVersion.objects.filter(is_prior=True).order_by("number").first()
    model = load_version_model(prior)
    nat, nat_images = natural_pairs(args.natural, args.natural, args.seed)

    def lp(r: dict[str, Any]) -> LabelledPair:
        return LabelledPair(a=r["a"], b=r["b"], target=r["target"],
                            weight=human_pair_weight(max(r["n"], 1)), subject_a=r["subject"],
                            subject_b=r["subject"], natural=False, pair_id=f"pair:{r['pair']}")

    ids = {r["a"] for r in pool + test} | {r["b"] for r in pool + test}
    images = {str(i.pk): i for i in FaceImage.objects.filter(pk__in=ids, landmarks__isnull=False)}
    # An output whose face was lost has no context crop: its pair cannot train or test.
    pool = [r for r in pool if r["a"] in images and r["b"] in images]
    test = [r for r in test if r["a"] in images and r["b"] in images]
    images.update(nat_images)
    keys, ctx = contexts(images.values())
    bank = model.encode_images(ctx, keys)
    test_table = PairTable([lp(r) for r in test])
    rng = np.random.default_rng(args.seed)
    orders = {"active": sorted(range(len(pool)),
                               key=lambda i: (-pool[i]["info"], pool[i]["sureness"])),
              "uniform": list(rng.permutation(len(pool)))}
    fractions = [0.125, 0.25, 0.5, 1.0]
    curves: dict[str, list[dict[str, Any]]] = {}
    for method, order in orders.items():
        curves[method] = []
        for frac in fractions:
            chosen = [pool[i] for i in order[: max(4, round(frac * len(pool)))]]
            table = PairTable([lp(r) for r in chosen]) + nat
            subjects = sorted(table.subjects)
            val = sorted(subjects[i] for i in np.random.default_rng(args.seed).permutation(
                len(subjects))[: max(1, len(subjects) // 6)])
            split = SubjectSplit(sorted(set(subjects) - set(val)), val, [])
            result = train_proxy(bank, table, TrainConfig.from_dict(
                {"seed": args.seed, "min_pairs": 4, **_train_config(args)}),
                split=split, init=copy.deepcopy(model).requires_grad_(True))
            m = evaluate_proxy(result.model, bank, test_table)
            curves[method].append({"pairs": len(chosen),
                                   "judgments": int(sum(r["n"] for r in chosen)),
                                   "auc": None if m.get("auc") is None else round(m["auc"], 4)})
            log(f"sampling {method} {frac}: {curves[method][-1]}")
    full = max((c[-1]["auc"] or 0.0) for c in curves.values())
    target = round(full - 0.01, 4)

    def needed(curve) -> int | None:
        return next((c["judgments"] for c in curve if c["auc"] is not None and c["auc"] >= target),
                    None)

    return {"pool_pairs": len(pool), "test_pairs": len(test), "target_auc": target,
            "judgments_to_target": {k: needed(v) for k, v in curves.items()},
            "curves": curves, "seconds": round(time.perf_counter() - t0, 1)}


def observer_view(rnd, observer: str) -> dict[str, Any]:
    """What only a simulation can show: the observer's own P(same), without rater noise, on
    the round's judged pairs. ``crowd_vs_observer_auc`` is the observer's P against the
    crowd's majority, the ceiling of any proxy's AUC against these labels (a majority of a
    few noisy votes on a pair the observer finds 60/40 is close to a coin toss);
    ``proxy_vs_observer_auc`` is the proxy (before retraining) against the observer's verdict
    (P < 0.5); ``observer_success_rate`` counts final outputs the observer calls different
    with B ≥ τB on the saved file. None where one class is missing."""
    from models_app.proxy.metrics import roc_auc
    from models_app.rounds.selectors import round_pairs
    from ratings.observers import judge, load_observer

    obs = load_observer(observer)
    rng = np.random.default_rng(0)
    tau_b = float(rnd.config["job_params"].get("tau_b", 0.5))
    state = rnd.state.get("pairs", {})
    rows = []
    for r in round_pairs(rnd):
        job = r["job"]
        try:
            p = judge(obs, *_pair_images(r), rng)
        except FileNotFoundError:  # an output erased meanwhile
            continue
        st = state.get(str(r["pair"])) or {}
        # Rank by the log-odds where the round kept them (P saturates at 1.0: ties).
        before = st.get("logit_before", st.get("p_before"))
        b_ok = job.final_score_b is not None and job.final_score_b >= tau_b
        rows.append((p, r["crowd_score_a"], before, r["final"], b_ok))
    if not rows:
        return {}

    def auc(scores, labels) -> float | None:
        a = roc_auc(scores, labels) if len(scores) else float("nan")
        return None if np.isnan(a) else round(float(a), 4)

    p_obs = np.array([x[0] for x in rows])
    crowd = np.array([np.nan if x[1] is None else x[1] for x in rows])
    before = np.array([np.nan if x[2] is None else x[2] for x in rows])
    final = np.array([x[3] for x in rows], bool)
    b_ok = np.array([x[4] for x in rows], bool)
    maj = ~np.isnan(crowd) & (np.abs(crowd - 0.5) > 1e-9)
    has_b = ~np.isnan(before)
    return {
        "pairs": len(rows),
        "observer_different_share": round(float(np.mean(p_obs < 0.5)), 4),
        "crowd_different_share": round(float(np.mean(crowd[maj] < 0.5)), 4) if maj.any() else None,
        "crowd_vs_observer_auc": auc(p_obs[maj], crowd[maj] > 0.5),
        "proxy_vs_observer_auc": auc(before[has_b], p_obs[has_b] >= 0.5),
        "proxy_vs_crowd_auc": auc(before[has_b & maj], crowd[has_b & maj] > 0.5),
        "observer_success_rate": round(float(np.sum(final & b_ok & (p_obs < 0.5))
                                             / max(1, int(final.sum()))), 4),
    }


def _pair_images(r: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    from models_app.faces.models import FaceImage
    from models_app.faces.selectors import load_rgb_array

    a = FaceImage.objects.get(pk=r["source"])
    b = FaceImage.objects.get(pk=r["image"])
    return load_rgb_array(a), load_rgb_array(b)


def cross_row(last_round, observers: list[str]) -> dict[str, Any]:
    """The last round's final outputs judged by each observer's own P(same) (no rater
    noise): success = P(same) < 0.5 and the saved file's score-B ≥ τB."""
    return judge_batch(last_round.batch_id, _tau_b(last_round), observers)


def _tau_b(rnd) -> float:
    return float(rnd.config["job_params"].get("tau_b", 0.5))


def judge_batch(batch_id, tau_b: float, observers: list[str]) -> dict[str, Any]:
    """A batch's final outputs judged by each observer (see :func:`cross_row`)."""
    from models_app.faces.selectors import load_rgb_array
    from models_app.jobs.models import DeidJob
    from ratings.observers import judge, load_observer

    jobs = [j for j in DeidJob.objects.filter(batch_id=batch_id)
            .select_related("source", "output")]
    row: dict[str, Any] = {}
    for name in observers:
        obs = load_observer(name)
        rng = np.random.default_rng(0)
        wins = 0
        for job in jobs:
            if job.output_id is None or job.final_score_b is None:
                continue
            p = judge(obs, load_rgb_array(job.source), load_rgb_array(job.output), rng)
            wins += bool(p < 0.5 and job.final_score_b >= tau_b)
        row[name] = round(wins / len(jobs), 4) if jobs else None
    return row


def prior_row(last_round, observers: list[str]) -> dict[str, Any] | None:
    """The last round's faces made again with the natural-pairs prior, judged like the cross
    row: the baseline a proxy trained on judgments is read against, on the same faces. The
    prior is promoted (forced, the operator's rollback) for this one batch, then the series'
    own version again."""
    from models_app.jobs.models import DeidJob
    from models_app.jobs.services import create_batch
    from models_app.training.models import ModelKind, ModelVersion
    from models_app.training.registry import promote

    kind = ModelKind.HUMAN_PROXY
    current = ModelVersion.objects.get(kind=kind, status=ModelVersion.Status.PROMOTED)
    prior = ModelVersion.objects.filter(kind=kind, is_prior=True).order_by("number").first()
    if prior is None:
        return None
    if prior.pk == current.pk:
        return {**cross_row(last_round, observers), "_same_batch": True}
    promote(prior, force=True)
    try:
        batch = create_batch(images=list(last_round.faces.all()),
                             params=last_round.config["job_params"])
        while DeidJob.objects.filter(batch_id=batch.pk, status__in=DeidJob.ACTIVE).exists():
            time.sleep(2.0)
    finally:
        promote(current, force=True)
    return judge_batch(batch.pk, _tau_b(last_round), observers)


def make_gallery(rounds, folder: Path) -> str:
    """Source | output of each round's crowd-judged successes, one PNG per round."""
    from PIL import Image

    from models_app.faces.selectors import load_rgb_array
    from models_app.jobs.models import DeidJob
    from models_app.rounds.selectors import round_pairs

    folder.mkdir(parents=True, exist_ok=True)
    for rnd in rounds:
        tiles = []
        for r in round_pairs(rnd):
            job: DeidJob = r["job"]
            b_ok = job.final_score_b is not None and job.final_score_b >= 0.5
            if r["final"] and r["votes_different"] > r["votes_same"] and b_ok:
                a, b = load_rgb_array(job.source), load_rgb_array(job.output)
                if a.shape == b.shape:
                    tiles.append(np.concatenate([a, b], axis=1))
        if not tiles:
            continue
        h = max(t.shape[0] for t in tiles)
        tiles = [np.asarray(Image.fromarray(t).resize((int(t.shape[1] * 160 / h), 160)))
                 for t in tiles[:24]]
        rows = [np.concatenate(tiles[i:i + 4], axis=1) for i in range(0, len(tiles), 4)]
        width = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
        Image.fromarray(np.concatenate(rows, axis=0)).save(folder / f"round-{rnd.number}.png")
    return str(folder)


# --- The run -----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--observer", action="append", default=[],
                    help="package.module:callable (repeatable); default: the shipped ones")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--faces", type=int, default=30)
    ap.add_argument("--raters", type=int, default=20)
    ap.add_argument("--mix", default="careful=0.6,noisy=0.15,same_biased=0.1,spammer=0.15")
    ap.add_argument("--judgments-per-pair", type=int, default=3)
    ap.add_argument("--job-params", default="{}",
                    help="job parameters (JSON) of the rounds' jobs, e.g. a parameterisation")
    ap.add_argument("--donors", type=int, default=0,
                    help="LFW photos of other subjects ingested as disguise donors")
    ap.add_argument("--pass-mark", type=float, default=0.5,
                    help="campaign gold pass mark (the shipped observers are weak)")
    ap.add_argument("--max-iterations", type=int, default=90)
    ap.add_argument("--natural", type=int, default=200, help="natural pairs of each kind")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--natural-weight", type=float, default=0.1,
                    help="weight of each natural pair in the rounds' retraining (judged "
                         "pairs weigh 1): a round judges ~50-100 pairs against 2x--natural")
    ap.add_argument("--train-config", default="{}",
                    help="TrainConfig fields (JSON) over the rounds' training, e.g. batch_size")
    ap.add_argument("--extra-subjects", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--worker-threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prior-row", action="store_true",
                    help="also make the last round's faces with the natural-pairs prior and "
                    "judge them like the cross table (the same-faces baseline)")
    ap.add_argument("--force-promote", action="store_true",
                    help="promote each round's retrained proxy even if its gate refuses it (an "
                    "operator's override; the cross-observer table then always judges outputs "
                    "made with a proxy trained on the observer's own crowd)")
    ap.add_argument("--gallery", default="/tmp/closed_loop_gallery")
    ap.add_argument("--phase", choices=["main", "setup", "series"], default="main",
                    help=argparse.SUPPRESS)
    ap.add_argument("--observer-one", help=argparse.SUPPRESS)
    ap.add_argument("--all-observers", nargs="*", default=[], help=argparse.SUPPRESS)
    ap.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parse_args(ap, {"rounds": 2, "faces": 6, "raters": 8, "natural": 60, "epochs": 3,
                           "max_iterations": 30, "extra_subjects": 12,
                           "observer": ["inner_face_band"]})
    if args.phase != "main":
        import django

        django.setup()
        out = phase_setup(args) if args.phase == "setup" else phase_series(args)
        print(json.dumps(out))
        return
    if not LFW.is_dir():
        sys.exit(f"LFW not found at {LFW} (../shared/data is absent)")
    observers = args.observer or list(SHIPPED)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    common = ["--rounds", str(args.rounds), "--faces", str(args.faces), "--raters",
              str(args.raters), "--mix", args.mix, "--pass-mark", str(args.pass_mark),
              "--judgments-per-pair", str(args.judgments_per_pair),
              "--job-params", args.job_params, "--donors", str(args.donors),
              "--max-iterations", str(args.max_iterations), "--natural", str(args.natural),
              "--epochs", str(args.epochs), "--natural-weight", str(args.natural_weight),
              "--train-config", args.train_config, "--extra-subjects", str(args.extra_subjects),
              "--concurrency", str(args.concurrency), "--seed", str(args.seed),
              "--gallery", args.gallery, *(["--force-promote"] if args.force_promote else []),
              *(["--prior-row"] if args.prior_row else [])]
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(args, Path(tmp))
        try:
            base = stack.create_db("base")
            subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO,
                           env=stack.env(base), check=True)
            setup = stack.child(base, "setup", common)
            log(f"setup: {setup}")
            stack.redis()
            series = []
            for i, obs in enumerate(observers):
                db = stack.create_db(f"obs{i}", template=base)
                url = stack.services(db)
                try:
                    series.append(stack.child(db, "series", [
                        *common, "--observer-one", obs, "--base-url", url,
                        "--all-observers", *observers]))
                finally:
                    stack.stop_services()
        finally:
            stack.stop_all()
            stack.drop_all()
    cross = {s["observer"]: s["cross"] for s in series}
    diag = [cross[o][o] for o in observers if cross[o].get(o) is not None]
    off = [cross[x][y] for x in observers for y in observers
           if x != y and cross[x].get(y) is not None]
    summary = {
        s["observer"]: {
            "success_by_round": [r["success_rate"] for r in s["rounds"]],
            "ceiling_by_round": [r.get("ceiling_majority_different") for r in s["rounds"]],
            "proxy_auc_before_by_round": [r["proxy_auc_before"] for r in s["rounds"]],
            "belief_gap_by_round": [r["belief_gap"] for r in s["rounds"]],
            "last_success_ge_0.8": (s["rounds"][-1]["success_rate"] or 0) >= 0.8,
            "last_auc_ge_0.85": (s["rounds"][-1]["proxy_auc_before"] or 0) >= 0.85,
            "judgments_to_target": s["active_vs_uniform"].get("judgments_to_target"),
        } for s in series
    }
    emit({
        "bench": "closed_loop", "date": time.strftime("%Y-%m-%d"), "machine": machine(),
        "simulated_crowd": True, "rounds": args.rounds, "faces": args.faces,
        "raters": args.raters, "mix": args.mix, "observers": observers, "setup": setup,
        "summary": summary,
        "force_promote": args.force_promote,
        "cross_observer": {"table": cross,
                           "outputs_made_with": {s["observer"]: s["cross_made_with"]
                                                 for s in series},
                           "same_faces_with_prior": {s["observer"]: s["cross_with_prior"]
                                                     for s in series},
                           "diagonal_mean": round(float(np.mean(diag)), 4) if diag else None,
                           "off_diagonal_mean": round(float(np.mean(off)), 4) if off else None},
        "series": series, "seconds": round(time.perf_counter() - started, 1),
    })


if __name__ == "__main__":
    main()
