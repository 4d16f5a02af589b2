"""What the scripts (demo, bench, soak, ...) and the tests share: where the checkout is, a free
loopback endpoint, the environment a child alice/bob process gets, how a child is stopped, a
process's own peak memory, and the scripts' command-line checks (one-line errors, number types,
an --out folder, a reader that went away). Light on purpose: tests/test_limits.py measures the
memory of a child that imports it, so nothing heavy is imported at the top."""
from __future__ import annotations

import argparse
import math
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


# -- the scripts' command lines ----------------------------------------------------------------

class ScriptParser(argparse.ArgumentParser):
    """argparse with the CLIs' one-line errors (shared.app.options.Parser), under the script's
    own name as its other errors are: `soak: error: argument --mbytes: 'nan' is not a positive
    number; see 'python scripts/soak.py --help'`, exit 2. Plain argparse prints its usage first."""

    def __init__(self, name: str, **kw):
        super().__init__(prog=f"python scripts/{name}.py", **kw)
        self.name = name

    def error(self, message: str):
        self.exit(2, f"{self.name}: error: {message}; see '{self.prog} --help'\n")


def positive_number(text: str) -> float:
    """argparse type: a finite number above 0 (float() alone takes 'nan', 'inf' and '-5')."""
    from shared.app.options import decimal          # the CLIs' rule: ASCII, no underscores
    value = decimal(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a positive number")
    return value


def _whole(low: int, what: str):
    """argparse type: a whole number of at least `low` (int() alone takes '-100')."""
    def parse(text: str) -> int:
        from shared.app.options import whole          # the CLIs' rule: ASCII digits only
        value = whole(text)
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not {what}")
        return value
    parse.__name__ = what                      # argparse names the type in some messages
    return parse


count = _whole(0, "a count (a whole number, 0 or more)")
positive_count = _whole(1, "a positive count (a whole number, 1 or more)")


def out_folder(path: str, name: str) -> Path:
    """A script's --out folder, created if missing and probed for a new file before any work:
    a file of that name, /proc or a read-only disk is one line (SystemExit), not a traceback
    after the run."""
    from shared.app.files import check_folder          # not at the top: this module stays light
    from shared.core.errors import MarslinkError
    if os.path.exists(path) and not os.path.isdir(path):
        raise SystemExit(f"{name}: error: --out {path!r} is a file, not a folder; give a folder "
                         f"(it is created if missing)")
    try:
        check_folder(path, "--out folder ")
    except MarslinkError as e:
        raise SystemExit(f"{name}: error: {e}") from None
    return Path(path)
