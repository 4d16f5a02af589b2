"""Probabilities to integer frequencies: the last step both twins compute before the coder.

float64 arithmetic on the float32 model output (one multiply, a floor, integer sums), so it is
exactly reproducible; every symbol gets at least 1, so any byte stays codable.
"""
from __future__ import annotations

import numpy as np

from .config import FREQ_BITS, VOCAB

_SCALE = float((1 << FREQ_BITS) - VOCAB)


def quantize(probs: np.ndarray) -> np.ndarray:
    """float32 probabilities (n, VOCAB) -> cumulative integer frequencies (n, VOCAB + 1)."""
    freqs = np.floor(probs.astype(np.float64) * _SCALE).astype(np.int64) + 1
    cdf = np.zeros((probs.shape[0], VOCAB + 1), dtype=np.int64)
    np.cumsum(freqs, axis=1, out=cdf[:, 1:])
    return cdf
