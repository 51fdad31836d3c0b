"""Re-scoring: score-A of every finished job's output with a newly promoted human proxy.

The loop's own score stays in ``final_score_a``; ``current_score_a`` follows the promoted
proxy. Queued by ``jobs.receivers`` when the registry announces a promotion.
"""

from __future__ import annotations

from typing import Any

from models_app.faces.selectors import context_of
from models_app.training.models import ModelKind, ModelVersion
from models_app.training.selectors import load_version_model

from .models import DeidJob


def rescore_outputs(version_id: str) -> dict[str, Any]:
    """Score-A of every finished job's output with the promoted proxy ``version_id``."""
    import torch  # the network runs on the gpu worker only

    from models_app.deid.score_a import HumanProxyScorer
    from models_app.proxy.data import context_to_tensor

    version = ModelVersion.objects.get(pk=version_id)
    if version.kind != ModelKind.HUMAN_PROXY:  # score-A comes from human proxies only
        return {"version": version_id, "skipped": "not a human proxy"}
    if version.status != ModelVersion.Status.PROMOTED:
        return {"version": version_id, "skipped": "not promoted any more"}
    scorer = HumanProxyScorer(load_version_model(version))
    jobs = DeidJob.objects.filter(
        status__in=[DeidJob.Status.SUCCEEDED, DeidJob.Status.FINISHED], output__isnull=False,
        output__landmarks__isnull=False,
    ).exclude(current_proxy=version).select_related("source", "output")
    n = 0
    for job in jobs.iterator(chunk_size=64):
        with torch.no_grad():
            p = scorer(context_to_tensor(context_of(job.source))[None],
                       context_to_tensor(context_of(job.output))[None])
        DeidJob.objects.filter(pk=job.pk).update(current_score_a=float(p[0]), current_proxy=version)
        n += 1
    return {"version": version_id, "rescored": n}
