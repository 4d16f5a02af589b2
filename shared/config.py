"""Run configuration: plain dataclasses, one place for every constant both sides must share.

A `RunConfig` travels in the container header and in the handshake; the receiver rebuilds
its twin from it, so nothing here may depend on the machine it runs on.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from .errors import ConfigMismatch, UsageError

VOCAB = 256                 # byte-level tokens: every file is a token sequence
PAD = 256                   # input-only token: "before the start of the stream"
FREQ_BITS = 24              # probability quantisation: totals of 2**24 (determinism.md, point 5)


@dataclass(frozen=True)
class ModelConfig:
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    context: int = 64       # tokens of already-coded history re-read before each chunk
    chunk: int = 32         # tokens per stream coded between two training steps

    @property
    def block_size(self) -> int:
        return self.context + self.chunk


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 2e-3
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    steps_per_chunk: int = 1     # optimizer steps on each freshly coded chunk
    loss_on_context: bool = True  # also learn again from the re-read history (free: both sides have it)


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    streams: int = 16            # contiguous sub-streams coded side by side (the batch)
    seed: int = 1
    sync_every: int = 32         # steps between weight digests (file trailer / SYNC frames)
    preset: str = "default"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        try:
            return cls(model=ModelConfig(**d["model"]), train=TrainConfig(**d["train"]),
                       **{k: v for k, v in d.items() if k not in ("model", "train")})
        except (KeyError, TypeError) as e:
            raise ConfigMismatch(f"run configuration not understood by this build ({e}); "
                                 f"upgrade marslink on this side") from None

    def validate(self) -> "RunConfig":
        m = self.model
        if m.n_embd % m.n_head:
            raise UsageError(f"n_embd ({m.n_embd}) must be a multiple of n_head ({m.n_head})")
        for name, v in (("streams", self.streams), ("chunk", m.chunk), ("context", m.context),
                        ("n_layer", m.n_layer), ("sync_every", self.sync_every)):
            if v < 1:
                raise UsageError(f"{name} must be at least 1 (got {v})")
        return self


def diff(ours: RunConfig, theirs: RunConfig) -> list[str]:
    """Names of the fields that differ, dotted (e.g. 'train.lr')."""
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[prefix + k] = v
        return out
    a, b = flat(ours.to_dict()), flat(theirs.to_dict())
    return [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def require_same(ours: RunConfig, theirs: RunConfig, what: str = "sender") -> None:
    fields = diff(ours, theirs)
    if fields:
        a, b = ours.to_dict(), theirs.to_dict()

        def get(d, dotted):
            for part in dotted.split("."):
                d = d.get(part, "<missing>") if isinstance(d, dict) else "<missing>"
            return d
        k = fields[0]
        raise ConfigMismatch(f"configuration mismatch in {k!r}: {what} has {get(b, k)!r}, this side has {get(a, k)!r}"
                             + (f" (and {len(fields) - 1} more field(s))" if len(fields) > 1 else "")
                             + "; start both sides with the same preset and options")


PRESETS: dict[str, RunConfig] = {
    "fast": RunConfig(model=ModelConfig(n_layer=1, n_head=4, n_embd=96, context=32, chunk=32),
                      train=TrainConfig(lr=3e-3), streams=32, preset="fast"),
    "default": RunConfig(),
    "strong": RunConfig(model=ModelConfig(n_layer=3, n_head=4, n_embd=192, context=96, chunk=32),
                        train=TrainConfig(lr=1.5e-3), streams=16, preset="strong"),
    # Tiny and quick: for tests and lectures, where speed of a run matters more than ratio.
    "tiny": RunConfig(model=ModelConfig(n_layer=1, n_head=2, n_embd=32, context=16, chunk=16),
                      train=TrainConfig(lr=3e-3), streams=16, sync_every=4, preset="tiny"),
}


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
