"""Error codes of the de-identification jobs domain, each with its one HTTP status."""

from __future__ import annotations

from deidplatform.errors import error_code

IMAGE_REJECTED = error_code("image_rejected", 400)
NOT_A_SOURCE = error_code("not_a_source", 400)
NO_IMAGES = error_code("no_images", 400)
CAMPAIGN_CLOSED = error_code("campaign_closed", 400)
NO_PROMOTED_PROXY = error_code("no_promoted_proxy", 409)
NO_PROMOTED_GENERATOR = error_code("no_promoted_generator", 409)
NOT_CANCELLABLE = error_code("not_cancellable", 409)
NO_DONORS = error_code("no_donors", 409)
