"""The human proxy (score-A): a siamese network that predicts P(a person says "same").

Pure computation (tensors, numpy, files); no Django import anywhere in this package, so the
Django side (training runs, model registry, Celery tasks) is a thin layer on top of it.

* :mod:`.network` — :class:`~.network.HumanProxy` (identity branch on the frozen dlib-torch
  CFRU, trainable appearance branch, fused calibrated head);
* :mod:`.appearance` — the appearance branch's encoder (small CNN + colour descriptors);
* :mod:`.config` — :class:`~.config.ProxyConfig` (architecture) and
  :class:`~.config.ProxyMeta` (registry facts), the JSON stored with the weights;
* :mod:`.calibration` — Platt scaling of the logits;
* :mod:`.data` — pair sets (:class:`~.data.LabelledPair`: LFW natural pairs, human-labelled
  pairs), subject-disjoint splits, per-image inputs (:class:`~.data.ImageBank`);
* :mod:`.train` — :func:`~.train.train_proxy` with the stop rules of claims 7, 9 and 10;
* :mod:`.augment` — known-same training pairs from the perceptual battery's invariance set;
* :mod:`.metrics` — AUC, accuracy, Brier, ECE, reliability diagram, human ceiling;
* :mod:`.io` — safetensors + JSON save/load that never unpickles.
"""

from __future__ import annotations


class ProxyError(ValueError):
    """A clear, user-facing error of the human proxy: bad training data or a bad model file.

    Subclasses say which; the Django side can catch this one class and record ``str(exc)``.
    """


class TooFewPairsError(ProxyError):
    """No labelled pairs, or fewer than the training run needs."""


class SingleSubjectError(ProxyError):
    """All pairs come from one subject, so no subject-disjoint split exists."""


class CorruptModelError(ProxyError):
    """A model file that is missing, damaged, or not a human-proxy file."""


__all__ = ["ProxyError", "TooFewPairsError", "SingleSubjectError", "CorruptModelError"]
