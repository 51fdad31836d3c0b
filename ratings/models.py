"""People's judgments: campaigns, pairs, raters, assignments, judgments and aggregated labels.

Raters only ever see ``Assignment.public_id`` (a random UUID) and signed image tokens; every
other id here is for operators.
"""

from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


def _completion_code() -> str:
    return secrets.token_hex(4).upper()


def _link_secret() -> str:
    return secrets.token_urlsafe(32)


# External ids of simulated raters (ratings/simulation) start with this; real crowd ids
# (Prolific: 24 hex digits, MTurk: upper-case alphanumerics) never contain a hyphen.
SIMULATED_ID_PREFIX = "SIM-"


class Campaign(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "draft"
        ACTIVE = "active", "active"
        PAUSED = "paused", "paused"
        CLOSED = "closed", "closed"

    class RaterImage(models.TextChoices):
        PHOTO = "photo", "full photo"
        CONTEXT = "context", "context crop"
        CHIP = "chip", "aligned chip"

    name = models.CharField(max_length=200)
    # Public handle used in rater links (/rate/<slug>/); says nothing about any person.
    slug = models.SlugField(max_length=64, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    instructions = models.TextField(blank=True, default="")
    consent_text = models.TextField(blank=True, default="")
    judgments_per_pair = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="k: counted judgments wanted per de-identification pair.",
    )
    gold_rate = models.FloatField(
        default=0.1, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of gold pairs mixed in after qualification.",
    )
    attention_rate = models.FloatField(
        default=0.05, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of attention checks mixed in after qualification.",
    )
    qualification_size = models.PositiveSmallIntegerField(
        default=4, help_text="Gold pairs judged before any real work; 0 disables qualification."
    )
    pass_mark = models.FloatField(
        default=0.75, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Minimum gold accuracy, in qualification and afterwards.",
    )
    attention_failures_allowed = models.PositiveSmallIntegerField(default=0)
    min_response_ms = models.PositiveIntegerField(
        default=700, help_text="Faster responses are flagged as too fast (QC, reliability, "
        "and a gentle warning on the rater's page)."
    )
    min_work_pairs = models.PositiveSmallIntegerField(
        default=10, validators=[MaxValueValidator(10_000)],
        help_text="Real (de-identification) pairs a rater must judge before the completion "
        "code; gold pairs and attention checks do not count. Capped at the campaign's "
        "active pairs.",
    )
    hold_timeout_s = models.PositiveIntegerField(
        default=300, validators=[MinValueValidator(5)],
        help_text="An assignment not judged within this time is reclaimed.",
    )
    rater_quota = models.PositiveIntegerField(
        default=0, help_text="Judgments after which a rater is done (0: until no work is left)."
    )
    completion_code = models.CharField(max_length=64, blank=True, default=_completion_code)
    completion_url = models.URLField(
        blank=True, default="", help_text="Where external raters are sent when done."
    )
    # Prolific's convention for participants who may not finish (declined consent, failed
    # checks): a screen-out code and/or the platform's return URL, instead of a dead end.
    screenout_code = models.CharField(
        max_length=64, blank=True, default="",
        help_text="Shown to a participant who declines consent or is screened out by QC.",
    )
    return_url = models.URLField(
        blank=True, default="",
        help_text="Where a declining or screened-out participant is sent (study platform).",
    )
    # Entry checks for external raters (ratings/README "Rater entry links").
    external_study_id = models.CharField(
        max_length=128, blank=True, default="",
        help_text="When set, an entry link's STUDY_ID must equal it (Prolific).",
    )
    require_signed_links = models.BooleanField(
        default=False, help_text="Refuse entry links without a valid sig (HMAC of slug and id)."
    )
    entry_link_secret = models.CharField(
        max_length=128, blank=True, default=_link_secret,
        help_text="Key of the entry links' HMAC signature; share it with the crowd platform only.",
    )
    # Dry runs with a simulated crowd (ratings/simulation). Off by default: only then may an
    # entry id with SIMULATED_ID_PREFIX become a simulated rater, and only labels_include_
    # simulated lets such judgments into the labels.
    allows_simulation = models.BooleanField(
        default=False,
        help_text=f"Entry ids starting with {SIMULATED_ID_PREFIX!r} become simulated raters.",
    )
    labels_include_simulated = models.BooleanField(
        default=False, help_text="Labels count simulated raters' judgments too (dry runs)."
    )
    rater_image = models.CharField(
        max_length=8, choices=RaterImage.choices, default=RaterImage.PHOTO,
        help_text="What raters see of each face: the full photo, the aligned context crop "
        "(face, hair and surroundings), or the aligned recognition chip.",
    )
    krippendorff_alpha = models.FloatField(null=True, blank=True)
    labels_pending = models.BooleanField(
        default=False, help_text="Set when judgments arrived after the last label update."
    )
    labels_updated = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created"]

    def active_text_errors(self) -> dict[str, str]:
        """An active campaign shows raters its instructions and asks their consent: neither
        may be empty then (field -> reason)."""
        if self.status != self.Status.ACTIVE:
            return {}
        return {f: "must not be empty while the campaign is active"
                for f in ("instructions", "consent_text") if not getattr(self, f).strip()}

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        super().clean()
        if errors := self.active_text_errors():
            raise ValidationError(errors)

    def __str__(self) -> str:
        return self.name


class Pair(models.Model):
    class Kind(models.TextChoices):
        DEID = "deid", "de-identification"
        GOLD_SAME = "gold_same", "gold: same person"
        GOLD_DIFFERENT = "gold_different", "gold: different people"
        ATTENTION = "attention", "attention check"

    GOLD_KINDS = (Kind.GOLD_SAME, Kind.GOLD_DIFFERENT)
    KNOWN_KINDS = (Kind.GOLD_SAME, Kind.GOLD_DIFFERENT, Kind.ATTENTION)

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="pairs")
    image_a = models.ForeignKey(
        "models_app.FaceImage", on_delete=models.PROTECT, related_name="+"
    )
    image_b = models.ForeignKey(
        "models_app.FaceImage", on_delete=models.PROTECT, related_name="+"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.DEID)
    expected_same = models.BooleanField(
        null=True, blank=True, help_text="The known answer for gold and attention pairs."
    )
    # The DeidJob lives in models_app and is not built yet; keep its id as a soft reference.
    deid_job_id = models.UUIDField(null=True, blank=True, db_index=True)
    active = models.BooleanField(default=True)
    # Live holds + counted judgments (deid pairs); changed only under this row's lock.
    taken = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # Serves the next-pair query (taken < k, fullest first, then id) as an index
            # scan that stops at the first unlocked row, instead of sorting every candidate.
            models.Index(fields=["campaign", "kind", "-taken", "id"], name="ratings_pair_next_idx",
                         condition=Q(active=True)),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="deid") | Q(expected_same__isnull=False),
                name="ratings_pair_known_has_answer",
            ),
            models.CheckConstraint(
                condition=~Q(image_a=models.F("image_b")) | Q(kind="attention"),
                name="ratings_pair_distinct_images",
            ),
        ]

    def __str__(self) -> str:
        return f"Pair {self.pk} ({self.kind})"


class Rater(models.Model):
    """One person in one campaign: a Django user or an external participant id."""

    class Source(models.TextChoices):
        LOCAL = "local", "local account"
        PROLIFIC = "prolific", "Prolific"
        MTURK = "mturk", "Mechanical Turk"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="raters")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
        related_name="rater_profiles",
    )
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.LOCAL)
    external_id = models.CharField(max_length=128, blank=True, default="")
    external_meta = models.JSONField(default=dict, blank=True)
    consented_at = models.DateTimeField(null=True, blank=True)
    # When the rater was shown the completion code: from then on they are done for good
    # (coming back to the link shows the same code, not more pairs).
    finished_at = models.DateTimeField(null=True, blank=True)
    # Declined the consent text: screened out for good (screen-out code / return URL).
    declined_at = models.DateTimeField(null=True, blank=True)
    qualified = models.BooleanField(default=False)
    blocked = models.BooleanField(default=False)
    blocked_reason = models.CharField(max_length=32, blank=True, default="")
    blocked_at = models.DateTimeField(null=True, blank=True)
    reliability = models.FloatField(null=True, blank=True)
    slots_released = models.BooleanField(
        default=False, help_text="Blocked and its deid judgments no longer hold pair slots."
    )
    # Running QC counters, updated under the rater's row lock at each submission.
    judgments_count = models.PositiveIntegerField(default=0)
    gold_count = models.PositiveIntegerField(default=0)
    gold_correct = models.PositiveIntegerField(default=0)
    attention_count = models.PositiveIntegerField(default=0)
    attention_failed = models.PositiveIntegerField(default=0)
    too_fast_count = models.PositiveIntegerField(default=0)
    # SHA-256 (hex) of the secret in the browser's binding cookie at first entry: only that
    # browser may act as this external participant (ratings/binding.py).
    binding_hash = models.CharField(max_length=64, blank=True, default="")
    # Set by the server at creation (save below), never from a request field: a simulated
    # crowd's rater, whose judgments stay out of labels unless the campaign asks otherwise.
    simulated = models.BooleanField(default=False, editable=False)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["campaign", "binding_hash"], name="ratings_rater_binding_idx",
                         condition=~Q(binding_hash="")),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "user"], name="ratings_rater_one_per_user",
                condition=Q(user__isnull=False),
            ),
            models.UniqueConstraint(
                fields=["campaign", "source", "external_id"], name="ratings_rater_one_per_external",
                condition=~Q(external_id=""),
            ),
            models.CheckConstraint(
                condition=Q(user__isnull=False) | ~Q(external_id=""),
                name="ratings_rater_has_identity",
            ),
        ]

    def __str__(self) -> str:
        return f"Rater {self.public_id}"

    def save(self, *args, **kwargs) -> None:
        # Decided once, at creation, by the server: an external id with the simulation prefix
        # in a campaign that allows simulation. A person cannot make their judgments count
        # as someone else's this way; at worst a SIM- id excludes its own from the labels.
        if self._state.adding and not self.simulated and self.user_id is None:
            self.simulated = self.external_id.startswith(SIMULATED_ID_PREFIX) and (
                Campaign.objects.filter(pk=self.campaign_id, allows_simulation=True).exists()
            )
        super().save(*args, **kwargs)

    @property
    def work_count(self) -> int:
        """Real (de-identification) pairs judged: every judgment but gold and attention."""
        return self.judgments_count - self.gold_count - self.attention_count

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_count if self.gold_count else None


class Assignment(models.Model):
    class State(models.TextChoices):
        ISSUED = "issued", "issued"
        SUBMITTED = "submitted", "submitted"
        EXPIRED = "expired", "expired"

    class Phase(models.TextChoices):
        QUALIFICATION = "qualification", "qualification"
        WORK = "work", "work"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="assignments")
    rater = models.ForeignKey(Rater, on_delete=models.CASCADE, related_name="assignments")
    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="assignments")
    phase = models.CharField(max_length=16, choices=Phase.choices, default=Phase.WORK)
    state = models.CharField(max_length=10, choices=State.choices, default=State.ISSUED)
    left_is_a = models.BooleanField(default=True)
    issued = models.DateTimeField()
    expires = models.DateTimeField()
    closed = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["campaign", "expires"], name="ratings_asg_live_idx",
                         condition=Q(state="issued")),
            models.Index(fields=["rater", "state"], name="ratings_asg_rater_idx"),
        ]
        constraints = [
            # The database itself refuses a rater twice on a pair (expired holds do not count).
            models.UniqueConstraint(
                fields=["rater", "pair"], name="ratings_asg_once_per_rater",
                condition=~Q(state="expired"),
            ),
        ]

    def __str__(self) -> str:
        return f"Assignment {self.public_id}"


class Judgment(models.Model):
    # One per assignment: a retried submission finds this row instead of making a second one.
    assignment = models.OneToOneField(
        Assignment, on_delete=models.CASCADE, related_name="judgment"
    )
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="judgments")
    rater = models.ForeignKey(Rater, on_delete=models.CASCADE, related_name="judgments")
    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="judgments")
    same = models.BooleanField()
    confidence = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(4)]
    )
    response_ms = models.PositiveIntegerField()
    left_image = models.ForeignKey(
        "models_app.FaceImage", on_delete=models.PROTECT, related_name="+",
        help_text="The image shown on the left.",
    )
    correct = models.BooleanField(null=True, blank=True, help_text="For gold and attention pairs.")
    too_fast = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["campaign", "pair"], name="ratings_jdg_pair_idx")]
        constraints = [
            models.CheckConstraint(
                condition=Q(confidence__gte=1) & Q(confidence__lte=4),
                name="ratings_judgment_confidence_1_4",
            ),
        ]

    def __str__(self) -> str:
        return f"Judgment {self.pk}"


class PairLabel(models.Model):
    """The aggregated human score-A of a pair: P(a person says "same person")."""

    class Method(models.TextChoices):
        DAWID_SKENE = "dawid_skene", "Dawid-Skene"
        MAJORITY_VOTE = "majority_vote", "majority vote"

    pair = models.OneToOneField(Pair, on_delete=models.CASCADE, related_name="label")
    score_a = models.FloatField()
    same = models.BooleanField()
    n_judgments = models.PositiveIntegerField()
    method = models.CharField(max_length=16, choices=Method.choices)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pair_id"]

    def __str__(self) -> str:
        return f"PairLabel {self.pair_id}: {self.score_a:.3f}"
