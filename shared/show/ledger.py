"""What the description-length ledger counts beside the stream: the program and the trained state.

The lecture's claim is that the coded stream *is* the trained model: Bob ends with Alice's model
without it ever crossing the link, because both already hold the program that turns the stream
into it. So the ledger sets two measured sizes beside the stream:

  * the program: every module of the lockstep core package (`shared/core/`, found by scanning
    the package's directory, so a new module counts without anyone editing this file) plus the
    arithmetic coder (`shared/coding/coder.py`), which both twins run too: "core + coder",
    gzip -9, as it would be shipped;
  * the trained state a receiver would need to continue without the stream: the GPT's
    parameters, AdamW's two moments per parameter (prediction needs none of them, but the next
    training step reads them, so a twin cannot stay in lockstep without them), the n-gram count
    tables, the match model and the recent-token windows, each as its own row, raw (the arrays'
    bytes as the twin holds them) and compressed with gzip -9 (Python's zlib, level 9, gzip
    framing): a classic compressor that needs next to no memory, where xz -9 would need 674 MB
    more in a process that must stay under 1 GB (it packs the sparse tables about a third smaller).

Each row counts the object's public numpy arrays (and torch tensors), found from the object
itself: an underscore array is a cache recomputed from the public ones. Torch-free.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .. import core
from ..coding import coder

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = "core + coder"               # what the program row counts, in the page's words
STATE_COMPRESSOR = "gzip -9"           # the classic compressor each state row is measured with
GZIP = 31                              # zlib window bits for gzip framing, as `gzip -9` writes it
SLICE = 1 << 24                        # bytes handed to the compressor at a time: no copy of a big table


def program_files() -> list[Path]:
    """Every Python file of the lockstep core package (all directories on its `__path__`),
    then the coder module."""
    files = sorted(p for d in core.__path__ for p in Path(d).rglob("*.py"))
    return files + [Path(coder.__file__).resolve()]


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:                 # a package copied elsewhere (tests): its own name
        return path.name


def program_size() -> dict:
    """The program both twins hold and never send: the files counted, raw bytes, gzip -9 bytes."""
    files = program_files()
    blob = b"".join(p.read_bytes() for p in files)
    return {"what": PROGRAM, "files": [_shown(p) for p in files], "bytes": len(blob),
            "gzip_bytes": len(gzip.compress(blob, 9, mtime=0))}


def _arrays(obj) -> dict[str, np.ndarray]:
    """The object's public numpy arrays, by attribute name, in definition order."""
    return {k: v for k, v in vars(obj).items() if isinstance(v, np.ndarray) and not k.startswith("_")}


def _as_numpy(tensor) -> np.ndarray:
    return tensor.detach().contiguous().numpy()


def measure(arrays: list[np.ndarray]) -> tuple[int, int]:
    """(raw bytes, gzip -9 bytes) of the arrays' bytes laid end to end."""
    packer = zlib.compressobj(9, zlib.DEFLATED, GZIP)
    raw, packed = 0, 0
    for a in arrays:
        view = memoryview(np.ascontiguousarray(a)).cast("B")
        raw += len(view)
        for i in range(0, len(view), SLICE):
            packed += len(packer.compress(view[i:i + SLICE]))
    return raw, packed + len(packer.flush())


def _row(name: str, note: str, parts: list[str], arrays: list[np.ndarray]) -> dict:
    raw, packed = measure(arrays)
    return {"name": name, "note": note, "arrays": parts, "raw_bytes": raw, "gzip_bytes": packed}


def state_sizes(twin) -> list[dict]:
    """One row per piece of a twin's trained state, sized from the twin itself."""
    params = [_as_numpy(p) for p in twin.model.parameters()]
    rows = [_row("GPT parameters", f"{sum(p.size for p in params):,} float32 numbers",
                 ["model.parameters()"], params)]
    moments: dict[str, list[np.ndarray]] = {}       # every tensor the optimizer keeps, by its name
    for per_param in twin.opt.state.values():
        for k, v in per_param.items():
            if hasattr(v, "detach"):
                moments.setdefault(k, []).append(_as_numpy(v))
    rows.append(_row("AdamW moments", "two per parameter: not needed to predict, but the next training step "
                     "reads them: without them a twin leaves lockstep",
                     list(moments), [a for arrays in moments.values() for a in arrays]))
    counts = twin.counts
    if counts is not None:
        tables = _arrays(counts)
        rows.append(_row("n-gram count tables", "per-context byte counts, their owner checks, the newest bytes "
                         "and word hashes of every stream", list(tables), list(tables.values())))
        if counts.match is not None:
            match = _arrays(counts.match)
            rows.append(_row("match model", "each stream's recent bytes and where every context last occurred",
                             list(match), list(match.values())))
    windows = _arrays(twin)
    if windows:
        note = "the context window and the counts it was predicted with" + (
            "; the history replayed for training" if "past" in windows else "")
        rows.append(_row("recent tokens", note, list(windows), list(windows.values())))
    return rows
