"""Settings: every value comes from the environment, with embedded defaults for one-command runs.

Embedded defaults: a SQLite file and kombu's filesystem broker under ``DEID_DATA_DIR``.
Production: set ``DATABASE_URL`` (PostgreSQL) and ``CELERY_BROKER_URL`` (Redis or RabbitMQ).
"""

from __future__ import annotations

import os
import warnings
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

# face_recognition_models (dlib's weights) imports pkg_resources, which warns on every
# process start; setuptools is pinned below 81, where it still exists.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [x.strip() for x in raw.split(",") if x.strip()]


DATA_DIR = Path(os.environ.get("DEID_DATA_DIR", BASE_DIR / "var")).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "insecure-dev-only-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "models_app",
    "ratings",
    "deidplatform.dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "deidplatform.urls"
WSGI_APPLICATION = "deidplatform.wsgi.application"
ASGI_APPLICATION = "deidplatform.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file (not :memory:) so that a worker process can see the test database too.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}
    DATABASES["default"]["OPTIONS"] = {"timeout": 30}
    DATABASES["default"]["CONN_MAX_AGE"] = 0

# A ceiling on every SQL statement (PostgreSQL, milliseconds; 0: none). Set it for web
# processes (e.g. 15000) so a stuck query answers a clean 503 instead of holding a worker
# thread; leave workers without it (training reads large snapshots).
DB_STATEMENT_TIMEOUT_MS = env_int("DB_STATEMENT_TIMEOUT_MS", 0)
if DB_STATEMENT_TIMEOUT_MS > 0 and DATABASES["default"]["ENGINE"].endswith("postgresql"):
    _db_options = DATABASES["default"].setdefault("OPTIONS", {})
    _db_options["options"] = (
        f"{_db_options.get('options', '')} -c statement_timeout={DB_STATEMENT_TIMEOUT_MS}"
    ).strip()

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", DATA_DIR / "static"))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    # Face images are biometric data: the default storage has no public URL at all.
    "default": {
        "BACKEND": "models_app.faces.storage.PrivateStorage",
    },
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage",
    },
}
PRIVATE_MEDIA_ROOT = Path(os.environ.get("PRIVATE_MEDIA_ROOT", DATA_DIR / "private-media"))
MEDIA_ROOT = PRIVATE_MEDIA_ROOT  # never served by URL; see models_app.faces.views.serve_face_image
MEDIA_URL = None
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 5 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = env_int("FILE_UPLOAD_MAX_MEMORY_SIZE", 5 * 1024 * 1024)
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700

# Sessions. Every rater API call reads the session (one SQL query per request with the
# database engine: a measurable share of the rater hot path, see BENCHMARKS.md, issue 4).
# With SESSION_CACHE_URL (Redis) sessions are read from that shared cache and written
# through to the database ("cached_db"): no SQL per request, and the database stays the
# record, so logout and key rotation still revoke a session in every worker. Without a
# shared cache (the embedded default) plain database sessions: a per-process cache would
# keep serving a revoked session in the other workers. SESSION_ENGINE overrides either.
SESSION_CACHE_URL = os.environ.get("SESSION_CACHE_URL", "")
if SESSION_CACHE_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},  # as before
        "sessions": {"BACKEND": "ratings.cache.RedisCache",  # Django's, client reused
                     "LOCATION": SESSION_CACHE_URL, "KEY_PREFIX": "deid-sessions"},
    }
    SESSION_CACHE_ALIAS = "sessions"
SESSION_ENGINE = os.environ.get("SESSION_ENGINE") or (
    "django.contrib.sessions.backends.cached_db"
    if SESSION_CACHE_URL
    else "django.contrib.sessions.backends.db"
)
SESSION_COOKIE_HTTPONLY = True
# The rater hot path: on PostgreSQL, "next" and "submit" run as one SQL function
# (ratings/sql/); off, or on another database, the Python reference path in ratings/services.
RATINGS_HOT_PATH = env_bool("RATINGS_HOT_PATH", True)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
LOGIN_URL = "/admin/login/"

# --- Ingest ---------------------------------------------------------------------------
DEID_MAX_UPLOAD_BYTES = env_int("DEID_MAX_UPLOAD_BYTES", 20 * 1024 * 1024)
DEID_MAX_IMAGE_PIXELS = env_int("DEID_MAX_IMAGE_PIXELS", 40_000_000)
# "flag": keep the most central face and mark the image; "reject": refuse the image.
DEID_MULTI_FACE_POLICY = os.environ.get("DEID_MULTI_FACE_POLICY", "flag")
DEID_DETECT_UPSAMPLE = tuple(int(x) for x in env_list("DEID_DETECT_UPSAMPLE", ["0", "1"]))
# When HOG finds no face, try dlib's CNN detector once (slow, so only as a fallback).
DEID_DETECT_CNN_FALLBACK = env_bool("DEID_DETECT_CNN_FALLBACK", True)
# Smaller images are refused (400 too_small): they cannot hold a face HOG can find.
DEID_MIN_IMAGE_SIDE = env_int("DEID_MIN_IMAGE_SIDE", 40)
# Detector work bound: pixels each pass sees after upsampling (bigger images are searched
# on a downscaled copy), and seconds after which no further pass starts (422).
DEID_DETECT_MAX_PIXELS = env_int("DEID_DETECT_MAX_PIXELS", 8_000_000)
DEID_DETECT_CNN_MAX_PIXELS = env_int("DEID_DETECT_CNN_MAX_PIXELS", 250_000)
DEID_DETECT_TIME_BUDGET_S = float(os.environ.get("DEID_DETECT_TIME_BUDGET_S", "30"))

# --- REST framework --------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # First: it picks the challenge, so a failed basic-auth login is a 401 with
        # WWW-Authenticate while a browser session keeps its 403.
        "deidplatform.permissions.ApiSessionAuthentication",
        "deidplatform.permissions.ApiBasicAuthentication",
    ],
    # Staff *and* the model permission of the action (deidplatform/permissions.py).
    "DEFAULT_PERMISSION_CLASSES": ["deidplatform.permissions.RolePermission"],
    "EXCEPTION_HANDLER": "deidplatform.api.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "deidplatform API",
    "DESCRIPTION": "Face de-identification with people in the loop.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's files from drf-spectacular-sidecar (pinned, served as static files):
    # the docs load with no network, unlike the default CDN's unpinned @latest.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Every operation documents its error answers (deidplatform/schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "deidplatform.schema.add_error_responses",
    ],
}

# --- Celery ------------------------------------------------------------------------------
_BROKER_DIR = DATA_DIR / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "filesystem://"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (_BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        "store_processed": False,
        "control_folder": str(_BROKER_DIR / "control"),
    }
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or (
    CELERY_BROKER_URL
    if CELERY_BROKER_URL.startswith("redis")
    else f"db+sqlite:///{DATA_DIR / 'celery-results.sqlite3'}"
)
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# A dead broker must cost a request well under a second, not ~20 s (issue 12): few, short
# publish retries, a short connect timeout, and few result-backend reconnects (the web
# process subscribes to results when it sends). Unsent work stays ``queued`` for the sweeper.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.2,
}
CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = 2
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {
    "retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.2,
                     "interval_max": 0.2},
}
CELERY_BROKER_PROBE_TIMEOUT_S = 1.0  # deidplatform.celery.broker_reachable
if CELERY_BROKER_URL.startswith(("redis", "rediss")):
    # Redelivery of an unacknowledged message (its worker died) after this long. Recovery
    # does not wait for it: the sweeper re-sends work whose heartbeat went stale within
    # minutes, and a redelivered duplicate is refused by the job's claim, so this only backs
    # up the other tasks (ingest, labels) and may be shorter than a training run.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 900),
        "socket_connect_timeout": 2,
    }
# The sweeper (models_app.tasks.sweep_stale_work, every minute by beat): re-sends work never
# handed to the broker, work whose worker stopped beating, and stuck label updates.
DEID_DISPATCH_GRACE_S = env_int("DEID_DISPATCH_GRACE_S", 30)  # unsent queued row: re-send after
DEID_REDISPATCH_S = env_int("DEID_REDISPATCH_S", 3600)  # sent but still queued: lost message?
# Running but silent this long: re-queue. Longer than the longest gap between beats (one
# loop iteration, one epoch, encoding a training run's images).
DEID_HEARTBEAT_STALE_S = env_int("DEID_HEARTBEAT_STALE_S", 300)
DEID_LABELS_STALE_S = env_int("DEID_LABELS_STALE_S", 300)  # labels_pending this long: re-queue
DEID_JOB_MAX_ATTEMPTS = env_int("DEID_JOB_MAX_ATTEMPTS", 3)  # then the job fails for good
# Closed-loop rounds (models_app.rounds): an advancer's lease on a round; a killed advancer's
# round is resumed by the next one (beat: every minute) once this lapses. A stage renews it.
DEID_ROUND_LEASE_S = env_int("DEID_ROUND_LEASE_S", 600)
# The perceptual battery every proxy version gets (models_app.training.battery): held-out
# faces, the invariance tolerance, and whether a broken invariance item fails the gate.
DEID_BATTERY_FACES = env_int("DEID_BATTERY_FACES", 50)
DEID_BATTERY_TOLERANCE = float(os.environ.get("DEID_BATTERY_TOLERANCE", "0.05"))
DEID_BATTERY_GATE = env_bool("DEID_BATTERY_GATE", True)
# A promoted human proxy queues a retraining of the promoted generator (issue 16).
DEID_GENERATOR_FOLLOWS_PROXY = env_bool("DEID_GENERATOR_FOLLOWS_PROXY", True)
# Fewer held-out pairs than this: the version's metrics and gate carry a warning.
DEID_MIN_HELD_OUT_PAIRS = env_int("DEID_MIN_HELD_OUT_PAIRS", 200)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}

# --- Ratings ----------------------------------------------------------------------------
# Lifetime of the signed image URLs shown to raters (seconds); holds last longer, and a
# page asks for fresh URLs with each next-assignment call.
RATINGS_IMAGE_URL_MAX_AGE = env_int("RATINGS_IMAGE_URL_MAX_AGE", 300)
# FaceImage.Kind and Pair.Kind are both "kind": give the pair's enum its own schema name.
# Likewise every other "kind" and "status" that shares a name (a collision is a warning in
# every schema build otherwise).
SPECTACULAR_SETTINGS.setdefault("ENUM_NAME_OVERRIDES", {}).update({
    "PairKindEnum": "ratings.models.Pair.Kind",
    "ModelKindEnum": "models_app.training.models.ModelKind",
    "DeidJobStatusEnum": "models_app.jobs.models.DeidJob.Status",
})

# Rater binding (ratings/binding.py): the browser of a participant's first entry keeps a
# signed, HttpOnly cookie; only that browser may act as that participant afterwards.
RATINGS_BINDING_COOKIE = os.environ.get("RATINGS_BINDING_COOKIE", "deid_rater_binding")
RATINGS_BINDING_MAX_AGE = env_int("RATINGS_BINDING_MAX_AGE", 180 * 24 * 3600)

# --- Rate limits -------------------------------------------------------------------------
# Fixed windows counted in the "ratelimit" cache: Redis when RATE_LIMIT_CACHE_URL (or
# SESSION_CACHE_URL) is set, shared by every worker; else this process's memory (the
# embedded default: limits then count per web process). Each limit is "COUNT/SECONDS";
# "0/1" switches one off. Blocked requests get 429 with Retry-After (JSON on the API, a
# page on the rater pages). ratings/throttle.py; README "Rate limits".


def env_rate(name: str, default: str) -> tuple[int, int]:
    count, _, seconds = (os.environ.get(name) or default).partition("/")
    return int(count), int(seconds or 60)


RATE_LIMIT_CACHE_URL = os.environ.get("RATE_LIMIT_CACHE_URL", SESSION_CACHE_URL)
CACHES = globals().get("CACHES") or {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}
CACHES["ratelimit"] = (
    {"BACKEND": "ratings.cache.RedisCache", "LOCATION": RATE_LIMIT_CACHE_URL,
     "KEY_PREFIX": "deid-rl"}
    if RATE_LIMIT_CACHE_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "deid-rl"}
)
RATE_LIMIT_CACHE = "ratelimit"
# Entry links (/rate/<slug>/?PROLIFIC_PID=...) per client IP: new or returning raters.
RATE_LIMIT_ENTRY_PER_IP = env_rate("RATE_LIMIT_ENTRY_PER_IP", "30/60")
# Rater "next" and "submit" calls (both rating paths), per rater and per client IP (a
# lab behind one NAT shares the second).
RATE_LIMIT_ACTIONS_PER_RATER = env_rate("RATE_LIMIT_ACTIONS_PER_RATER", "120/60")
RATE_LIMIT_ACTIONS_PER_IP = env_rate("RATE_LIMIT_ACTIONS_PER_IP", "1200/60")
# Behind a reverse proxy: the META key holding the client address it appends, e.g.
# HTTP_X_FORWARDED_FOR (its last entry is used: the one the trusted proxy wrote).
RATE_LIMIT_IP_HEADER = os.environ.get("RATE_LIMIT_IP_HEADER", "")

# Login lockout (django-axes): admin login and API basic auth. After AUTH_LOCKOUT_FAILURES
# wrong passwords for one username from one IP, that pair is refused (429) for
# AUTH_LOCKOUT_MINUTES, right password or not. Counted in the same cache.
INSTALLED_APPS.append("axes")
MIDDLEWARE.append("axes.middleware.AxesMiddleware")
AUTHENTICATION_BACKENDS = [
    "deidplatform.lockout.LockoutBackend",  # first: refuses locked-out credentials
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = env_bool("AUTH_LOCKOUT_ENABLED", True)
AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
AXES_CACHE = RATE_LIMIT_CACHE
AXES_FAILURE_LIMIT = env_int("AUTH_LOCKOUT_FAILURES", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AUTH_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "deidplatform.lockout.lockout_response"
AXES_CLIENT_IP_CALLABLE = "deidplatform.lockout.client_ip"
AXES_VERBOSE = False
if not RATE_LIMIT_CACHE_URL:
    # Axes warns that a per-process cache counts per process: accepted for the embedded default.
    SILENCED_SYSTEM_CHECKS = ["axes.W001"]

# --- Human proxy ----------------------------------------------------------------------------
# Retrain when at least this many aggregated labels arrived since the last run.
DEID_RETRAIN_MIN_NEW_LABELS = env_int("DEID_RETRAIN_MIN_NEW_LABELS", 200)
