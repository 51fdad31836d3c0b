"""The perceptual battery for proxy versions (:mod:`models_app.vision.battery`): run on the
held-out subjects' photos, stored with the version, read by the promotion gate.

The gate refuses a version that breaks the invariance set (changes people ignore) beyond
its tolerance, naming the items; the effect set is reported, not gated (a prior proxy reads
identity and cannot pass the illusion item yet). Operators can force a promotion.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from models_app.faces.selectors import contexts
from models_app.vision.battery import BatteryCase, run_battery

from .models import ModelVersion
from .selectors import battery_images, load_version_model


def _cases(n_faces: int | None) -> list[BatteryCase]:
    triples = battery_images(n_faces or int(settings.DEID_BATTERY_FACES))
    if not triples:
        return []
    unique = {str(img.pk): img for t in triples for img in t}
    keys, ctx = contexts(unique.values())
    at = {k: i for i, k in enumerate(keys)}
    return [BatteryCase(*(ctx[at[str(img.pk)]] for img in t)) for t in triples]


def _run(judge: Any, n_faces: int | None) -> dict | None:
    cases = _cases(n_faces)
    if not cases:
        return None
    return run_battery(judge, cases, tolerance=float(settings.DEID_BATTERY_TOLERANCE))


def battery_for_model(model: Any, n_faces: int | None = None) -> dict | None:
    """The battery's result for a HumanProxy on up to ``n_faces`` held-out subjects
    (``DEID_BATTERY_FACES``); None when fewer than two such subjects exist."""
    from models_app.proxy.judge import proxy_judge

    return _run(proxy_judge(model), n_faces)


def battery_for_observer(path: str, n_faces: int | None = None) -> dict | None:
    """The battery's result for a simulated observer (a short name or a dotted path) on the
    same faces as the versions'. ObserverError when the path cannot be loaded."""
    from ratings.observers import load_observer, observer_judge

    return _run(observer_judge(load_observer(path)), n_faces)


def battery_reasons(result: dict | None) -> list[str]:
    """The gate's reasons against a battery result: each invariance item broken."""
    if not result or result.get("invariance_passed", True):
        return []
    broken = [
        f"{name} (mean |ΔP(same)| {item['mean_abs_change']:.3f} > {result['tolerance']:.2f})"
        for name, item in result["invariance"].items() if not item["passed"]
    ]
    return ["perceptual battery: invariance broken by " + ", ".join(broken)]


def rerun_battery(version: ModelVersion, n_faces: int | None = None) -> dict | None:
    """Run the battery again for a stored version (new faces, a changed battery) and store
    it. The gate's past decision stands; a promotion after this reads the new result."""
    result = battery_for_model(load_version_model(version), n_faces)
    ModelVersion.objects.filter(pk=version.pk).update(battery=result or {})
    version.battery = result or {}
    return result
