"""Both rating paths in the default run: the SQL hot path (``ratings_hot``) and the Python
reference path (services through the DRF views), switched by ``settings.RATINGS_HOT_PATH``.

Every test that reaches the rater endpoints runs once per path (ids ``[hot]`` and
``[reference]``). A module or test narrows that with ``@pytest.mark.rating_paths(...)``:
``("hot")`` for tests of the hot path itself; no argument (one run, setting untouched) for
tests that call services directly, which the toggle never reaches, and for tests that
switch the path themselves. Imported by tests/ratings/conftest.py and tests/browser/conftest.py.
"""

from __future__ import annotations

import pytest

PATHS = ("hot", "reference")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "rating_paths(*paths): rating paths to run the test under (hot, reference)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "rating_path" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("rating_paths")
    paths = PATHS if marker is None else marker.args
    if paths:
        metafunc.parametrize("rating_path", paths, indirect=True)


@pytest.fixture(autouse=True)
def rating_path(request: pytest.FixtureRequest, settings) -> str | None:
    """The path this test runs under (None: the test chooses per request itself)."""
    path = getattr(request, "param", None)
    if path is not None:
        settings.RATINGS_HOT_PATH = path == "hot"
    return path
