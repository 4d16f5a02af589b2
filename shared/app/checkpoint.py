"""Checkpoints on disk: written atomically (temp file, fsync, rename), so a kill at any moment
leaves either the old checkpoint or the new one, never half of one. A write the OS refuses
(full disk, read-only, permissions) is one StorageError naming the file; the previous
checkpoint stays in place, so the run resumes from it once the cause is fixed."""
from __future__ import annotations

import json
import os
import secrets
from typing import Callable, IO

from ..core.errors import FormatError
from ..core.pinned import torch
from .files import storage_error


def _write(path: str, mode: str, fill: Callable[[IO], None]) -> None:
    tmp = f"{path}.{secrets.token_hex(4)}.tmp"       # unique: two writers never share a temporary file
    try:
        with open(tmp, mode) as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        cause = _os_error(e)
        if cause is None:
            raise
        raise storage_error("checkpoint ", path, cause, then="run again to resume") from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _os_error(e: BaseException) -> OSError | None:
    """The OSError behind `e`: torch.save reports a failed write as a RuntimeError from its zip
    writer, raised while handling the OSError."""
    while e is not None and not isinstance(e, OSError):
        e = e.__cause__ or e.__context__
    return e


def save(path: str, state: dict) -> None:
    _write(path, "wb", lambda f: torch.save(state, f))


def load(path: str) -> dict:
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:  # any unreadable checkpoint is one clear error
        raise FormatError(f"checkpoint {path} is unreadable ({e.__class__.__name__}); remove it to start over") from None


def write_json(path: str, obj) -> None:
    _write(path, "w", lambda f: json.dump(obj, f, sort_keys=True))


def read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise FormatError(f"{path} is unreadable ({e.__class__.__name__}); remove it to start over") from None
