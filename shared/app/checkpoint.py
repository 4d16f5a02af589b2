"""Checkpoints on disk: written atomically (temp file, fsync, rename), so a kill at any moment
leaves either the old checkpoint or the new one, never half of one. A write the OS refuses
(full disk, read-only, permissions) is one StorageError naming the file; the previous
checkpoint stays in place, so the run resumes from it once the cause is fixed."""
from __future__ import annotations

import json
import os
from typing import Callable, IO

from ..core.errors import FormatError
from .files import write_atomic

CHECKPOINT_EVERY = 16            # steps between two checkpoints, on both sides (--checkpoint-every)


def default_state_dir(side: str) -> str:
    """Where `side` ("earth" or "mars") keeps checkpoints and receipts unless --state-dir says."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "marslink", side)


def _write(path: str, fill: Callable[[IO[bytes]], None]) -> None:
    write_atomic(path, fill, force=True, what="checkpoint ", then="run again to resume")


def save(path: str, state: dict) -> None:
    from ..core.pinned import torch   # start-up: the CLIs read the constants above before torch loads
    _write(path, lambda f: torch.save(state, f))


def load(path: str) -> dict:
    from ..core.pinned import torch   # start-up: as in save()
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:  # any unreadable checkpoint is one clear error
        raise FormatError(f"checkpoint {path} is unreadable ({e.__class__.__name__}); remove it to start over") from None


def write_json(path: str, obj) -> None:
    _write(path, lambda f: f.write(json.dumps(obj, sort_keys=True).encode()))


def read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise FormatError(f"{path} is unreadable ({e.__class__.__name__}); remove it to start over") from None
