"""The reader of dlib's .dat serialisation: the shipped model, and refusals of anything else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models_app.vision import dlib_dat


def test_reader_reads_the_shipped_model():
    w = dlib_dat.read_dlib_resnet()
    assert dlib_dat.default_model_path().name == dlib_dat.MODEL_FILENAME
    assert w.channel_means == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert w.distance_threshold == pytest.approx(0.6, abs=1e-6)
    assert w.loss_margin == pytest.approx(0.04, abs=1e-6)
    assert len(w.convs) == len(w.affines) == 1 + 2 * sum(b for _, b in dlib_dat.LEVELS)  # 29
    assert w.convs[0][0].shape == (32, 3, 7, 7)
    assert w.fc is not None and w.fc.shape == (128, 256)


def _model_bytes() -> bytes:
    return dlib_dat.default_model_path().read_bytes()


@pytest.mark.parametrize("cut", [0, 1, 30, 400, 1_000_000, -1])
def test_reader_rejects_truncated_file(tmp_path: Path, cut: int):
    data = _model_bytes()
    p = tmp_path / "cut.dat"
    p.write_bytes(data[:cut])
    with pytest.raises(dlib_dat.DatFormatError, match="truncated|empty"):
        dlib_dat.read_dlib_resnet(p)


def test_reader_rejects_trailing_bytes(tmp_path: Path):
    p = tmp_path / "long.dat"
    p.write_bytes(_model_bytes() + b"\x00")
    with pytest.raises(dlib_dat.DatFormatError, match="unexpected bytes after the last layer"):
        dlib_dat.read_dlib_resnet(p)


@pytest.mark.parametrize(
    "other", ["shape_predictor_5_face_landmarks.dat", "mmod_human_face_detector.dat"]
)
def test_reader_rejects_other_dlib_files(other: str):
    path = dlib_dat.default_model_path().with_name(other)
    with pytest.raises(dlib_dat.DatFormatError, match="not dlib's ResNet face recognition model"):
        dlib_dat.read_dlib_resnet(path)


def test_reader_rejects_changed_architecture(tmp_path: Path):
    data = bytearray(_model_bytes())
    # The stem conv's stride (stored right after its 4736-float params tensor) 2 -> 1.
    i = data.index(b"con_4") + 5
    i += 2 + 3 + 2 + 2 + 2 + 4 * 4736  # tensor header (version, n, k, nr, nc) + data
    assert bytes(data[i : i + 8]) == bytes([1, 32, 1, 7, 1, 7, 1, 2])
    data[i + 7] = 1
    p = tmp_path / "stride.dat"
    p.write_bytes(bytes(data))
    with pytest.raises(dlib_dat.DatFormatError, match="expected \\[32, 7, 7, 2, 2, 0, 0\\]"):
        dlib_dat.read_dlib_resnet(p)


def test_reader_rejects_random_bytes(tmp_path: Path):
    p = tmp_path / "noise.dat"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(dlib_dat.DatFormatError):
        dlib_dat.read_dlib_resnet(p)
