"""Saving and loading generators without pickles: safetensors of the learned tensors, the
config and provenance as JSON in the header, and a digest of every tensor (as the proxy's
files, ``models_app.proxy.io``)."""

from __future__ import annotations

import json
from typing import Any

import torch

from models_app.proxy.io import tensor_digest

from .network import GeneratorConfig, ParamGenerator

FORMAT = "deid-generator"
FORMAT_VERSION = "1"


class CorruptGeneratorError(ValueError):
    """The bytes are not a generator file of this version, or they were altered."""


def generator_to_bytes(model: ParamGenerator, meta: dict[str, Any] | None = None) -> bytes:
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu", torch.float32).contiguous()
               for k, v in model.weights().items()}
    return save(tensors, metadata={
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "config": json.dumps(model.config.to_dict()),
        "meta": json.dumps(meta or {}, default=float),
        "sha256": tensor_digest(tensors),
    })


def load_generator(data: bytes, device: torch.device | str = "cpu") -> ParamGenerator:
    """The generator in ``data``, checked (marker, config, tensor names and digest)."""
    from safetensors.torch import load

    try:
        tensors = load(data)
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + n])
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own (Rust) error types
        raise CorruptGeneratorError(f"not a safetensors file: {exc}") from None
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise CorruptGeneratorError("not a generator file of this version")
    if meta.get("sha256") != tensor_digest(tensors):
        raise CorruptGeneratorError("the tensors do not match their digest")
    try:
        model = ParamGenerator(GeneratorConfig.from_dict(json.loads(meta["config"])))
        model.load_weights(tensors)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptGeneratorError(f"config or weights do not fit: {exc}") from None
    if not all(torch.isfinite(t).all() for t in tensors.values()):
        raise CorruptGeneratorError("non-finite weights")
    return model.to(device).eval()


def generator_meta(data: bytes) -> dict[str, Any]:
    n = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
    return json.loads(meta.get("meta", "{}"))
