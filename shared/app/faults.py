"""Fault injection for tests of the live link, wired to hidden CLI options (--fault-kill-step)."""
from __future__ import annotations

import os
import signal
from typing import Callable, Optional


def kill_at(step: Optional[int], on_step: Callable) -> Callable:
    """on_step, but the process dies by SIGKILL (no cleanup at all, like a power cut) at the end of
    step `step`, after that step's bytes, checkpoint and acknowledgements went where they go."""
    if step is None:
        return on_step

    def call(twin, report, link):
        on_step(twin, report, link)
        if report.step == step:
            os.kill(os.getpid(), signal.SIGKILL)
    return call
