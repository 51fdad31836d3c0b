"""What the training domain announces. Other domains subscribe; the registry imports none
of them (the jobs domain re-scores its outputs on ``model_promoted``)."""

from __future__ import annotations

from django.dispatch import Signal

# Sent once the transaction that promoted a version (promotion or rollback) has committed.
# Arguments: ``version`` (the ModelVersion now promoted).
model_promoted = Signal()
