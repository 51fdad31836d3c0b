"""Save/load: safetensors + JSON metadata, never unpickling, clear errors for bad files."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from safetensors.torch import save_file

from models_app.proxy import CorruptModelError, ProxyError
from models_app.proxy.config import ProxyMeta
from models_app.proxy.io import load_proxy, proxy_to_bytes, read_proxy_metadata, save_proxy
from models_app.proxy.network import HumanProxy

from .synthetic import TINY, synthetic_bank


@pytest.fixture(scope="module")
def model() -> HumanProxy:
    torch.manual_seed(0)
    m = HumanProxy(TINY, ProxyMeta(prior=True, description="bootstrap", metrics={"auc": 0.9}))
    with torch.no_grad():
        m.calibration[0] = torch.tensor([1.7, -0.2])
    return m.eval()


def _scores(m: HumanProxy) -> torch.Tensor:
    bank, _ = synthetic_bank(n_subjects=2, per_subject=2)
    return m.score_bank(bank, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]))


def test_roundtrip_file_bytes_fileobj(model, tmp_path):
    path = save_proxy(model, tmp_path / "v1.safetensors")
    for source in (path, str(path), path.read_bytes(), io.BytesIO(path.read_bytes())):
        m = load_proxy(source)
        assert not m.training and m.prior and m.meta.metrics == {"auc": 0.9}
        assert m.config == model.config
        torch.testing.assert_close(_scores(m), _scores(model), atol=0, rtol=0)
    info = read_proxy_metadata(path)
    assert info["meta"]["prior"] is True and info["config"]["pool"] == TINY.pool
    assert not list(tmp_path.glob("*.tmp"))


def test_rejects_corrupt_files(model, tmp_path):
    data = proxy_to_bytes(model)
    bad = {
        "missing": None,
        "empty": b"",
        "garbage": b"\x00\x01not a model at all" * 10,
        "truncated": data[: len(data) // 2],
        "flipped_weight_byte": data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:],
    }
    for name, blob in bad.items():
        p = tmp_path / f"{name}.safetensors"
        if blob is not None:
            p.write_bytes(blob)
        with pytest.raises(CorruptModelError):
            load_proxy(p)
    # A valid safetensors file that is not a human proxy.
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(CorruptModelError, match="not a human-proxy file"):
        load_proxy(other)
    assert issubclass(CorruptModelError, ProxyError)


def test_never_unpickles(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    p = tmp_path / "evil.pt"
    p.write_bytes(pickle.dumps({"state": Evil()}))
    with pytest.raises(CorruptModelError):
        load_proxy(p)
    torch.save({"w": torch.zeros(1)}, tmp_path / "torch.pt")
    with pytest.raises(CorruptModelError):
        load_proxy(tmp_path / "torch.pt")
    assert not marker.exists()


def test_rejects_non_finite_and_mismatched_weights(model, tmp_path):
    m = HumanProxy(TINY)
    with torch.no_grad():
        m.id_linear.weight[0, 0] = float("nan")
    with pytest.raises(CorruptModelError, match="non-finite"):
        load_proxy(proxy_to_bytes(m))
    bigger = HumanProxy(TINY.__class__(**{**TINY.to_dict(), "hidden": 32}))
    blob = proxy_to_bytes(bigger).replace(b'\\"hidden\\": 32', b'\\"hidden\\": 16')
    with pytest.raises(CorruptModelError):
        load_proxy(blob)


def test_a_version_saved_before_the_colour_options_loads_as_rgb(tmp_path):
    """Stored configs without ``colour``/``mirror_symmetric`` are the first versions: they
    saw RGB, unmirrored, and must load (and score) as they were trained."""
    import json

    from safetensors import safe_open

    from models_app.proxy.config import ProxyConfig

    torch.manual_seed(0)
    old = HumanProxy(ProxyConfig(colour="rgb", mirror_symmetric=False)).eval()
    path = tmp_path / "old.safetensors"
    save_proxy(old, path)
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["config"])
    for k in ("colour", "mirror_symmetric"):
        config.pop(k)
    save_file(tensors, str(path), metadata={**meta, "config": json.dumps(config)})
    loaded = load_proxy(path)
    assert loaded.config.colour == "rgb" and loaded.config.mirror_symmetric is False
    assert ProxyConfig().colour == "luminance" and ProxyConfig().mirror_symmetric is True


def test_a_version_saved_before_structure_maps_loads_without_them(tmp_path):
    """A stored config without ``structure`` had no structure maps: it loads as such."""
    import json

    from safetensors import safe_open

    from models_app.proxy.config import ProxyConfig

    torch.manual_seed(0)
    old = HumanProxy(ProxyConfig(structure=False)).eval()
    path = tmp_path / "old.safetensors"
    save_proxy(old, path)
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["config"])
    config.pop("structure")
    save_file(tensors, str(path), metadata={**meta, "config": json.dumps(config)})
    loaded = load_proxy(path)
    assert loaded.config.structure is False and loaded.structure is None
    assert ProxyConfig().structure is True
