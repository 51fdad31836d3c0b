"""Runs a de-identification job on a gpu worker: the loop, its rows, its output.

Reliability: every iteration is recorded (idempotently, by ``(job, index)``) together with
a checkpoint of the loop state, in one transaction. A worker killed mid-job leaves a job in
``running`` with its last checkpoint; the redelivered task (``acks_late``) resumes from it,
so no recorded iteration is lost or duplicated. The ladder's rungs (``DeidConfig.ladder``)
are stored in the transaction of the iteration that crossed them, so a resumed job neither
loses nor repeats one (the loop's checkpoint remembers what was crossed; the job's
``ladder`` is checked too). The output file and its row are created in
one transaction with the job's completion, so a retry never makes a second output.

Liveness: each attempt claims the job with a fresh ``claim`` and beats (``heartbeat``) at
every iteration. A delivery that finds the job owned by a live attempt is dropped, so a
re-sent or redelivered message never runs a job twice at once; an attempt that finds its
claim gone (the sweeper re-queued it, or it was cancelled) stops at its next iteration.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import models, transaction
from django.utils import timezone

from models_app.faces.models import FaceImage
from models_app.faces.selectors import load_rgb_array
from models_app.faces.services import ingest_image
from models_app.training.selectors import load_version_model
from models_app.vision import faces
from models_app.vision.imagefile import encode_png

from .models import DeidIteration, DeidJob
from .params import METHOD_GENERATOR, METHOD_HYBRID, config_from_params, method_of
from .services import send_output_to_campaign

log = logging.getLogger(__name__)

TERMINAL = (
    DeidJob.Status.SUCCEEDED, DeidJob.Status.FINISHED, DeidJob.Status.FAILED,
    DeidJob.Status.CANCELLED,
)


def _claim(job_id: str, claim: uuid.UUID | None = None) -> DeidJob | None:
    """Take the job for this attempt; None when it is terminal, or owned by another attempt
    whose heartbeat is fresh (this delivery is a duplicate)."""
    with transaction.atomic():
        job = DeidJob.objects.select_for_update().select_related("source").get(pk=job_id)
        if job.status in TERMINAL:
            return None
        now = timezone.now()
        fresh = now - timedelta(seconds=settings.DEID_HEARTBEAT_STALE_S)
        if job.status == DeidJob.Status.RUNNING and job.heartbeat and job.heartbeat >= fresh:
            log.info("job %s: owned by a live attempt, delivery dropped", job_id)
            return None
        if job.attempts >= settings.DEID_JOB_MAX_ATTEMPTS:
            # Its worker died that often: most likely the job kills it (memory); stop there.
            job.status, job.finished = DeidJob.Status.FAILED, now
            job.error = f"gave up after {job.attempts} attempts (the worker died each time)"
            job.save(update_fields=["status", "finished", "error"])
            return None
        job.status = DeidJob.Status.RUNNING
        job.attempts += 1
        job.started = job.started or now
        job.heartbeat = now
        job.claim = claim or uuid.uuid4()
        job.save(update_fields=["status", "attempts", "started", "heartbeat", "claim"])
    return job


def _owned(job: DeidJob) -> models.QuerySet:
    """The job, as long as this attempt still owns it and it was not cancelled."""
    return DeidJob.objects.filter(pk=job.pk, claim=job.claim, status=DeidJob.Status.RUNNING)


def _load_state(job: DeidJob):
    from models_app.deid import DeidState  # torch: loaded on the worker only

    if not job.checkpoint:
        return None
    try:
        with job.checkpoint.storage.open(job.checkpoint.name, "rb") as fh:
            return DeidState.from_bytes(fh.read())
    except (OSError, ValueError, RuntimeError):
        log.warning("job %s: unreadable checkpoint, restarting cleanly", job.pk)
        return None


def _record(job: DeidJob, rec, checkpoint, rungs=()) -> None:
    """One iteration row, the rungs it crossed and the checkpoint after it, committed
    together."""
    state = checkpoint().to_bytes() if rec.iteration > 0 else None
    with transaction.atomic():
        DeidIteration.objects.update_or_create(
            job=job, index=rec.iteration,
            defaults={
                "score_a": rec.score_a, "score_b": rec.score_b, "seconds": rec.seconds,
                "loss": {**rec.loss, "objective": rec.objective, "score_b_min": rec.score_b_min,
                         "success": rec.success, "confirmed": rec.confirmed,
                         "confirm_score_a": rec.confirm_score_a,
                         "saved_score_a": rec.saved_score_a,
                         "saved_score_b": rec.saved_score_b, **{
                             f"change_{k}": v for k, v in rec.change.items()}},
            },
        )
        fields = ["iterations_done"]
        if rungs and _store_rungs(job, rungs):
            fields.append("ladder")
        job.iterations_done = max(job.iterations_done, rec.iteration)
        if state is not None:
            old = job.checkpoint.name if job.checkpoint else None
            # Same name every time: storage would add a suffix, so delete then save.
            if old:
                job.checkpoint.storage.delete(old)
            job.checkpoint.save("state", ContentFile(state), save=False)
            fields.append("checkpoint")
        job.save(update_fields=fields)


def _store_rungs(job: DeidJob, rungs) -> bool:
    """Store each rung not yet on the job as an output image of the source (one file per
    iterate: thresholds crossed together share it) and list it on the job."""
    have = {r["threshold"] for r in job.ladder}
    src = job.source
    added = False
    for rung in rungs:
        if rung.threshold in have:
            continue
        data = encode_png(rung.photo if rung.photo is not None else rung.context)
        ingest = ingest_image(
            data, subject=src.subject, kind=FaceImage.Kind.OUTPUT, parent=src,
            allow_no_face=True,
        )
        if ingest.image is None:  # refused as a file (e.g. size limits): no rung, no pair
            log.warning("job %s: rung %s not stored: %s", job.pk, rung.threshold, ingest.detail)
            continue
        job.ladder = sorted(
            [*job.ladder, {"threshold": rung.threshold, "iteration": rung.iteration,
                           "score_a": rung.score_a, "score_b": rung.score_b,
                           "image": str(ingest.image.pk)}],
            key=lambda r: -r["threshold"],
        )
        have.add(rung.threshold)
        added = True
    return added


def _must_stop(job: DeidJob) -> bool:
    """Beat; True (stop) once the job was cancelled or another attempt took it over."""
    return not _owned(job).update(heartbeat=timezone.now())


def success_basis(version) -> str:
    """What a job's verdict rests on: a proxy never trained on judgments of outputs (its
    score-A says little about people), or one trained on such judgments, people's or a
    simulated crowd's (the version records how many of its labels were simulated)."""
    if version is None or version.is_prior:
        return "prior_proxy"
    if (version.metrics or {}).get("simulated_labels"):
        return "proxy_trained_on_simulated_judgments"
    return "proxy_trained_on_peoples_judgments"


def stop_detail(stop_reason: str, detected: bool, score_b: float | None, tau_b: float,
                margin_kept: bool = True, natural_kept: bool = True) -> str:
    """Why the job stopped, in words; says when the loop met both thresholds but the saved
    photo did not confirm it, and when a disguise never reached its human-side margin."""
    if stop_reason != "success":
        why = {"converged": "the loss stopped improving",
               "max_iterations": "the iteration budget ran out",
               "single_pass": "one pass of the generator did not meet both thresholds",
               }.get(stop_reason, stop_reason)
        if not margin_kept:
            why += ("; the disguise never reached its human-side margin (the donor share), "
                    "so the output is a partial mix, not the disguise")
        if not natural_kept:
            why += ("; no iterate kept a natural face colour (a*, b* or lightness spread "
                    "outside what photographed faces show), so none could count")
        return why
    if not detected:
        return "both thresholds met in the loop; no face found again in the saved photo"
    if score_b is None or score_b < tau_b:
        return (f"both thresholds met in the loop; score-B on the saved photo "
                f"{score_b if score_b is None else round(score_b, 3)} < τB {tau_b}")
    return "both thresholds met, confirmed on the saved photo"


def _donor_for(job: DeidJob, source, cfg):
    """The job's donor (FaceImage, decoded photo): the one an earlier attempt chose, while it
    is still in the pool (a resumed job keeps its donor), else the best of the pool now:
    of the ``donor_candidates`` most natural donors, the one whose disguise keeps the
    source's identity best (``donor_identity_distances``). Remembered in
    ``final_detail["donor"]`` (an opaque id: donors carry no identity)."""
    from models_app.deid.disguise import best_donor
    from models_app.faces.selectors import choose_donors, donor_images

    chosen = (job.final_detail or {}).get("donor")
    if chosen:
        img = donor_images().filter(pk=chosen).first()
        if img is not None:
            return img, load_rgb_array(img)
    ranges = cfg.disguise()
    best = choose_donors(source.context, source.landmarks, k=ranges.donor_candidates)
    if not best:
        raise RuntimeError("the donor pool is empty (import donors with --kind donor)")
    img = best[best_donor(source.context, [c for _, c in best], ranges,
                          source.change_mask(cfg.blend))][0]
    job.final_detail = {**(job.final_detail or {}), "donor": str(img.pk)}
    DeidJob.objects.filter(pk=job.pk).update(final_detail=job.final_detail)
    return img, load_rgb_array(img)


def _finish(job: DeidJob, result, data: bytes, final, cfg, src: FaceImage, t0: float,
            extra: dict[str, Any] | None = None) -> DeidJob:
    from models_app.deid.metrics import naturalness  # torch: on the worker only

    """Store the output and complete the job in one transaction (idempotent: a job already
    finished, or taken over by another attempt, is returned untouched)."""
    claim = job.claim
    with transaction.atomic():
        job = DeidJob.objects.select_for_update().get(pk=job.pk)
        if job.status in TERMINAL or job.claim != claim:  # finished, or not ours any more
            return job
        ingest = ingest_image(
            data, subject=src.subject, kind=FaceImage.Kind.OUTPUT, parent=src,
            allow_no_face=True,
        )
        twin = DeidJob.objects.filter(output=ingest.image).exclude(pk=job.pk).first()
        success = result.stop_reason == "success" and final.detected and final.score_b >= cfg.tau_b
        # Byte-identical to another job's output (same source, parameters and seed): the
        # file is stored once, as that job's output; this job points at it in its detail.
        job.output = None if twin is not None else ingest.image
        job.stop_reason = result.stop_reason
        job.status = DeidJob.Status.SUCCEEDED if success else DeidJob.Status.FINISHED
        job.final_score_a = result.score_a
        job.final_score_b = final.score_b
        job.current_score_a = result.score_a
        job.current_proxy = job.proxy_version
        job.final_detail = {
            **(extra or {}),
            "best_iteration": result.best_iteration, "iterations": result.iterations,
            "loop_score_b": result.score_b, "detected_in_saved_file": final.detected,
            "saved_file_score_b": final.score_b,
            "saved_file_per_cfru": final.score.to_dict() if final.score is not None else None,
            "seconds": round(time.perf_counter() - t0, 3),
            "output_sha256": hashlib.sha256(data).hexdigest(),
            **({"same_output_as_job": str(twin.pk)} if twin is not None else {}),
            "naturalness": naturalness(result.context),
            "success_basis": success_basis(job.proxy_version),
            "stop_detail": stop_detail(result.stop_reason, final.detected, final.score_b,
                                       cfg.tau_b, result.margin_kept, result.natural_kept),
            "natural_kept": result.natural_kept,
            **({"margin_kept": result.margin_kept}
               if cfg.parameterisation == "disguise" else {}),
        }
        job.finished = timezone.now()
        job.save()
        if job.checkpoint:
            job.checkpoint.storage.delete(job.checkpoint.name)
            DeidJob.objects.filter(pk=job.pk).update(checkpoint="")
        send_output_to_campaign(job)
    return job


def execute_deid_job(job_id: str) -> dict[str, Any]:
    from models_app.deid import DeidSource, run_deid, score_saved_output
    from models_app.deid.score_a import HumanProxyScorer

    job = _claim(job_id)
    if job is None:
        return {"job": job_id, "skipped": True}
    if method_of(job.params) == METHOD_GENERATOR:
        return execute_generator_jobs(job)
    try:
        cfg = config_from_params(job.params)
        src = job.source
        photo = load_rgb_array(src)  # decoded once: the context crop comes from it too
        source = DeidSource(
            faces.context_crop(photo, src.box, src.landmarks), photo, tuple(src.box),
            [tuple(p) for p in src.landmarks],
        )
        extra: dict[str, Any] = {}
        if cfg.parameterisation == "disguise":
            donor, donor_photo = _donor_for(job, source, cfg)  # decoded once, used twice
            source.donor = faces.context_crop(donor_photo, donor.box, donor.landmarks)
            extra["donor"] = str(donor.pk)
            if cfg.disguise().surroundings == "donor":
                # The donor's whole photo behind the output: no rectangle of the source's
                # surroundings is left around the crop.
                source.take_donor_surroundings(donor_photo, tuple(donor.box),
                                               [tuple(q) for q in donor.landmarks])
        proxy = HumanProxyScorer(load_version_model(job.proxy_version))
        resume = _load_state(job)
        if resume is None and job.iterations_done:
            # No usable checkpoint: restart cleanly, dropping the partial trajectory.
            DeidIteration.objects.filter(job=job).delete()
            job.iterations_done = 0
            job.ladder = []  # the rungs are found again (same images: stored once)
            DeidJob.objects.filter(pk=job.pk).update(ladder=[])
        t0 = time.perf_counter()
        rungs: list = []  # handed out just before the record that crossed them

        def record(rec, cp) -> None:
            mine = [r for r in rungs if r.iteration == rec.iteration]
            rungs.clear()
            _record(job, rec, cp, mine)

        start: dict[str, Any] = {}
        if method_of(job.params) == METHOD_HYBRID:  # the loop from the generator's output
            cfg, init, extra["generator"] = _generator_start(job, cfg, source)
            if resume is None:
                start.update(init)
        result = run_deid(
            source, proxy, cfg, resume=resume, on_rung=rungs.append,
            on_iteration=record,
            should_stop=lambda: _must_stop(job), **start,
        )
    except Exception as exc:
        _owned(job).update(
            status=DeidJob.Status.FAILED, error=f"{type(exc).__name__}: {exc}",
            finished=timezone.now(),
        )
        raise
    if result.stop_reason == "cancelled":  # cancelled, or another attempt took over
        DeidJob.objects.filter(pk=job.pk, status=DeidJob.Status.CANCELLED).update(
            finished=timezone.now()
        )
        status = DeidJob.objects.filter(pk=job.pk).values_list("status", flat=True).first()
        return {"job": str(job.pk), "status": status}

    try:
        from models_app.deid.composite import seam_figure

        data = encode_png(result.photo if result.photo is not None else result.context)
        final = score_saved_output(source.chip, data, tau_b=cfg.tau_b)
        if result.photo is not None:
            # What the blend leaves in the saved photo (the crop border and the blend's edge).
            # With the donor's surroundings, against the donor's photo it was set into.
            extra["seam"] = seam_figure(source.reference_photo, result.photo, src.box,
                                        src.landmarks, blend=cfg.blend)
        job = _finish(job, result, data, final, cfg, src, t0, extra)
    except Exception as exc:
        # Not left ``running``: the sweeper would re-queue it forever.
        _owned(job).update(status=DeidJob.Status.FAILED, error=f"{type(exc).__name__}: {exc}",
                           finished=timezone.now())
        raise
    return {"job": str(job.pk), "status": job.status, "stop_reason": job.stop_reason,
            "score_a": job.final_score_a, "score_b": job.final_score_b}


# --- The generator (issue 16): one pass per face, batched over a batch's jobs ------------------

# Jobs of one batch that one generator pass takes together (one message runs them all; the
# others' deliveries then find their jobs finished or owned, and are dropped).
GENERATOR_BATCH = 32


def _generator_of(job: DeidJob):
    """(network, version) of the generator the job was created with."""
    from models_app.training.models import ModelKind, ModelVersion
    from models_app.training.selectors import load_generator_version

    version = ModelVersion.objects.get(pk=job.params["generator_version"],
                                       kind=ModelKind.GENERATOR)
    return load_generator_version(version), version


def _generator_start(job: DeidJob, cfg, source):
    """The hybrid's start: (config with the generator's plug, the loop's start kwargs,
    detail). A resumed job's checkpoint carries its base, so the start is used only anew."""
    from models_app.device import get_device
    from models_app.generator.apply import HYBRID_OUTPUT, config_for, hybrid_start_kwargs

    model, version = _generator_of(job)
    cfg = config_for(model, cfg)
    start = hybrid_start_kwargs(model, [source], cfg, get_device(), HYBRID_OUTPUT)
    return cfg, start, {"version": version.number, "method": "hybrid", "start": HYBRID_OUTPUT}


def _batch_mates(job: DeidJob) -> list[DeidJob]:
    """The job and, in a batch, its other queued generator jobs with the same parameters
    and proxy, claimed for this attempt (a pass over many faces at once)."""
    jobs = [job]
    if job.batch_id is None:
        return jobs
    mates = DeidJob.objects.filter(
        batch_id=job.batch_id, status=DeidJob.Status.QUEUED, params=job.params,
        proxy_version_id=job.proxy_version_id,
    ).exclude(pk=job.pk).order_by("created", "pk").values_list("pk", flat=True)
    for pk in mates[: GENERATOR_BATCH - 1]:
        other = _claim(str(pk))
        if other is not None:
            jobs.append(other)
    return jobs


def execute_generator_jobs(job: DeidJob) -> dict[str, Any]:
    """``method=generator``: one forward pass of the promoted generator per face, scored as
    the loop scores (record 0 of the loop: score-A by the proxy, score-B over EOT chips, a
    success confirmed on the saved photo), then score-B on the saved file after fresh
    detection, as every job. In a batch, the batch's queued jobs go through one pass."""
    from models_app.deid import DeidSource, score_saved_output
    from models_app.deid.score_a import HumanProxyScorer
    from models_app.generator import run_generator

    if _must_stop(job):  # cancelled since it was claimed
        return {"job": str(job.pk), "status": "cancelled"}
    jobs = _batch_mates(job)
    try:
        cfg = config_from_params(job.params)
        model, version = _generator_of(job)
        srcs, photos, sources = [], [], []
        for j in jobs:
            src = j.source
            photo = load_rgb_array(src)
            srcs.append(src)
            photos.append(photo)
            sources.append(DeidSource(
                faces.context_crop(photo, src.box, src.landmarks), photo, tuple(src.box),
                [tuple(p) for p in src.landmarks],
            ))
        proxy = HumanProxyScorer(load_version_model(job.proxy_version))
        t0 = time.perf_counter()
        results = run_generator(
            model, sources, proxy, cfg,
            on_iteration=lambda rec, cp: _record(jobs[rec.face], rec, cp),
        )
        out = []
        for j, src, source, result in zip(jobs, srcs, sources, results, strict=True):
            data = encode_png(result.photo if result.photo is not None else result.context)
            final = score_saved_output(source.chip, data, tau_b=cfg.tau_b)
            extra = {"generator": {"version": version.number, "method": "generator",
                                   "batched_faces": len(jobs)}}
            done = _finish(j, result, data, final, cfg, src, t0, extra)
            out.append({"job": str(done.pk), "status": done.status})
    except Exception as exc:
        for j in jobs:
            _owned(j).update(status=DeidJob.Status.FAILED, error=f"{type(exc).__name__}: {exc}",
                             finished=timezone.now())
        raise
    first = out[0]
    return {**first, "batched": out[1:]}
