"""How a byte string maps onto `streams` contiguous rows coded `chunk` tokens per step.

Torch-free, so the container, the handshake and the dashboards count steps the way the engine
does without loading a model: every shape both twins use follows from these numbers.
"""
from __future__ import annotations

import numpy as np

from .config import PAD


def row_length(length: int, streams: int) -> int:
    """Bytes per row: the input cut into `streams` contiguous rows, the last ones shorter."""
    return -(-length // streams) if length else 0


def n_steps(length: int, streams: int, chunk: int) -> int:
    """Engine steps needed to code `length` bytes."""
    return -(-row_length(length, streams) // chunk)


def sync_steps(n_steps: int, every: int) -> list[int]:
    """Steps after which a weight digest is compared: 0 (initial weights), every k-th, and the last."""
    steps = list(range(0, n_steps + 1, every))
    if n_steps not in steps:
        steps.append(n_steps)
    return steps


class Layout:
    """How a byte string of `length` maps onto `streams` rows of `chunk`-token steps."""

    def __init__(self, length: int, streams: int, chunk: int):
        self.length = length
        self.streams = streams
        self.chunk = chunk
        self.row_len = row_length(length, streams)
        self.n_steps = n_steps(length, streams, chunk)
        self.lens = np.clip(length - np.arange(streams) * self.row_len, 0, self.row_len)

    def active(self, pos: int) -> np.ndarray:
        """Which rows have a token at position `pos`."""
        return pos < self.lens

    def pieces(self, t0: int, width: int):
        """(row, byte offset in the original, count) for positions t0 .. t0+width of every row."""
        for b in range(self.streams):
            n = int(min(max(self.lens[b] - t0, 0), width))
            if n:
                yield b, b * self.row_len + t0, n

    def rows(self, data, t0: int, width: int) -> np.ndarray:
        """Tokens at positions t0 .. t0+width of every row, PAD where a row has ended."""
        out = np.full((self.streams, width), PAD, dtype=np.int64)
        for b, offset, n in self.pieces(t0, width):
            out[b, :n] = np.frombuffer(data, dtype=np.uint8, count=n, offset=offset)
        return out
