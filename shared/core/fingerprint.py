"""What both sides compare before any bit is coded: the version of the twins' arithmetic
(portable.ARITHMETIC_VERSION) and a hash of a canary forward+backward pass through the real
model code, which is the same on every CPU. Not the profile, thread count, library builds or
kernel level: none of them decides a bit (docs/portability.md), so an x86 Alice and an ARM Bob
are accepted.

`compare()` names the first field that differs, the version before the canary, so a mismatch
is reported before the first token rather than as garbage at the end.
"""
from __future__ import annotations

import hashlib
import reprlib

import numpy as np

from .config import ModelConfig, TrainConfig
from .errors import ProfileError
from . import portable
from .model import GPT, log_count_table, make_optimizer
from .pinned import torch


_fingerprint: dict | None = None


def fingerprint() -> dict:
    """What both sides must share, field by field. Cached: the canary costs ~0.1 s."""
    global _fingerprint
    if _fingerprint is None:
        _fingerprint = {"arithmetic": str(portable.ARITHMETIC_VERSION), "canary": canary_hash()}
    return dict(_fingerprint)


def canary_hash() -> str:
    """Hash of a small forward+backward pass through the real model code.

    Two machines that disagree anywhere in GEMM, softmax, LayerNorm or Adam will very likely
    disagree here, so the mismatch is reported before the first token rather than as garbage.
    With the portable arithmetic it is the same on every CPU (tests/golden.json records it).
    """
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=64, context=24, chunk=8, hashed=(1, 3), hash_bits=8)
    model = GPT(cfg, seed=12345)
    opt = make_optimizer(model, TrainConfig())
    rng = np.random.Generator(np.random.PCG64(7))
    x = torch.from_numpy(rng.integers(0, 256, size=(4, cfg.context + cfg.chunk - 1)).astype("int64"))
    h = hashlib.sha256()
    for _ in range(2):
        logits = model(x)
        h.update(portable.softmax(logits.detach()).numpy().tobytes())
        loss = portable.cross_entropy(logits[:, :-1].reshape(-1, 256), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        probs = model.prime(x[:, : cfg.context])
        for t in range(3):
            h.update(probs.numpy().tobytes())
            probs = model.extend(x[:, cfg.context + t])
    h.update(model.digest().encode())
    h.update(log_count_table().tobytes())      # the n-gram evidence table
    return h.hexdigest()[:16]


_SHORT = reprlib.Repr()           # for the peer's values, which may be huge or deeply nested
_SHORT.maxstring = _SHORT.maxother = 200
_SHORT.maxlevel = 3


def compare(ours: dict, theirs: dict, what: str = "peer", us: str = "this machine") -> None:
    """Raise a ProfileError naming the first field that differs (settings before the canary)."""
    if not isinstance(theirs, dict):
        raise ProfileError(f"{what} sent no readable numeric fingerprint; is it a marslink build?")
    for key in list(ours) + [k for k in theirs if k not in ours]:
        a, b = ours.get(key, "<missing>"), theirs.get(key, "<missing>")
        if a != b:
            raise ProfileError(f"numeric profile mismatch in {key!r:.200}: {what} has {_SHORT.repr(b)}, "
                               f"{us} has {a!r}; both sides need a marslink build with the same arithmetic")
