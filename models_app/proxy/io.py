"""Saving and loading human-proxy versions without pickles.

One self-describing file: safetensors (float32 weights and buffers) whose header metadata
holds JSON strings — ``format``/``format_version``, ``config`` (:class:`ProxyConfig`),
``meta`` (:class:`ProxyMeta`: prior flag, metrics, provenance) and ``sha256``, a digest of
every tensor's name, shape and bytes. One file fits the registry's file field and cannot get
separated from its config.

Loading parses the header itself, checks the marker, the config, the exact set of tensor
names and shapes, the digest and that every value is finite; anything else raises
:class:`CorruptModelError`. Nothing is ever unpickled (safetensors holds raw arrays only).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import IO

import torch

from . import CorruptModelError
from .config import ProxyConfig, ProxyMeta
from .network import HumanProxy

FORMAT = "deid-human-proxy"
FORMAT_VERSION = "1"
MAX_HEADER = 16 * 1024 * 1024


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, shapes and bytes of the tensors (a stored model's integrity)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _tensors(model: HumanProxy) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()
    }


def proxy_to_bytes(model: HumanProxy) -> bytes:
    """The model as safetensors bytes with its config and metadata in the header."""
    from safetensors.torch import save

    tensors = _tensors(model)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(model.config.to_dict()),
        "meta": json.dumps(model.meta.__dict__, default=float),
        "sha256": tensor_digest(tensors),
    }
    return save(tensors, metadata=metadata)


def save_proxy(model: HumanProxy, path: str | Path) -> Path:
    """Write the model to ``path`` (atomically: a temporary file, then a rename)."""
    path = Path(path)
    data = proxy_to_bytes(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _read(source: str | Path | bytes | IO[bytes]) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), "<bytes>"
    if hasattr(source, "read"):
        return source.read(), getattr(source, "name", "<file>")
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except FileNotFoundError:
        raise CorruptModelError(f"{path}: model file not found") from None
    except OSError as exc:
        raise CorruptModelError(f"{path}: cannot read the model file ({exc})") from None


def _header(data: bytes, name: str) -> dict:
    if len(data) < 8:
        raise CorruptModelError(f"{name}: not a human-proxy file (only {len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER or 8 + n > len(data):
        raise CorruptModelError(f"{name}: not a safetensors file (bad header length {n})")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CorruptModelError(f"{name}: damaged safetensors header") from None
    if not isinstance(header, dict):
        raise CorruptModelError(f"{name}: damaged safetensors header")
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise CorruptModelError(f"{name}: not a human-proxy file (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CorruptModelError(
            f"{name}: human-proxy format version {meta.get('format_version')!r}; "
            f"this code reads {FORMAT_VERSION!r}"
        )
    return meta


def read_proxy_metadata(source: str | Path | bytes | IO[bytes]) -> dict:
    """Config and metadata of a saved version (``{"config", "meta", "sha256", ...}``)
    without building the model; raises :class:`CorruptModelError` like :func:`load_proxy`."""
    data, name = _read(source)
    meta = _header(data, name)
    try:
        return {
            "format": meta["format"],
            "format_version": meta["format_version"],
            "config": json.loads(meta["config"]),
            "meta": json.loads(meta["meta"]),
            "sha256": meta["sha256"],
        }
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CorruptModelError(f"{name}: damaged human-proxy metadata ({exc})") from None


def load_proxy(
    source: str | Path | bytes | IO[bytes], device: str | torch.device = "cpu"
) -> HumanProxy:
    """A saved version in eval mode. ``source``: a path, the bytes, or a binary file object
    (e.g. a Django ``FieldFile`` opened in ``rb``). Raises :class:`CorruptModelError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    data, name = _read(source)
    info = read_proxy_metadata(data)
    try:
        # Versions saved before these options saw RGB, unmirrored.
        legacy = {"colour": "rgb", "mirror_symmetric": False}
        stored = {**legacy, **info["config"]}
        # ... and their identity branch saw what the appearance branch saw, unfiltered.
        stored.setdefault("identity_colour", stored["colour"])
        # ... and had no structure maps.
        stored.setdefault("structure", False)
        config = ProxyConfig.from_dict(stored)
        meta = ProxyMeta(**info["meta"])
        model = HumanProxy(config, meta)
    except (TypeError, ValueError) as exc:
        raise CorruptModelError(f"{name}: invalid human-proxy config ({exc})") from None
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CorruptModelError(f"{name}: damaged tensor data ({exc})") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != expected:
        diff = sorted(set(got) ^ set(expected)) or sorted(k for k in got if got[k] != expected[k])
        raise CorruptModelError(f"{name}: tensors do not fit the config (e.g. {diff[:3]})")
    if any(t.dtype != torch.float32 for t in tensors.values()):
        raise CorruptModelError(f"{name}: tensors must be float32")
    if tensor_digest(tensors) != info["sha256"]:
        raise CorruptModelError(f"{name}: checksum mismatch (the weights are damaged)")
    bad = [k for k, t in tensors.items() if not torch.isfinite(t).all()]
    if bad:
        raise CorruptModelError(f"{name}: non-finite values in {bad[:3]}")
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval()
