"""Settings: every value comes from the environment, with embedded defaults for one-command runs.

Embedded defaults: a SQLite file and kombu's filesystem broker under ``DEID_DATA_DIR``.
Production: set ``DATABASE_URL`` (PostgreSQL) and ``CELERY_BROKER_URL`` (Redis or RabbitMQ).
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

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
    "django_celery_beat",
    "models_app",
    "ratings",
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

# --- REST framework --------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "EXCEPTION_HANDLER": "deidplatform.api.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "deidplatform API",
    "DESCRIPTION": "Face de-identification with people in the loop.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
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
SPECTACULAR_SETTINGS.setdefault("ENUM_NAME_OVERRIDES", {})["PairKindEnum"] = "ratings.models.Pair.Kind"

# --- Human proxy ----------------------------------------------------------------------------
# Retrain when at least this many aggregated labels arrived since the last run.
DEID_RETRAIN_MIN_NEW_LABELS = env_int("DEID_RETRAIN_MIN_NEW_LABELS", 200)
