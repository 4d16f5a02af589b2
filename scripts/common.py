"""What the scripts (demo, bench, soak) and the tests share: where the checkout is, a free
loopback endpoint, the environment a child alice/bob process gets, how a child is stopped, and
a process's own peak memory."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child `python -m sender|receiver`: no MARSLINK_* setting
    leaks in (the child's options decide), the checkout is importable, output is unbuffered."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARSLINK_")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


STOP_WAIT_S = 10.0      # how long a child may take to write its stats after SIGTERM


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM a child that is still running (the relay writes its --stats-json on the way out);
    SIGKILL it if it does not end within STOP_WAIT_S."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def peak_rss() -> int:
    """This process's peak resident memory in bytes. On Linux from /proc (VmHWM, the peak of this
    program's own memory), not from getrusage: a child started by a large parent (a pytest
    worker) inherits the parent's ru_maxrss through vfork and exec, so a 1.3 GB worker made a
    small child read 1.3 GB, and a growth measured from it read too little."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024     # macOS counts bytes, Linux KiB
