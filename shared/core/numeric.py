"""The numeric profile: the process settings around the twins' arithmetic.

Arithmetic decoding fails *silently* if the receiver's probabilities differ from the
sender's by a single rounding step (docs/determinism.md). Every bit that matters is computed
by exact.py and portable.py from IEEE basic operations in a fixed order (docs/portability.md),
so neither the CPU's vector unit (SSE, AVX2, AVX-512, NEON, SVE), nor MKL's code branch, nor
oneDNN, nor the thread count decides one. `activate()` still pins threads and dynamic
threading before torch is imported (hygiene: fewer surprises, steadier timing); it no longer
pins or requires a CPU capability, so marslink starts on any CPU torch supports.

Torch-free, and `activate()` loads no torch either: `pinned.py` is the one module that calls
`active()`, imports torch and applies torch's own settings (`configure`). So a process that
never runs a twin (the parent of `--jobs` workers) never pays torch's seconds of start-up.
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
    """Process settings. None of them changes a bit any more (the arithmetic is portable); the
    two sides may differ in all of them."""
    name: str
    mkl_cbwr: str            # MKL conditional numerical reproducibility branch ("" = MKL decides)
    threads: int = 1         # intra-op threads; inter-op is always 1

    def environment(self) -> dict[str, str]:
        n = str(self.threads)
        env = {
            "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
            "MKL_DYNAMIC": "FALSE", "OMP_DYNAMIC": "FALSE",
            "MKL_CBWR": self.mkl_cbwr,
        }
        return env


PROFILES = {
    # Portable: the default. MKL computes only exact fixed-point sums (exact.py), so its branch
    # cannot change a bit; AUTO is its fastest. torch chooses its own kernel level.
    "portable": NumericProfile("portable", "AUTO"),
    # Native: MKL left entirely alone. The same bits as portable (tests/test_determinism.py).
    "native": NumericProfile("native", ""),
}
DEFAULT_PROFILE = "portable"

_active: NumericProfile | None = None


def resolve(profile: NumericProfile | str | None = None, threads: int | None = None) -> NumericProfile:
    """A profile by name (default: $MARSLINK_PROFILE or 'portable'), optionally with other threads."""
    from_env = profile is None
    if from_env:
        profile = os.environ.get("MARSLINK_PROFILE", DEFAULT_PROFILE)
    if isinstance(profile, str):
        if profile not in PROFILES and from_env:
            raise ProfileError(f"the environment variable MARSLINK_PROFILE={profile!r} names no numeric profile; "
                               f"set it to one of {', '.join(PROFILES)}, or unset it")
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
    _active = profile
    return profile


def configure(torch) -> None:
    """torch's own settings for the active profile, right after torch is imported (pinned.py)."""
    profile = active()
    torch.set_num_threads(profile.threads)
    torch.set_num_interop_threads(1)
    # torch.use_deterministic_algorithms(True) less its import of torch._inductor (2 s per process):
    # the flag is the same; the inductor's copy only matters to torch.compile, never used here
    torch._C._set_deterministic_algorithms(True)
    torch.set_float32_matmul_precision("highest")
    torch.backends.mkldnn.enabled = False


def active() -> NumericProfile:
    """The profile in force, activating the default one if nobody chose."""
    return _active if _active is not None else activate()
