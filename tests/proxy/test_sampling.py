"""Active sampling (issue 11, item 3): expected information from the proxies' doubt."""

from __future__ import annotations

import numpy as np
import pytest

from models_app.proxy.sampling import binary_entropy, expected_information, order_pairs


def test_entropy_is_one_bit_at_a_half_and_near_zero_when_sure():
    h = binary_entropy(np.array([0.5, 0.01, 0.99, 0.0, 1.0]))
    assert h[0] == pytest.approx(1.0)
    assert h[1] == pytest.approx(h[2]) and h[1] < 0.1
    assert np.all(np.isfinite(h)) and h[3] < 1e-4


def test_disagreement_between_versions_adds_information():
    # Both versions unsure (0.5) vs one sure "same", the other sure "different".
    p = np.array([[0.5, 0.95, 0.02], [0.5, 0.05, 0.02]])
    info = expected_information(p)
    assert info[0] == pytest.approx(1.0)  # uncertainty only
    assert info[1] > info[0]  # disagreement counts on top of the uncertain mean
    assert info[2] < 0.2  # both sure and agreeing: little to learn
    # One version: the disagreement term is zero and the score is the entropy.
    assert expected_information(p[:1]) == pytest.approx(binary_entropy(p[0]))


def test_order_active_puts_the_most_informative_first_and_uniform_is_seeded():
    p = np.array([[0.02, 0.5, 0.9, 0.4]])
    assert list(order_pairs(p, 4, method="active")) == [1, 3, 2, 0]
    u1, u2 = order_pairs(None, 50, method="uniform", seed=3), order_pairs(None, 50, method="uniform", seed=3)
    assert sorted(u1) == list(range(50)) and list(u1) == list(u2)
    assert list(order_pairs(None, 50, method="uniform", seed=4)) != list(u1)


def test_order_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="unknown sampling"):
        order_pairs(None, 3, method="greedy")
    with pytest.raises(ValueError, match="needs the proxies"):
        order_pairs(None, 3, method="active")
    with pytest.raises(ValueError, match="2 predictions for 3"):
        order_pairs(np.array([[0.1, 0.2]]), 3, method="active")


def test_saturated_proxy_ties_go_to_the_least_sure_log_odds():
    """A prior reads most outputs as P = 1.0 exactly (zero information each): the order
    among them follows the log-odds, the least sure first, instead of the index."""
    z = np.array([[90.0, 40.0, 0.3, 250.0, 30.0]])
    p = 1.0 / (1.0 + np.exp(-z))
    assert (p[0, [0, 1, 3]] == 1.0).all()  # saturated in float64 (the entropy clips the rest)
    assert list(order_pairs(p, 5, method="active")) == [2, 0, 1, 3, 4]  # ties by index
    assert list(order_pairs(p, 5, method="active", logits=z)) == [2, 4, 1, 0, 3]
    with pytest.raises(ValueError, match="log-odds for 5"):
        order_pairs(p, 5, method="active", logits=z[:, :3])
