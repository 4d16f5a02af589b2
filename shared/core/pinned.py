"""The core's one door to torch: pin the numeric profile first, then load and configure torch.

Thread counts and the kernel dispatch level are read by torch once, at import, so every core
module takes `torch` from here (`from .pinned import torch`) and none imports it directly.
"""
from . import numeric

numeric.active()

import torch  # noqa: E402  (only after the profile is pinned)

numeric.configure(torch)

__all__ = ["torch"]
