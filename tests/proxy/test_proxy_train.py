"""train_proxy: learning, stop rules (claims 7, 9, 10), determinism, splits, errors."""

from __future__ import annotations

import json

import pytest
import torch

from models_app.proxy import SingleSubjectError, TooFewPairsError
from models_app.proxy.config import ProxyMeta
from models_app.proxy.data import LabelledPair, PairTable, SubjectSplit
from models_app.proxy.train import StopRules, TrainConfig, evaluate_proxy, train_proxy

from .synthetic import TINY, natural_pairs, synthetic_bank


@pytest.fixture(scope="module")
def data():
    bank, subj = synthetic_bank(n_subjects=12, per_subject=3)
    return bank, natural_pairs(bank, subj)


def cfg(**stop) -> TrainConfig:
    stop.setdefault("max_epochs", 3)
    return TrainConfig(batch_size=16, lr=3e-3, val_fraction=0.3, stop=StopRules(**stop))


def test_learns_and_reports(data):
    bank, pairs = data
    records = []
    res = train_proxy(
        bank,
        pairs,
        cfg(max_epochs=6, patience=10),
        model_config=TINY,
        meta=ProxyMeta(prior=True),
        on_epoch=records.append,
    )
    assert res.stop_reason == "max_epochs" and len(res.history) == 6 == len(records)
    assert records[0]["epoch"] == 1 and records[-1]["images_processed"] == res.images_processed
    assert res.val_metrics["full"]["auc"] > 0.9
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    # The split is data, disjoint by subject, and every part the model saw obeys it.
    split = res.split.to_dict()
    assert not set(split["train"]) & set(split["val"])
    assert res.n_pairs["train"] > 0 and res.n_pairs["val"] >= 4
    assert res.model.prior and res.model.meta.trained_on["stop_reason"] == "max_epochs"
    assert set(res.calibration) == {"full", "appearance"}
    assert "reliability" in res.val_metrics
    d = res.to_dict()
    assert "model" not in d and d["split"] == split
    json.dumps(d, allow_nan=False)  # storable in a jsonb column as is
    # Held-out evaluation for the promotion gate, per-pair probabilities included.
    ev = evaluate_proxy(res.model, bank, pairs)
    assert ev["auc"] > 0.9 and len(ev["probs"]) == len(pairs) and not res.model.training


def test_deterministic_with_seed(data):
    bank, pairs = data
    state = torch.get_rng_state()
    a = train_proxy(bank, pairs, cfg(), model_config=TINY)
    b = train_proxy(bank, pairs, cfg(), model_config=TINY)
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is untouched
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    for (k, x), (_, y) in zip(
        a.model.state_dict().items(), b.model.state_dict().items(), strict=True
    ):
        assert torch.equal(x, y), k


def test_stop_target_reached(data):
    bank, pairs = data
    res = train_proxy(
        bank, pairs, cfg(monitor="val_auc", target=0.0, max_epochs=5), model_config=TINY
    )
    assert res.stop_reason == "target_reached" and len(res.history) == 1


def test_stop_plateau(data):
    bank, pairs = data
    res = train_proxy(bank, pairs, cfg(min_delta=1e9, patience=2, max_epochs=10), model_config=TINY)
    # Epoch 1 always improves on "nothing yet"; then 2 epochs without a 1e9 improvement.
    assert res.stop_reason == "plateau" and len(res.history) == 3 and res.best_epoch == 1


def test_stop_max_images(data):
    bank, pairs = data
    res = train_proxy(bank, pairs, cfg(max_images=40, max_epochs=5), model_config=TINY)
    assert res.stop_reason == "max_images" and len(res.history) == 1
    assert 40 <= res.images_processed < 40 + 2 * 16


def test_callback_can_cancel(data):
    bank, pairs = data
    res = train_proxy(
        bank, pairs, cfg(max_epochs=5), model_config=TINY, on_epoch=lambda r: r["epoch"] < 2
    )
    assert res.stop_reason == "cancelled" and len(res.history) == 2


def test_soft_targets_weights_and_warm_start(data):
    bank, pairs = data
    # Human-labelled pairs: soft score-A, weight = judgments x reliability; a zero-weight
    # pair with an absurd target must not matter.
    soft = PairTable(
        [
            LabelledPair(
                p.a, p.b, 0.8 if p.target else 0.1, 2.5, p.subject_a, p.subject_b, False, p.pair_id
            )
            for p in pairs
        ]
    )
    parent = train_proxy(bank, pairs, cfg(max_epochs=2), model_config=TINY).model
    before = {k: v.clone() for k, v in parent.state_dict().items()}
    res = train_proxy(
        bank,
        soft + natural_pairs(bank, [k.split("/")[0] for k in bank.keys]),
        cfg(max_epochs=2),
        init=parent,
    )
    assert all(torch.equal(before[k], v) for k, v in parent.state_dict().items())
    assert res.model.meta.trained_on["n_human"] > 0 and res.model.meta.trained_on["n_natural"] > 0
    assert parent.prior and not res.model.prior  # natural pairs only -> prior; then not
    # Feature scaling is kept from the parent on a warm start.
    assert torch.equal(res.model.feat_mean, parent.feat_mean)


def test_given_split_is_used_and_checked(data):
    bank, pairs = data
    subjects = sorted(pairs.subjects)
    split = SubjectSplit(train=subjects[:8], val=subjects[8:])
    res = train_proxy(bank, pairs, cfg(max_epochs=1), split=split, model_config=TINY)
    assert res.split == split
    with pytest.raises(ValueError, match="not disjoint"):
        train_proxy(bank, pairs, cfg(), split=SubjectSplit(subjects, subjects[:1]))


def test_bad_training_data(data):
    bank, pairs = data
    with pytest.raises(TooFewPairsError, match="no labelled pairs"):
        train_proxy(bank, PairTable(), cfg(), model_config=TINY)
    with pytest.raises(TooFewPairsError, match="at least 20"):
        train_proxy(bank, PairTable(pairs.pairs[:5]), cfg(), model_config=TINY)
    one = PairTable([LabelledPair(bank.keys[0], bank.keys[1], 0.7, 1.0, "s00", "s00")] * 30)
    with pytest.raises(SingleSubjectError, match="one subject"):
        train_proxy(bank, one, cfg(), model_config=TINY)
    two = PairTable(
        [LabelledPair(bank.keys[0], bank.keys[1], 0.7, 1.0, "s00", "s00")] * 29
        + [LabelledPair(bank.keys[3], bank.keys[4], 0.9, 1.0, "s01", "s01")]
    )
    with pytest.raises(TooFewPairsError, match="validation pairs"):
        split = SubjectSplit(train=["s00"], val=["s01"])  # 1 validation pair < 4
        train_proxy(bank, two, cfg(), split=split, model_config=TINY)
    with pytest.raises(ValueError, match="bank does not fit"):
        train_proxy(bank, pairs, cfg())  # default config: 75x75 inputs, all taps
    with pytest.raises(ValueError, match="monitor"):
        StopRules(monitor="accuracy")


def test_config_roundtrip():
    c = TrainConfig(seed=3, stop=StopRules(monitor="val_auc", target=0.95, max_images=1000))
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
