"""Formula A, the score-A term, the guard and the job config validation."""

from __future__ import annotations

import pytest
import torch

from models_app.deid.config import DeidConfig
from models_app.deid.errors import DeidConfigError
from models_app.deid.loss import LossWeights, deid_loss, formula_a, score_a_term
from models_app.vision.dlib_resnet import get_dlib_resnet


def _features(x: torch.Tensor):
    return get_dlib_resnet("cpu").features(x)


def test_formula_a_signs_and_zero_at_the_source():
    torch.manual_seed(0)
    src = torch.rand(1, 3, 150, 150) * 255
    se, st = _features(src)
    w = LossWeights(lambda0=1.0, lambda_taps={"stem": 1.0})
    total, d0, taps = formula_a(se, st, se, st, w)
    assert float(d0[0]) < 1e-5 and float(taps["stem"][0]) < 1e-5 and abs(float(total[0])) < 1e-5
    # Θ0 apart raises the loss; taps apart lower it (formula A's minus sign).
    oe, ot = _features((src + torch.randn_like(src) * 40).clamp(0, 255))
    t_only0, _, _ = formula_a(se, st, oe, ot, LossWeights(lambda0=1.0, lambda_taps={}))
    t_only_tap, _, _ = formula_a(se, st, oe, ot, LossWeights(lambda0=0.0, lambda_taps={"stem": 1}))
    assert float(t_only0[0]) > 0 and float(t_only_tap[0]) < 0


def test_gradient_is_finite_at_the_source():
    # The loop starts exactly at the source, where a plain norm has a NaN gradient.
    src = torch.rand(1, 3, 150, 150) * 255
    se, st = _features(src)
    x = src.clone().requires_grad_(True)
    oe, ot = _features(x)
    terms = deid_loss(se, st, oe, ot, torch.tensor([2.0]), torch.zeros(1), LossWeights())
    terms.total.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_eot_samples_average_the_theta0_distance():
    se = torch.zeros(2, 128)
    oe = torch.zeros(6, 128)
    oe[0, 0] = 0.3  # face 0, sample 0
    taps = {"stem": torch.ones(2, 4)}
    _, d0, _ = formula_a(se, taps, oe, taps, LossWeights(lambda_taps={"stem": 1.0}))
    assert d0.shape == (2,) and float(d0[0]) == pytest.approx(0.1, abs=1e-4)


def test_score_a_term_pushes_down_until_below_target():
    w = LossWeights(a_target=0.2)
    p = torch.tensor([0.95, 0.5, 0.2, 0.01])
    t = score_a_term(torch.logit(p), w)
    assert (t[:-1] > t[1:]).all() and float(t[-1]) < 0.05


def test_constraint_guard_turns_the_score_a_push_off_past_the_guard_point():
    # Face 0 sits inside the guard (Θ0 distance 0.1), face 1 past it (0.5 > 0.75 x 0.6).
    se = torch.zeros(2, 128)
    oe = torch.zeros(2, 128)
    oe[0, 0], oe[1, 0] = 0.1, 0.5
    taps = {"stem": torch.ones(2, 4)}
    grads = {}
    for mode in ("penalty", "constraint"):
        logit = torch.tensor([50.0, 50.0], requires_grad=True)
        emb = oe.clone().requires_grad_(True)
        w = LossWeights(lambda_taps={}, guard_mode=mode)
        deid_loss(se, taps, emb, taps, logit, torch.zeros(2), w).total.sum().backward()
        grads[mode] = (logit.grad.clone(), emb.grad[:, 0].clone())
    # The penalty pushes score-A down on both faces; the constraint only inside the guard.
    assert (grads["penalty"][0] > 0.99).all()
    assert float(grads["constraint"][0][0]) > 0.99 and float(grads["constraint"][0][1]) == 0.0
    # The guard and formula A still pull face 1 back toward the source in both modes.
    assert float(grads["constraint"][1][1]) > float(grads["constraint"][1][0]) > 0


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"loss": LossWeights(lambda0=-1.0)}, "lambda0"),
        ({"loss": LossWeights(lambda_taps={"stem": -0.1})}, "lambda_taps"),
        ({"loss": LossWeights(lambda_taps={"nope": 0.1})}, "lambda_taps"),
        ({"tau_a": 1.5}, "tau_a"),
        ({"tau_b": -0.1}, "tau_b"),
        ({"tau_b": 0.4}, "tau_b"),  # min_similarity: below 0.5 would allow a CFRU mismatch
        ({"ensemble": {"cfrus": ["no_such_cfru"]}}, "ensemble"),
        ({"parameterisation": "gan"}, "parameterisation"),
        ({"mode": "sideways"}, "mode"),
        ({"max_iterations": 0}, "max_iterations"),
        ({"lr": -1.0}, "lr"),
        ({"loss": LossWeights(guard_mode="soft")}, "guard_mode"),
        ({"loss": LossWeights(lambda_natural=-1.0)}, "lambda_natural"),
        ({"loss": LossWeights(natural_inset=9.0)}, "natural_inset"),
    ],
)
def test_invalid_parameters_name_the_field(kwargs, field):
    with pytest.raises(DeidConfigError) as exc:
        DeidConfig(**kwargs).validate()
    assert exc.value.field == field


def test_config_round_trips_through_json():
    import json

    cfg = DeidConfig(parameterisation="pixels", mode="evolve", tau_a=0.25, max_iterations=7)
    again = DeidConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert DeidConfig().max_iterations == 90 and DeidConfig().tau_a == 0.3
    with pytest.raises(DeidConfigError) as exc:
        DeidConfig.from_dict({"tau_c": 1})
    assert exc.value.field == "tau_c"
