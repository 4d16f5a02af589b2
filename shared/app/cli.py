"""What both command lines need: one-line errors, a progress bar, endpoints and keys.

Files are in files.py, the shared options in options.py.

Torch-free on purpose: the CLIs must parse options and pick the numeric profile before torch
is imported.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable

from protocol.security import CurveKeys, KeyFileError, generate
from ..core.errors import MarslinkError, UsageError


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the same clean path runs: ERROR frame to the peer, no output."""


def _on_sigterm(signum, frame):
    # Later SIGTERMs are absorbed: coreutils `timeout` signals its child and then the child's whole
    # group, so one request often arrives twice, and the clean path is short (SIGKILL still works).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    raise Terminated("stopped (SIGTERM)")


def run_main(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command body; every expected failure becomes one line on stderr and exit code 2.

    SIGINT and SIGTERM stop it cleanly: 130 / 143, one line, nothing half-written."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return body() or 0
    except MarslinkError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    except Terminated:
        print(f"{prog}: stopped (SIGTERM); no output was written", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; no output was written", file=sys.stderr)
        return 130
    except BrokenPipeError:                 # e.g. `... --display json | head`: the reader left
        _drop_stdout()
        print(f"{prog}: error: standard output was closed by its reader (broken pipe); stopped", file=sys.stderr)
        return 2
    except OSError as e:    # a safety net: the file helpers turn the expected ones into StorageError
        where = f" ({e.filename!r})" if e.filename else ""
        print(f"{prog}: error: {e.strerror or e}{where}; check the path and the device, then run again",
              file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that Python's final flush does not print a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, AttributeError, ValueError):
        pass


PROGRESS_LINE = "{label}: {done:,} / {total:,} B ({percent:.1f}%){bpb}, {rate:,.0f} B/s, {left} left"


@contextmanager
def progress(label: str, total: int, enabled: bool = True, every: float | None = None):
    """Progress on stderr, yielding update(done_bytes, bits): a rich bar on a terminal; elsewhere
    (a log, a pipe, `make bench`) one plain PROGRESS_LINE every `every` seconds if asked, since
    an hour-long `strong` run with no sign of life is indistinguishable from a hung one."""
    if not enabled or total == 0 or (not sys.stderr.isatty() and not every):
        yield lambda done, bits=None: None
        return
    if not sys.stderr.isatty():
        started = last = time.monotonic()

        def line(done: int, bits: float | None = None):
            nonlocal last
            now = time.monotonic()
            if now - last >= every or done >= total:
                last = now
                rate = done / (now - started) if now > started else 0.0
                left = (total - done) / rate if rate > 0 else 0.0
                print(PROGRESS_LINE.format(label=label, done=done, total=total, percent=100.0 * done / total,
                                           bpb=f", {bits / done:.3f} bits/byte" if bits is not None and done else "",
                                           rate=rate, left=f"{int(left) // 3600}:{int(left) % 3600 // 60:02d}:{int(left) % 60:02d}"),
                      file=sys.stderr, flush=True)
        yield line
        return
    # start-up: rich loads only for a terminal
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn, TransferSpeedColumn)
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


def is_loopback(host: str) -> bool:
    """'localhost', or an IP literal in 127.0.0.0/8 or ::1. Not a prefix test: '127.0.0.1.evil.org'
    and 'localhost.evil.org' are names that may resolve anywhere."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host[1:-1] if host[:1] == "[" and host[-1:] == "]" else host).is_loopback
    except ValueError:
        return False


def check_endpoint(endpoint: str, insecure: bool, role: str, encrypted: bool = False) -> str:
    """ZeroMQ endpoint sanity, and: plain text never leaves this machine without --insecure.

    encrypted: the link uses CURVE (keys loaded), so any address is fine."""
    if not endpoint.isprintable():
        raise UsageError(f"endpoint {endpoint!r} contains control characters")
    if "://" not in endpoint:
        raise UsageError(f"endpoint {endpoint!r} needs a transport, e.g. tcp://127.0.0.1:5555")
    transport, rest = endpoint.split("://", 1)
    if transport == "ipc":
        return endpoint
    if transport != "tcp":
        raise UsageError(f"endpoint {endpoint!r}: only tcp:// and ipc:// are supported")
    host, _, port = rest.rpartition(":")
    numeric = port.isascii() and port.isdigit() and len(port) <= 5 and int(port) <= 65535
    if not host or not (numeric or (port == "*" and role == "bind")):
        raise UsageError(f"endpoint {endpoint!r} needs host:port (port 0-65535), e.g. tcp://127.0.0.1:5555")
    if not (insecure or encrypted) and not is_loopback(host):
        keys = "--curve-secret and --server-key" if role == "connect" else "--curve-secret and --allow"
        raise UsageError(f"{endpoint} is not a loopback address and this link is unencrypted; "
                         f"encrypt it with {keys} (keys from 'keygen'), "
                         f"or add --insecure to send plain text over a network")
    return endpoint


def curve_keys(role: str, secret: str | None, other: str | None):
    """CurveKeys from --curve-secret plus --server-key (role 'connect') or --allow ('bind');
    None (plain text) when neither is given."""
    flag = "--server-key" if role == "connect" else "--allow"
    if secret is None and other is None:
        return None
    if secret is None or other is None:
        raise UsageError(f"encryption needs both --curve-secret and {flag}; "
                         f"{'--curve-secret' if secret is None else flag} is missing")
    try:
        return CurveKeys.client(secret, other) if role == "connect" else CurveKeys.server(secret, other)
    except KeyFileError as e:
        raise UsageError(str(e)) from None


def keygen_command(prog: str, folder: str, name: str) -> int:
    """Write NAME.key / NAME.key_secret into folder and say what goes where."""
    try:
        public, secret = generate(folder, name)
    except KeyFileError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"cannot write keys into {folder!r}: {e.strerror}") from None
    use = ("Earth passes it as --server-key" if prog == "bob" else "Mars copies it into its --allow folder")
    print(f"{prog}: wrote {public} (public: {use}) and {secret} (secret, mode 0600: "
          f"stays here, for --curve-secret)", file=sys.stderr)
    return 0
