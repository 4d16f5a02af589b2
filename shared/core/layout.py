"""How a byte string maps onto `streams` contiguous rows coded `chunk` tokens per step.

Plain integers, no numpy or torch: the container, the handshake and the dashboards count steps
the way the engine does without loading a model, and the command lines can read a file's header
before the numeric profile is pinned (numpy's BLAS reads its thread count when it loads).
"""
from __future__ import annotations


def row_length(length: int, streams: int) -> int:
    """Bytes per row: the input cut into `streams` contiguous rows, the last ones shorter."""
    return -(-length // streams) if length else 0


def n_steps(length: int, streams: int, chunk: int) -> int:
    """Engine steps needed to code `length` bytes."""
    return -(-row_length(length, streams) // chunk)


def _every(n_steps: int, every: int) -> range:
    return range(0, n_steps + 1, every)


def sync_steps(n_steps: int, every: int) -> list[int]:
    """Steps after which a weight digest is compared: 0 (initial weights), every k-th, and the last."""
    steps = list(_every(n_steps, every))
    if steps[-1] != n_steps:
        steps.append(n_steps)
    return steps


def sync_count(n_steps: int, every: int) -> int:
    """len(sync_steps(n_steps, every)) without building the list: a header may claim any length."""
    steps = _every(n_steps, every)
    return len(steps) + (steps[-1] != n_steps)
