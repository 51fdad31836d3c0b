from __future__ import annotations

import pytest

from tests.conftest import staff_user


@pytest.fixture
def world(db):
    from tests.dashboard.data import build_world

    return build_world()


@pytest.fixture
def viewer_client(client, django_user_model):
    """Staff in the viewer role: may read every page, may do nothing."""
    from deidplatform.permissions import VIEWER

    user = staff_user(django_user_model, "viewer", VIEWER)
    client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def _fresh_probe_cache():
    from deidplatform.dashboard import probes

    probes.clear_cache()
    yield
    probes.clear_cache()
