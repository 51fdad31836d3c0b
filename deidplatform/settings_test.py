"""Settings for the test suite: the real settings with test-safe defaults.

``DATABASE_URL`` and ``CELERY_BROKER_URL`` still come from the environment (CI points them
at PostgreSQL and Redis); without them the embedded defaults are used.
"""

import os
from pathlib import Path

os.environ.setdefault("SECRET_KEY", "test-only-secret-key")
os.environ.setdefault(
    "DEID_DATA_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test")
)

from .settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
ALLOWED_HOSTS = ["*"]
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
