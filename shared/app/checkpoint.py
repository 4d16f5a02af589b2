"""Checkpoints on disk: written atomically (temp file, fsync, rename), so a kill at any moment
leaves either the old checkpoint or the new one, never half of one. A write the OS refuses
(full disk, read-only, permissions) is one StorageError naming the file; the previous
checkpoint stays in place, so the run resumes from it once the cause is fixed.

Reading one back checks its shape first (`fields`: the keys its reader needs, and their types):
a file that loads but is not what its reader expects (damaged, hand-edited, of another build)
gets the same one-line error as an unreadable one, not a KeyError deep inside a resume."""
from __future__ import annotations

import json
import os
from typing import Callable, IO, NamedTuple

from ..core.errors import FormatError
from .files import write_atomic

CHECKPOINT_EVERY = 16            # steps between two checkpoints, on both sides (--checkpoint-every)


class Kind(NamedTuple):
    """What one field of a state file must hold: `fits` tests a value, `name` says it in the error."""
    name: str
    fits: Callable[[object], bool]
    optional: bool = False           # absent in older files, or kept only with some configurations
    fields: dict | None = None       # a dict: the fields it must hold in turn


def _tensor(value) -> bool:
    from ..core.pinned import torch   # start-up: as in save()
    return isinstance(value, torch.Tensor)


def record(fields: dict, name: str = "a dict", optional: bool = False) -> Kind:
    return Kind(name, lambda v: isinstance(v, dict), optional, fields)


def optional(kind: Kind) -> Kind:
    return kind._replace(optional=True)


INT = Kind("an integer", lambda v: type(v) is int)
NUMBER = Kind("a number", lambda v: type(v) in (int, float))
TEXT = Kind("a string", lambda v: type(v) is str)
LIST = Kind("a list", lambda v: type(v) is list)
DICT = record({})
TENSOR = Kind("a tensor", _tensor)
TENSORS = Kind("a dict of tensors", lambda v: isinstance(v, dict) and all(map(_tensor, v.values())))
CODER = Kind("a list of 6 integers",             # an arithmetic coder's state(), as restore() takes it
             lambda v: type(v) is list and len(v) == 6 and all(type(x) is int for x in v))
# Twin.state_dict(), as Twin.load_state_dict reads it (its parts kept only with some configurations)
TWIN = record({"step": INT, "tokens_done": INT, "ideal_bits": NUMBER, "digest": TEXT, "window": TENSOR,
               "model": TENSORS, "optimizer": record({"state": DICT, "param_groups": LIST}),
               "ngram": record({"history": TENSOR, "count_window": TENSOR}, optional=True),
               "past": record({"tokens": TENSOR, "length": INT}, optional=True),
               "tree": optional(TENSORS),
               "part_bits": optional(Kind("a dict of numbers", lambda v: isinstance(v, dict) and all(
                   type(k) is str and type(x) in (int, float) for k, x in v.items())))})


def _problem(value, kind: Kind, name: str = "") -> str | None:
    """What is wrong with `value` as a `kind` (`name`: where it sits in the file), or None."""
    if not kind.fits(value):
        return f"{name!r} is not {kind.name}" if name else f"not {kind.name}"
    for key, field in (kind.fields or {}).items():
        inner = f"{name}.{key}" if name else key
        if key not in value:
            if field.optional:
                continue
            return f"no {inner!r}"
        problem = _problem(value[key], field, inner)
        if problem:
            return problem
    return None


def _malformed(path: str, why: str, what: str = "checkpoint ") -> FormatError:
    return FormatError(f"{what}{path} is malformed ({why}); remove it to start over")


def check(path: str, state, kind: Kind, what: str = "checkpoint "):
    """`state`, as loaded from `path`, once it holds every field its reader needs."""
    problem = _problem(state, kind)
    if problem:
        raise _malformed(path, problem, what)
    return state


def fits_twin(path: str, state: dict, twin) -> dict:
    """A checkpoint whose weights are named and shaped as `twin`'s model's: one of another model
    (or build) would otherwise stop a resume inside torch (load_state_dict), with no line to act on."""
    def shapes(weights: dict) -> dict:
        return {name: tuple(w.shape) for name, w in weights.items()}
    if shapes(state["twin"]["model"]) != shapes(twin.model.state_dict()):
        raise _malformed(path, "'twin.model' does not fit this configuration's model")
    return state


def default_state_dir(side: str) -> str:
    """Where `side` ("earth" or "mars") keeps checkpoints and receipts unless --state-dir says."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "marslink", side)


def _write(path: str, fill: Callable[[IO[bytes]], None]) -> None:
    write_atomic(path, fill, force=True, what="checkpoint ", then="run again to resume")


def save(path: str, state: dict) -> None:
    from ..core.pinned import torch   # start-up: the CLIs read the constants above before torch loads
    _write(path, lambda f: torch.save(state, f))


def load(path: str, fields: dict | None = None) -> dict:
    """The checkpoint at `path`; with `fields`, checked to hold them (see check)."""
    from ..core.pinned import torch   # start-up: as in save()
    try:
        state = torch.load(path, weights_only=True)
    except Exception as e:  # any unreadable checkpoint is one clear error
        raise FormatError(f"checkpoint {path} is unreadable ({e.__class__.__name__}); remove it to start over") from None
    return state if fields is None else check(path, state, record(fields))


def write_json(path: str, obj) -> None:
    _write(path, lambda f: f.write(json.dumps(obj, sort_keys=True).encode()))


def read_json(path: str, fields: dict | None = None):
    """The JSON document at `path`; with `fields`, an object checked to hold them (see check)."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError) as e:
        raise FormatError(f"{path} is unreadable ({e.__class__.__name__}); remove it to start over") from None
    return obj if fields is None else check(path, obj, record(fields, "a JSON object"), what="")
