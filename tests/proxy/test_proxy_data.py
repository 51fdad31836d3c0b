"""Pair data: LFW pairs files, subject-disjoint splits, input checks (no DB)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models_app.proxy import SingleSubjectError, TooFewPairsError
from models_app.proxy.data import (
    ContextPairDataset,
    ImageBank,
    LabelledPair,
    PairTable,
    SubjectSplit,
    check_pairs,
    human_pair_weight,
    read_lfw_pairs,
    split_by_subject,
)
from tests.helpers import require_lfw_pairs

from .synthetic import natural_pairs, synthetic_bank


def test_read_pairs_formats(tmp_path):
    ten = tmp_path / "pairs.txt"
    ten.write_text("2\t1\nAl\t1\t2\nBo\t1\tCy\t3\nDi\t2\t4\nEd\t1\tFi\t1\n")
    folds = read_lfw_pairs(ten)
    assert [len(f) for f in folds] == [2, 2]
    p = folds[0].pairs[0]
    assert (p.a, p.b, p.target, p.subject_a, p.natural) == (
        "Al/Al_0001.jpg",
        "Al/Al_0002.jpg",
        1.0,
        "Al",
        True,
    )
    q = folds[0].pairs[1]
    assert (q.b, q.target, q.subject_b) == ("Cy/Cy_0003.jpg", 0.0, "Cy")
    dev = tmp_path / "pairsDevTrain.txt"
    dev.write_text("1\nAl\t1\t2\nBo\t1\tCy\t3\n")
    assert len(read_lfw_pairs(dev)) == 1
    bad = tmp_path / "bad.txt"
    bad.write_text("1\t1\nAl\t1\n")
    with pytest.raises(ValueError, match="expected 2|bad line"):
        read_lfw_pairs(bad)


def test_real_view2_folds_are_subject_disjoint():
    folds = read_lfw_pairs(require_lfw_pairs())
    assert len(folds) == 10 and all(len(f) == 600 for f in folds)
    assert all(sum(p.target for p in f) == 300 for f in folds)
    for i in range(10):
        for j in range(i + 1, 10):
            assert not folds[i].subjects & folds[j].subjects


def test_split_by_subject_disjoint_and_deterministic():
    bank, subj = synthetic_bank(n_subjects=20)
    pairs = natural_pairs(bank, subj)
    split = split_by_subject(pairs, val_fraction=0.25, test_fraction=0.15, seed=3)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set().union(*parts) == pairs.subjects
    assert split_by_subject(pairs, 0.25, 0.15, seed=3) == split
    assert split_by_subject(pairs, 0.25, 0.15, seed=4) != split
    applied = split.apply(pairs)
    assert sum(len(v) for v in applied.values()) == len(pairs)
    for name in ("train", "val", "test"):
        allowed = set(getattr(split, name))
        assert all({p.subject_a, p.subject_b} <= allowed for p in applied[name])
    # JSON-ready, so the training run can store it.
    assert SubjectSplit(**split.to_dict()) == split


def test_split_needs_two_subjects():
    pairs = PairTable([LabelledPair("a", "b", 1.0, 1.0, "x", "x")] * 5)
    with pytest.raises(SingleSubjectError, match="subject"):
        split_by_subject(pairs)
    with pytest.raises(SingleSubjectError, match="one subject"):
        check_pairs(pairs)


def test_check_pairs_errors():
    with pytest.raises(TooFewPairsError, match="no labelled pairs"):
        check_pairs(PairTable())
    two = PairTable([LabelledPair("a", "b", 1.0, 1.0, "x", "x"), LabelledPair("c", "d", 0.0, 1.0, "y", "z")])
    with pytest.raises(TooFewPairsError, match="at least 5"):
        check_pairs(two, min_pairs=5)
    with pytest.raises(TooFewPairsError, match="target"):
        check_pairs(PairTable([LabelledPair("a", "b", 1.5, 1.0, "x", "y")]))
    with pytest.raises(TooFewPairsError, match="subject ids"):
        check_pairs(PairTable([LabelledPair("a", "b", 0.5, 1.0, "", "y")]))
    assert human_pair_weight(5, 0.8) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        human_pair_weight(3, 1.5)


def test_pair_table_records_roundtrip():
    bank, subj = synthetic_bank(n_subjects=3)
    pairs = natural_pairs(bank, subj)
    assert PairTable.from_records(pairs.to_records()).pairs == pairs.pairs


def test_context_dataset_and_bank(tmp_path):
    imgs = {k: np.full((300, 300, 3), i, np.uint8) for i, k in enumerate(["a", "b"])}
    ds = ContextPairDataset([LabelledPair("a", "b", 0.7, 3.0, "s1", "s2")], imgs.__getitem__)
    ca, cb, t, w, sa, sb = ds[0]
    assert ca.shape == (3, 300, 300) and ca.dtype == torch.float32 and float(cb.max()) == 1.0
    assert (float(t), float(w), sa, sb) == (pytest.approx(0.7), 3.0, "s1", "s2")

    bank, subj = synthetic_bank(n_subjects=2, per_subject=2)
    bank.save(tmp_path / "bank.safetensors")
    again = ImageBank.load(tmp_path / "bank.safetensors")
    assert again.keys == bank.keys and torch.equal(again.descriptors, bank.descriptors)
    with pytest.raises(KeyError, match="not in the bank"):
        bank.indices(PairTable([LabelledPair("nope", bank.keys[0], 1.0, 1.0, "x", "y")]))


def test_make_natural_pairs_and_concat():
    from models_app.proxy.data import make_natural_pairs

    subject_of = {f"s{s}/i{i}": f"s{s}" for s in range(4) for i in range(3)}
    pairs = make_natural_pairs(subject_of, n_same=5, n_different=7, seed=1)
    same = [p for p in pairs if p.target == 1.0]
    diff = [p for p in pairs if p.target == 0.0]
    assert len(same) == 5 and len(diff) == 7 and all(p.natural for p in pairs)
    assert all(p.subject_a == p.subject_b for p in same)
    assert all(p.subject_a != p.subject_b for p in diff)
    assert make_natural_pairs(subject_of, 5, 7, seed=1).pairs == pairs.pairs
    bank, _ = synthetic_bank(n_subjects=2, per_subject=2)
    parts = [
        ImageBank(bank.keys[:1], bank.identity[:1], bank.small[:1], bank.descriptors[:1]),
        ImageBank(bank.keys[1:], bank.identity[1:], bank.small[1:], bank.descriptors[1:]),
    ]
    joined = ImageBank.concat(parts)
    assert joined.keys == bank.keys and torch.equal(joined.small, bank.small)
