"""Where networks run: CUDA when a GPU is there, the CPU otherwise (``DEID_DEVICE`` overrides)."""

from __future__ import annotations

import os


def get_device():
    import torch

    wanted = os.environ.get("DEID_DEVICE", "").strip()
    if wanted:
        return torch.device(wanted)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
