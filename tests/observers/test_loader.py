"""The observer protocol: loading by short name or dotted path, clear errors, checked
answers, and no Django below ratings.observers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ratings.observers import SHIPPED, ObserverError, judge, load_observer
from ratings.observers.calibration import auc, fit_logistic, tenfold_accuracy
from tests.helpers import REPO


def test_shipped_observers_load_by_short_name_and_dotted_path():
    for name, path in SHIPPED.items():
        assert load_observer(name) is load_observer(path)
        assert callable(load_observer(name))


def test_an_observer_written_outside_the_project_plugs_in(tmp_path, monkeypatch):
    (tmp_path / "my_lab_observers.py").write_text(
        "def half(source, output, rng):\n    return 0.5\n"
        "class Box:\n    @staticmethod\n    def coin(source, output, rng):\n"
        "        return float(rng.random())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    img = np.zeros((64, 64, 3), np.uint8)
    rng = np.random.default_rng(0)
    assert judge(load_observer("my_lab_observers:half"), img, img, rng) == 0.5
    assert 0 <= judge(load_observer("my_lab_observers:Box.coin"), img, img, rng) <= 1
    assert load_observer("my_lab_observers.half")(img, img, rng) == 0.5


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("no_such_pkg.mod:fn", "cannot import module 'no_such_pkg.mod'"),
        ("ratings.observers.perception:nope", "has no attribute 'nope'"),
        ("ratings.observers.perception:LUMA", "is not callable"),
        ("ratings.observers.perception:luminance", "must take (source, output, rng)"),
        ("", "package.module:callable"),
        ("not a path", "expected 'package.module:callable'"),
    ],
)
def test_a_bad_path_is_refused_naming_it(path, says):
    with pytest.raises(ObserverError) as err:
        load_observer(path)
    assert says in str(err.value)
    if path:
        assert repr(path) in str(err.value)


@pytest.mark.parametrize("answer", [1.5, -0.1, float("nan"), "yes"])
def test_judge_refuses_an_answer_that_is_not_a_probability(answer):
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ObserverError):
        judge(lambda s, o, r: answer, img, img, np.random.default_rng(0))


def test_shipped_observers_refuse_images_that_are_not_rgb_uint8():
    rng = np.random.default_rng(0)
    good = np.zeros((64, 64, 3), np.uint8)
    for name in SHIPPED:
        with pytest.raises(ValueError, match="output: expected an HxWx3 uint8"):
            load_observer(name)(good, good.astype(np.float32), rng)
        with pytest.raises(ValueError, match="source: expected an HxWx3 uint8"):
            load_observer(name)(good[..., 0], good, rng)


def test_the_observer_package_imports_no_django():
    code = (
        "import sys; import ratings.observers, ratings.observers.inner_face_band, "
        "ratings.observers.external_features, ratings.observers.calibration; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'torch') "
        "or m.startswith(('models_app.proxy', 'models_app.deid', 'models_app.vision.cfru', "
        "'models_app.vision.dlib_resnet'))]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_fit_logistic_recovers_the_parameters_of_simulated_answers():
    rng = np.random.default_rng(3)
    s = rng.uniform(-1, 1, 4000)
    y = rng.random(4000) < 1 / (1 + np.exp(-(4.0 * s - 1.0)))
    slope, intercept = fit_logistic(s, y)
    assert slope == pytest.approx(4.0, abs=0.4)
    assert intercept == pytest.approx(-1.0, abs=0.2)
    acc, _ = tenfold_accuracy(s, y, np.arange(4000) % 10)
    assert 0.7 < acc < 0.85
    assert auc([0.1, 0.2, 0.9, 0.8], [False, False, True, True]) == 1.0
    with pytest.raises(ValueError):
        fit_logistic([0.1, 0.2], [True, True])
