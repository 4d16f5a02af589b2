"""The core's one door to torch: pin the numeric profile first, then load and configure torch.

Thread counts and the kernel dispatch level are read by torch once, at import, so every core
module takes `torch` from here (`from .pinned import torch`) and none imports it directly.
"""
from . import numeric
from .errors import ProfileError

numeric.active()

try:
    import torch  # noqa: E402  (only after the profile is pinned)
except (ImportError, OSError) as e:     # a shared library that cannot be mapped: most often a memory limit
    raise ProfileError(f"cannot load torch ({str(e).strip()[:160]}); if a memory limit is set (ulimit -v), "
                       f"raise it, else reinstall with 'make setup'") from None

numeric.configure(torch)

__all__ = ["torch"]
