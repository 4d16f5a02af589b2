"""The numeric profile: everything that decides the bits of a float computation.

Arithmetic decoding fails *silently* if the receiver's probabilities differ from the
sender's by a single rounding step (docs/determinism.md). Thread counts, the
CPU dispatch level, MKL's code branch and oneDNN all change those bits, and most of them
are read by torch only once, at import. So this module is the single place that pins them:
`activate()` writes the environment *before* torch is imported, then checks that torch
really runs the way the profile says. The caller's environment never decides.

Torch-free: `pinned.py` is the one module that calls `active()` and then imports torch;
`fingerprint.py` describes the result for the handshake.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass

from .errors import ProfileError


@dataclass(frozen=True)
class NumericProfile:
    """Settings that must be equal on both sides for bit-identical floats."""
    name: str
    cpu_capability: str      # ATen kernel dispatch level: "avx2", "avx512", "default"
    mkl_cbwr: str            # MKL conditional numerical reproducibility branch ("" = MKL decides)
    onednn_max_isa: str      # oneDNN ISA cap (oneDNN is also disabled; belt and braces)
    threads: int = 1         # intra-op threads; inter-op is always 1

    def environment(self) -> dict[str, str]:
        n = str(self.threads)
        env = {
            "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
            "MKL_DYNAMIC": "FALSE", "OMP_DYNAMIC": "FALSE",
            "ATEN_CPU_CAPABILITY": self.cpu_capability,
            "ONEDNN_MAX_CPU_ISA": self.onednn_max_isa,
            "MKL_CBWR": self.mkl_cbwr,
        }
        return env


PROFILES = {
    # Portable: AVX2 dispatch is on every x86-64 CPU of the last decade, and no MKL result
    # decides a bit (shared/exact.py: MKL_CBWR=COMPATIBLE was *not* enough, an AMD EPYC and an
    # Intel Xeon disagreed), so MKL may take its fastest branch. The default.
    "portable": NumericProfile("portable", "avx2", "AUTO", "AVX2"),
    # Native: let MKL pick its branch for this CPU. Faster; both sides must run the same CPU
    # family, which the canary hash in the fingerprint checks.
    "native": NumericProfile("native", "avx2", "", "AVX2"),
}
DEFAULT_PROFILE = "portable"

_active: NumericProfile | None = None


def resolve(profile: NumericProfile | str | None = None, threads: int | None = None) -> NumericProfile:
    """A profile by name (default: $MARSLINK_PROFILE or 'portable'), optionally with other threads."""
    if profile is None:
        profile = os.environ.get("MARSLINK_PROFILE", DEFAULT_PROFILE)
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ProfileError(f"unknown numeric profile {profile!r}; choose one of {', '.join(PROFILES)}")
        profile = PROFILES[profile]
    if threads is not None:
        if not 1 <= threads <= 256:
            raise ProfileError(f"threads must be between 1 and 256 (got {threads})")
        profile = dataclasses.replace(profile, threads=threads)
    return profile


def activate(profile: NumericProfile | str | None = None, threads: int | None = None) -> NumericProfile:
    """Pin the numeric environment for this process. Must run before torch is imported."""
    global _active
    profile = resolve(profile, threads)
    if _active is not None:
        if _active != profile:
            raise ProfileError(f"numeric profile {_active.name!r} is already active in this process; "
                               f"cannot switch to {profile.name!r} (start a new process)")
        return _active
    if "torch" in sys.modules:
        raise ProfileError("torch was imported before the numeric profile was applied; "
                           "import shared.core.numeric and call activate() first")
    for key, value in profile.environment().items():
        if value:
            os.environ[key] = value
        else:
            os.environ.pop(key, None)
    import torch  # noqa: E402  (the whole point: only after the environment is pinned)

    torch.set_num_threads(profile.threads)
    torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_float32_matmul_precision("highest")
    torch.backends.mkldnn.enabled = False
    got = torch.backends.cpu.get_cpu_capability().lower()
    if got != profile.cpu_capability:
        raise ProfileError(f"numeric profile {profile.name!r} needs CPU capability "
                           f"{profile.cpu_capability!r} but torch runs {got!r} on this CPU")
    _active = profile
    return profile


def active() -> NumericProfile:
    """The profile in force, activating the default one if nobody chose."""
    return _active if _active is not None else activate()
