"""Helpers every test file may use: real processes over loopback, link settings for fast
in-process tests, a coder that passes tokens through. Test modules import from here only."""
from __future__ import annotations

import atexit
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from protocol.frames import Data, Hello
from protocol.link import LinkSettings
from scripts.common import ROOT, child_env, free_endpoint, free_port, peak_rss  # noqa: F401  (for the tests)
from shared.core.engine import Twin


def run_cli(*args, env=None, input_bytes=None, timeout=300):
    """Run `python -m sender|receiver ...` as a separate OS process, to the end."""
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=child_env(**(env or {})), input=input_bytes,
                          capture_output=True, timeout=timeout)


# -- the link in one process ---------------------------------------------------------------------

SHA = bytes(range(32))
FAST = dict(heartbeat_s=0.05, retransmit_s=0.1, timeout_s=1.0, handshake_timeout_s=3.0, linger_ms=100)


def settings(**kw) -> LinkSettings:
    return LinkSettings(**{**FAST, **kw})


def hello(stream_id: str = "s1") -> Hello:
    return Hello(stream_id, {"n_layer": 2}, {"torch": "x"}, 1000, SHA)


def data(seq: int) -> Data:
    return Data(seq, seq * 4, seq * 4 + 4, seq * 10, f"payload-{seq}".encode())


class Background(threading.Thread):
    """Run fn in a thread; .result() re-raises its exception here."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.value, self.error = fn, None, None
        self.start()

    def run(self):
        try:
            self.value = self.fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            self.error = e

    def result(self, timeout: float = 10.0):
        self.join(timeout)
        assert not self.is_alive(), "background side hung"
        if self.error is not None:
            raise self.error
        return self.value


# -- two real processes ----------------------------------------------------------------------------

CACHE = tempfile.mkdtemp(prefix="marslink-test-cache-")   # the children's XDG_CACHE_HOME: their checkpoints and spools
atexit.register(shutil.rmtree, CACHE, ignore_errors=True)   # one per test process: none is left in /tmp


def sigint_at_default():
    """A child's preexec_fn: SIGINT at its default. An ignored SIGINT is inherited (a suite run in
    the background of a non-interactive shell has it), and then the child's Python never turns
    Ctrl-C into KeyboardInterrupt (seen under the full suite: a Bob that outlived SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(*args, prelude=None, env=None):
    """`python -m args...`; with `prelude`, that Python code runs first in the same process; `env`
    adds to the environment."""
    env = child_env(XDG_CACHE_HOME=CACHE, **(env or {}))   # Earth's resume checkpoints stay out of ~/.cache
    cmd = [sys.executable, "-m", *args] if prelude is None else \
        [sys.executable, "-c", f"{prelude}; import runpy; runpy.run_module({args[0]!r}, run_name='__main__', "
                               f"alter_sys=True)", *args[1:]]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=sigint_at_default)


def run_pair(tmp_path, data: bytes, bob_first=True, alice_args=(), bob_args=(), timeout=300, env=None):
    src, out = tmp_path / "in.bin", tmp_path / "out.bin"
    src.write_bytes(data)
    ep = free_endpoint()
    bob_cmd = ["receiver", "listen", "--bind", ep, "--out", str(out), "--stats-json", str(tmp_path / "bob.json"),
               "--preset", "tiny", "--timeout", "20", *bob_args]
    alice_cmd = ["sender", "send", str(src), "--connect", ep, "--stats-json", str(tmp_path / "alice.json"),
                 "--preset", "tiny", "--timeout", "20", *alice_args]
    first, second = (bob_cmd, alice_cmd) if bob_first else (alice_cmd, bob_cmd)
    p1 = spawn(*first, env=env)
    time.sleep(1.0)
    p2 = spawn(*second, env=env)
    o2, e2 = p2.communicate(timeout=timeout)
    o1, e1 = p1.communicate(timeout=timeout)
    bob, alice = ((p1, e1), (p2, e2)) if bob_first else ((p2, e2), (p1, e1))
    return {"bob_rc": bob[0].returncode, "bob_err": bob[1].decode(), "alice_rc": alice[0].returncode,
            "alice_err": alice[1].decode(), "out": out, "dir": tmp_path}


def stats(result, who):
    return json.loads((result["dir"] / f"{who}.json").read_text())


def assert_verified(result, data):
    assert result["bob_rc"] == 0, result["bob_err"]
    assert result["alice_rc"] == 0, result["alice_err"]
    assert result["out"].read_bytes() == data
    a, b = stats(result, "alice"), stats(result, "bob")
    assert a["final_digest"] == b["final_digest"]
    assert b["syncs_checked"] >= 2
    return a, b


# -- the twin without the coder --------------------------------------------------------------------

class PassThrough:
    """A coder that hands Alice's tokens through: the twin's computation without the bits."""
    stored = False
    def begin_chunk(self): pass
    def end_chunk(self): pass
    def code(self, cdf, symbols): return symbols
    def code_bits(self, p16, bits, symbols, cost): pass


def run_twin(config, data, steps=None) -> Twin:
    twin = Twin(config, len(data), data)
    for _ in range(twin.n_steps if steps is None else steps):
        twin.advance(PassThrough())
    return twin


# -- outputs and file systems (issue 19: one-line write errors, full disks, --force) ---------------

def run_cli_with(*args, prefix=(), input_bytes=None, timeout=300, **popen):
    """run_cli with extra subprocess options: umask=, stdout= and stderr= (a file: a full disk on
    stdout), and a command `prefix` (e.g. setpriv, to drop root's right to ignore permissions)."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.run([*prefix, sys.executable, "-m", *args], cwd=ROOT, env=child_env(), input=input_bytes,
                          timeout=timeout, **popen)


def made_once(tmp_path_factory, text: bytes, *args: str, stats: bool = False) -> Path:
    """`text` compressed once through the CLI (tiny preset, then `args`) in a folder of its own:
    in.txt, c.mrs, the command's stderr in stderr.txt and, with `stats`, stats.json. For a
    module fixture: its tests copy from the folder, never change it."""
    d = tmp_path_factory.mktemp("made")
    (d / "in.txt").write_bytes(text)
    r = run_cli("sender", "compress", str(d / "in.txt"), str(d / "c.mrs"), "--preset", "tiny", *args,
                *(("--stats-json", str(d / "stats.json")) if stats else ()))
    assert r.returncode == 0, r.stderr.decode()
    (d / "stderr.txt").write_bytes(r.stderr)
    return d


NO_ROOT_BYPASS = ("setpriv", "--bounding-set=-dac_override,-dac_read_search",
                  "--inh-caps=-dac_override,-dac_read_search", "--")


def run_as_a_user(*args, **kw):
    """run_cli_with as an ordinary user meets permissions: root ignores them, so setpriv takes
    that right away. Skipped, with the reason, where setpriv is missing or cannot drop it."""
    if not shutil.which("setpriv"):
        pytest.skip("no setpriv here: needed to run without root's right to ignore permissions")
    r = run_cli_with(*args, prefix=NO_ROOT_BYPASS, **kw)
    if r.returncode == 1 and b"setpriv" in r.stderr:
        pytest.skip(f"setpriv cannot drop capabilities here: {r.stderr.decode().strip()}")
    return r


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def expect_error(r, message, folder=None, before=None, code=2):
    """Exit `code`, stderr exactly the one line `message`; with `folder`, its listing is still
    `before` (nothing written, no temporary file left)."""
    assert r.returncode == code, r.stderr.decode()
    assert r.stderr.decode().strip() == message
    if folder is not None:
        assert leftovers(folder) == before


@contextmanager
def tmpfs(path, size="1m", read_only=False):
    """A small tmpfs mounted at `path` for the test (the suite runs as root); the test is
    skipped, with the reason, where this machine does not allow mounting."""
    path.mkdir(exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    with _mounted(["-t", "tmpfs", "-o", options, "tmpfs", str(path)], "a small tmpfs", "the full-disk tests"):
        yield path


@contextmanager
def bind_mount(source, target):
    """The file `source` mounted on the file `target` for the test, or the test skipped, as `tmpfs`."""
    with _mounted(["--bind", str(source), str(target)], "a file on another", "the mount-point tests"):
        yield target


@contextmanager
def _mounted(arguments, what, tests):
    """`mount ARGUMENTS` for the test, `umount -l` after it; skipped with the reason where this
    machine does not allow mounting."""
    try:
        r = subprocess.run(["mount", *arguments], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.skip(f"no 'mount' command here: {tests} need to mount {what}")
    if r.returncode != 0:
        pytest.skip(f"cannot mount {what} here ({r.stderr.strip() or 'not root?'}): {tests} need root in a "
                    f"machine or container that allows mounts")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", arguments[-1]], capture_output=True, timeout=30)


def fill(folder, name="filler") -> None:
    """Fill the file system under `folder` to the last byte."""
    with open(folder / name, "wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(4096))
        except OSError as e:
            assert e.errno == errno.ENOSPC, e


# -- the live link, one side at a time (issue 19: watch, kills, receipts) --------------------------

def listen(tmp_path, *args, out_name="out.bin"):
    """Start a tiny-preset Bob on a fresh loopback endpoint; returns (process, endpoint, out path)."""
    ep, out = free_endpoint(), tmp_path / out_name
    bob = spawn("receiver", "listen", "--bind", ep, "--out", str(out), "--preset", "tiny", "--timeout", "20",
                "--stats-json", str(tmp_path / "bob.json"), *args)
    return bob, ep, out


def send(tmp_path, endpoint, data: bytes, *args, name="in.bin", timeout=300, prelude=None):
    """Run a tiny-preset Alice to the end (after `prelude`, see spawn); returns (exit code,
    stderr lines)."""
    src = tmp_path / name
    src.write_bytes(data)
    alice = spawn("sender", "send", str(src), "--connect", endpoint, "--preset", "tiny", "--timeout", "20",
                  "--stats-json", str(tmp_path / "alice.json"), *args, prelude=prelude)
    _, err = alice.communicate(timeout=timeout)
    return alice.returncode, err.decode().strip().splitlines()


def finish(proc, timeout=120):
    """Wait for a spawned process; returns (exit code, stderr lines)."""
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err.decode().strip().splitlines()


def send_to(bob, tmp_path, endpoint, data: bytes, *args):
    """One Alice run (send) against a spawned Bob, then Bob's end (finish); Bob is killed if
    anything fails. Returns ((alice's code, lines), (Bob's code, lines))."""
    try:
        alice = send(tmp_path, endpoint, data, *args)
        return alice, finish(bob)
    finally:
        if bob.poll() is None:
            bob.kill()


# -- segments, worker processes and a Dask cluster on loopback (issue 24) ---------------------------

def tagged_processes(tag: str) -> list[int]:
    """Processes still alive whose environment holds MARSLINK_TEST_TAG=tag: a command and
    every worker it started inherit it, so none may be left once the command has ended."""
    needle = f"MARSLINK_TEST_TAG={tag}".encode()
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    with open(f"/proc/{entry}/stat") as s:
                        if s.read().rsplit(")", 1)[1].split()[0] != "Z":   # a zombie has ended
                            alive.append(int(entry))
        except OSError:
            continue
    return alive


DASK = str(Path(sys.executable).parent / "dask")


def dask_scheduler(log_dir) -> tuple[subprocess.Popen, str]:
    """A real `dask scheduler` on a free loopback port, answering when this returns."""
    port = free_port()
    proc = subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard",
                             "--no-show"], cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL,
                            stderr=open(log_dir / f"scheduler-{port}.log", "wb"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dask scheduler exited: {(log_dir / f'scheduler-{port}.log').read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"tcp://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("dask scheduler did not listen within 60 s")


def dask_worker(address: str, log_dir, name: str, *args, **env) -> subprocess.Popen:
    """A real `dask worker` (one thread, no nanny: a killed worker stays dead) for `address`."""
    return subprocess.Popen([DASK, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                             "--name", name, *args], cwd=ROOT, env=child_env(**env), stdout=subprocess.DEVNULL,
                            stderr=open(log_dir / f"worker-{name}.log", "wb"))


def kill_all(*procs: subprocess.Popen) -> None:
    """SIGKILL and reap: nothing of a test outlives it."""
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait(30)


def wait_for_spool(bob, folder, size: int, out_name: str = "out.bin", timeout: float = 120) -> None:
    """Until Bob's partial stream for `out_name` in `folder` holds at least `size` coded bytes:
    he is mid-stream, and a test may now stop, pause or disturb him."""
    spool = Path(folder) / f"{out_name}.partial" / "stream.bin"
    deadline = time.monotonic() + timeout
    while not (spool.exists() and spool.stat().st_size >= size):
        assert bob.poll() is None, f"Bob ended (rc {bob.returncode}) before his stream held {size} bytes"
        assert time.monotonic() < deadline, f"Bob's stream did not reach {size} bytes in {timeout} s"
        time.sleep(0.01)


def wait_for_line(proc, start: str, timeout: float = 120) -> str:
    """Read `proc`'s stderr until a line beginning with `start` (e.g. Bob's 'bob: listening on');
    the lines before it are dropped. Fails if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode()
        if line.startswith(start):
            return line.rstrip("\n")
        assert line, f"the process ended (rc {proc.wait()}) before printing {start!r}"
    raise AssertionError(f"no line {start!r} within {timeout} s")
