"""What both command lines need: careful file I/O, one-line errors, a progress bar.

Torch-free on purpose: the CLIs must parse options and pick the numeric profile before torch
is imported.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Callable

from .errors import MarslinkError, UsageError


def read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise UsageError(f"input file {path!r} not found; check the path") from None
    except IsADirectoryError:
        raise UsageError(f"input {path!r} is a folder, not a file") from None
    except PermissionError:
        raise UsageError(f"input file {path!r} is not readable (permission denied)") from None
    except OSError as e:
        raise UsageError(f"cannot read {path!r}: {e.strerror}") from None


def check_output(path: str, input_path: str | None = None) -> None:
    """Fail before any work if the output cannot be written, rather than after an hour of it."""
    if path == "-":
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"output folder {folder!r} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"output folder {folder!r} is not writable")
    if os.path.isdir(path):
        raise UsageError(f"output {path!r} is a folder; give a file name")
    if input_path not in (None, "-") and os.path.exists(path) and os.path.samefile(path, input_path):
        raise UsageError("output would overwrite the input; choose another output name")


def write_atomic(path: str, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: never a half-written output."""
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".partial", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_stats(path: str | None, stats: dict) -> None:
    if path:
        check_output(path)
        write_atomic(path, (json.dumps(stats, indent=2, sort_keys=True) + "\n").encode())


def run_main(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command body; every expected failure becomes one line on stderr and exit code 2."""
    try:
        return body() or 0
    except MarslinkError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; no output was written", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


@contextmanager
def progress(label: str, total: int, enabled: bool = True):
    """A rich progress bar on stderr (only on a terminal). Yields update(done_bytes, bits)."""
    if not enabled or not sys.stderr.isatty() or total == 0:
        yield lambda done, bits=None: None
        return
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn, TransferSpeedColumn)
    from rich.console import Console
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TextColumn("{task.fields[bpb]}"), TimeElapsedColumn(),
               TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total, bpb="")
        last = [0.0]

        def update(done: int, bits: float | None = None):
            now = time.monotonic()
            if now - last[0] > 0.1 or done >= total:
                last[0] = now
                bpb = f"{bits / done:.3f} bits/byte" if bits is not None and done else ""
                bar.update(task, completed=done, bpb=bpb)
        yield update


LOOPBACK_HOSTS = ("127.", "localhost", "[::1]", "::1")


def check_endpoint(endpoint: str, insecure: bool, role: str) -> str:
    """ZeroMQ endpoint sanity, and: plain text never leaves this machine without --insecure."""
    if "://" not in endpoint:
        raise UsageError(f"endpoint {endpoint!r} needs a transport, e.g. tcp://127.0.0.1:5555")
    transport, rest = endpoint.split("://", 1)
    if transport == "ipc":
        return endpoint
    if transport != "tcp":
        raise UsageError(f"endpoint {endpoint!r}: only tcp:// and ipc:// are supported")
    host, _, port = rest.rpartition(":")
    if not host or not (port.isdigit() or (port == "*" and role == "bind")):
        raise UsageError(f"endpoint {endpoint!r} needs host:port, e.g. tcp://127.0.0.1:5555")
    if not insecure and not host.startswith(LOOPBACK_HOSTS):
        raise UsageError(f"{endpoint} is not a loopback address and this link is unencrypted; "
                         f"add --insecure to send plain text over a network")
    return endpoint
