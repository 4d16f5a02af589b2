"""What both command lines need: one-line errors, a progress bar, endpoints and keys.

Files are in files.py, the shared options in options.py.

Torch-free on purpose: the CLIs must parse options and pick the numeric profile before torch
is imported.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import shlex
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable

from protocol.link import ipc_problem
from protocol.security import CurveKeys, KeyFileError, generate, new_code
from ..core.errors import MarslinkError, UsageError
from . import files
from .entry import deferred as _deferred, on_interrupt as _on_interrupt
from .files import WHY, drop_stdout, escape_what_cannot_be_shown, shown, storage_error


class StderrWithoutReader:
    """stderr that outlives its reader (`alice ... 2>&1 >out | head -1`): once the pipe breaks,
    what is left to say goes to /dev/null and the run goes on, as it does when started with
    stderr closed (2>&-). Losing the progress lines is no reason to lose the work. A file name
    that is not text in the locale's encoding (Python holds each such byte as a surrogate) is
    shown with those bytes as \\xNN, not as '\\udcNN', which names no file a user can find."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        text = shown(text)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self) -> None:
        try:                                # the descriptor too: Python's last flush at exit goes there
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, AttributeError, ValueError):
            pass
        self._stream = open(os.devnull, "w")

    def __getattr__(self, name):            # isatty, fileno, encoding...: the stream's own
        return getattr(self._stream, name)


class Terminated(KeyboardInterrupt):
    """SIGTERM, SIGHUP (the terminal closed) or SIGQUIT, raised like Ctrl-C so the same clean path
    runs: ERROR frame to the peer, locks released, no output. `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(f"stopped ({signal.Signals(signum).name})")
        self.signum = signum


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGQUIT") if hasattr(signal, name))


def _on_stop_signal(signum, frame):
    # Later stop signals are absorbed: coreutils `timeout` signals its child and then the child's
    # whole group, so one request often arrives twice, and the clean path is short (SIGKILL still works).
    if _deferred(signum, frame):
        return
    for s in STOP_SIGNALS:
        signal.signal(s, lambda signum, frame: None)
    raise Terminated(signum)


def run_main(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command body; every expected failure becomes one line on stderr and exit code 2.

    SIGINT, SIGTERM, SIGHUP and SIGQUIT stop it cleanly: 128 + the signal's number, one line,
    nothing half-written."""
    previous = {}
    files.SPEAKER = prog
    escape_what_cannot_be_shown()
    if sys.stderr is None:                  # started with stderr closed (2>&-): run, silently, as asked
        sys.stderr = open(os.devnull, "w")
    elif not isinstance(sys.stderr, StderrWithoutReader):
        sys.stderr = StderrWithoutReader(sys.stderr)
    if _cwd_gone():                         # torch would abort loading its libraries, in several lines
        print(f"{prog}: error: the current folder no longer exists; change to a folder that exists and run again",
              file=sys.stderr)
        return 2
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, _on_stop_signal) for s in STOP_SIGNALS}
        if signal.getsignal(signal.SIGINT) in (signal.default_int_handler, _on_interrupt):   # not where it is ignored
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, _on_interrupt)
    try:
        return body() or 0
    except MarslinkError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    except Terminated as e:
        print(f"{prog}: {e}; {_left_behind(e)}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt as e:
        print(f"{prog}: interrupted; {_left_behind(e)}", file=sys.stderr)
        return 130
    except BrokenPipeError:                 # e.g. `... --display json | head`: the reader left
        drop_stdout()
        print(f"{prog}: error: standard output was closed by its reader (broken pipe); stopped", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{prog}: error: {OUT_OF_MEMORY}", file=sys.stderr)
        return 2
    except OSError as e:    # a safety net: the file helpers turn the expected ones into StorageError
        print(f"{prog}: error: {_os_error_line(e)}", file=sys.stderr)
        return 2
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


OUT_OF_MEMORY = "{}; {}, then run again".format(*WHY[errno.ENOMEM])


def _os_error_line(e: OSError) -> str:
    """The safety net's line for an OSError no file helper expected: the reason and what to do,
    in files.WHY's words where it has them."""
    if "failed to map segment" in str(e):     # a shared library under ulimit -v (no errno of its own)
        return OUT_OF_MEMORY
    if _cwd_gone():
        return "the current folder was removed; nothing was written; change to a folder that exists and run again"
    where = f" ({e.filename!r})" if e.filename else ""
    reason, advice = WHY.get(e.errno, (e.strerror or str(e), "check the path and the device"))
    return f"{reason}{where}; {advice}, then run again"


def _cwd_gone() -> bool:
    try:
        os.getcwd()
        return False
    except OSError:
        return True


def _left_behind(stop: KeyboardInterrupt) -> str:
    """What a stop left: nothing, unless the command marked the interrupt (`written`) because its
    output was already written and verified when it came."""
    return getattr(stop, "written", None) or "no output was written"


PROGRESS_LINE = "{label}: {done:,} / {total:,} B ({percent:.1f}%){note}{bpb}, {rate:,.0f} B/s, {left} left"


@contextmanager
def progress(label: str, total: int, enabled: bool = True, every: float | None = None):
    """Progress on stderr, yielding update(done_bytes, bits, note): a rich bar on a terminal;
    elsewhere (a log, a pipe, `make bench`) one plain PROGRESS_LINE every `every` seconds if asked,
    since an hour-long `strong` run with no sign of life is indistinguishable from a hung one.
    `note` is shown beside the bytes (segmented runs: "3/8 segments")."""
    if not enabled or total == 0 or (not sys.stderr.isatty() and not every):
        yield lambda done, bits=None, note="": None
        return
    if not sys.stderr.isatty():
        started = last = time.monotonic()

        def line(done: int, bits: float | None = None, note: str = ""):
            nonlocal last
            now = time.monotonic()
            if now - last >= every or done >= total:
                last = now
                rate = done / (now - started) if now > started else 0.0
                left = (total - done) / rate if rate > 0 else 0.0
                print(PROGRESS_LINE.format(label=label, done=done, total=total, percent=100.0 * done / total,
                                           note=f", {note}" if note else "",
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
               TransferSpeedColumn(), TextColumn("{task.fields[note]}"), TextColumn("{task.fields[bpb]}"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total, bpb="", note="")
        last = [0.0]

        def update(done: int, bits: float | None = None, note: str = ""):
            now = time.monotonic()
            if now - last[0] > 0.1 or done >= total:
                last[0] = now
                bpb = f"{bits / done:.3f} bits/byte" if bits is not None and done else ""
                bar.update(task, completed=done, bpb=bpb, note=note)
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
        problem = ipc_problem(endpoint, role)
        if problem:
            raise UsageError(f"endpoint {endpoint!r}: {problem}")
        return endpoint
    if transport != "tcp":
        raise UsageError(f"endpoint {endpoint!r}: only tcp:// and ipc:// are supported")
    host, _, port = rest.rpartition(":")
    numeric = port.isascii() and port.isdigit() and len(port) <= 5 and int(port) <= 65535
    bracketed = host[:1] == "[" or host[-1:] == "]"
    if (not host or not (numeric or (port == "*" and role == "bind"))
            or (bracketed and not (host[:1] == "[" and host[-1:] == "]" and _is_ip(host[1:-1])))):
        raise UsageError(f"endpoint {endpoint!r} needs host:port (port 0-65535), e.g. tcp://127.0.0.1:5555")
    if role == "connect":
        problem = unresolved(host)
        if problem:
            raise UsageError(f"endpoint {endpoint!r}: {problem}")
    if role == "connect" and numeric and int(port) == 0:
        raise UsageError(f"endpoint {endpoint!r}: port 0 is only for listening (the system picks a port); "
                         f"connect to the port Mars listens on, e.g. tcp://127.0.0.1:5555")
    if not (insecure or encrypted) and not is_loopback(host):
        keys = "--curve-secret and --server-key" if role == "connect" else "--curve-secret and --allow"
        raise UsageError(f"{endpoint} is not a loopback address and this link is unencrypted; "
                         f"encrypt it with {keys} (keys from 'keygen'), "
                         f"or add --insecure to send plain text over a network")
    return endpoint


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def unresolved(host: str) -> str | None:
    """Why `host` (of an endpoint to connect to) names no machine, or None: said at once, where
    zmq would retry a name that never resolves in silence until the handshake's timeout."""
    name = host[1:-1] if host[:1] == "[" and host[-1:] == "]" else host
    if _is_ip(name):
        return None
    try:
        socket.getaddrinfo(name, None)
    except (socket.gaierror, UnicodeError) as e:
        why = e.strerror if isinstance(e, socket.gaierror) else "not a valid host name"
        return f"cannot resolve host {name!r} ({why}); check the name"
    return None


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


def lan_keys(server_key_text: str | None, code: str | None, curve_secret: str | None,
             server_key: str | None):
    """Earth's CurveKeys from the line `bob listen --lan` printed (--server-key-text, --code);
    None when neither is given."""
    if server_key_text is None and code is None:
        return None
    if curve_secret is not None or server_key is not None:
        raise UsageError("--server-key-text and --code replace --curve-secret and --server-key; give one pair")
    if server_key_text is None or code is None:
        raise UsageError(f"the line 'bob listen --lan' prints has both --server-key-text and --code; "
                         f"{'--code' if code is None else '--server-key-text'} is missing")
    try:
        return CurveKeys.from_code(server_key_text, code)
    except KeyFileError as e:
        raise UsageError(str(e)) from None


def lan_address() -> str:
    """This machine's address as a neighbour reaches it: the source address of the route out
    (connecting a UDP socket sends nothing), else the host name's, else loopback."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))          # TEST-NET-1 (RFC 5737): only the route is looked up
            address = s.getsockname()[0]
    except OSError:
        try:
            address = socket.gethostbyname(socket.gethostname())
        except OSError:
            address = "127.0.0.1"
    return address if address != "0.0.0.0" else "127.0.0.1"


def lan_listen(state_dir: str, port: int, earth_options: list[str]) -> tuple[str, CurveKeys, str]:
    """`bob listen --lan`: the endpoint to bind (every interface), Mars's CURVE keys admitting
    one Earth, and the one line that Earth types, FILE standing for the file."""
    key_dir = os.path.join(state_dir, "keys")
    code = new_code()
    try:
        keys = CurveKeys.lan_server(key_dir, code)
    except KeyFileError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise storage_error("Mars's keys into ", key_dir, e) from None
    # key=value: a Z85 key may begin with "-", which argparse would take for an option
    line = shlex.join(["alice", "send", "FILE", "--connect", f"tcp://{lan_address()}:{port}",
                       f"--server-key-text={keys.public_key.decode('ascii')}", "--code", code, *earth_options])
    return f"tcp://*:{port}", keys, line


def keygen_command(prog: str, folder: str, name: str) -> int:
    """Write NAME.key / NAME.key_secret into folder and say what goes where."""
    try:
        public, secret = generate(folder, name)
    except KeyFileError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise storage_error("keys into ", folder, e) from None
    use = ("Earth passes it as --server-key" if prog == "bob" else "Mars copies it into its --allow folder")
    print(f"{prog}: wrote {public} (public: {use}) and {secret} (secret, mode 0600: "
          f"stays here, for --curve-secret)", file=sys.stderr)
    return 0
