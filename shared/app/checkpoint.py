"""Checkpoints on disk: written atomically (temp file, fsync, rename), so a kill at any moment
leaves either the old checkpoint or the new one, never half of one."""
from __future__ import annotations

import json
import os

from ..core.errors import FormatError
from ..core.pinned import torch


def save(path: str, state: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: str) -> dict:
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:  # any unreadable checkpoint is one clear error
        raise FormatError(f"checkpoint {path} is unreadable ({e.__class__.__name__}); remove it to start over") from None


def write_json(path: str, obj) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise FormatError(f"{path} is unreadable ({e.__class__.__name__}); remove it to start over") from None
