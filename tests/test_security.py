"""Security and hardening: CurveZMQ keys, the allow-list, clear refusals, clean stops.

In-process link tests (threads, fast) cover every handshake outcome; a few two-process tests
show the same through the real command lines (tiny preset, small inputs, loopback only).
"""
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from protocol import security
from protocol.frames import Done, End, Welcome
from protocol.link import AliceLink, AuthFailed, BobLink, HandshakeTimeout
from shared.app.cli import check_endpoint, curve_keys, run_main
from shared.core.errors import UsageError
from shared.texts import mission_log
from tests.helpers import ROOT, expect_error, leftovers, run_cli, run_cli_with
from tests.helpers import SHA, Background, free_port, hello, settings


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """mars (the receiver), earth (allowed) and eve (not allowed); allow/ holds earth.key only."""
    root = tmp_path_factory.mktemp("keys")
    for name in ("mars", "earth", "eve"):
        security.generate(str(root / name), name)
    (root / "allow").mkdir()
    (root / "allow" / "earth.key").write_bytes((root / "earth" / "earth.key").read_bytes())
    return root


def server(keys):
    return security.CurveKeys.server(str(keys / "mars" / "mars.key_secret"), str(keys / "allow"))


def client(keys, who="earth", server_key="mars"):
    return security.CurveKeys.client(str(keys / who / f"{who}.key_secret"), str(keys / server_key / f"{server_key}.key"))


def public(keys, who) -> str:
    return security.load_public(str(keys / who / f"{who}.key")).decode()


# -- keys and options ---------------------------------------------------------------------------


def test_keygen_writes_a_private_secret_and_never_overwrites(tmp_path, capsys):
    from receiver.cli import main as bob
    from sender.cli import main as alice
    folder = tmp_path / "k"
    assert bob(["keygen", str(folder)]) == 0
    assert alice(["keygen", str(folder)]) == 0
    err = capsys.readouterr().err
    assert f"bob: wrote {folder}/mars.key (public: Earth passes it as --server-key)" in err
    assert f"alice: wrote {folder}/earth.key (public: Mars copies it into its --allow folder)" in err
    for name in ("mars", "earth"):
        assert stat.S_IMODE(os.stat(folder / f"{name}.key_secret").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(folder / f"{name}.key").st_mode) == 0o644
        pub, sec = security.load_secret(str(folder / f"{name}.key_secret"))
        assert security.load_public(str(folder / f"{name}.key")) == pub and len(sec) == 40
    before = (folder / "mars.key_secret").read_bytes()
    assert bob(["keygen", str(folder)]) == 2
    assert capsys.readouterr().err.strip() == (f"bob: error: {folder}/mars.key already exists; "
                                               f"choose another name or remove the old pair first")
    assert (folder / "mars.key_secret").read_bytes() == before


@pytest.mark.parametrize("taken", ["mars.key_secret", "mars.key"])
def test_keygen_never_writes_through_a_symbolic_link_nor_leaves_half_a_pair(tmp_path, taken):
    """Round seven: a link to nowhere at either key's name passed the "already exists" check, and
    keygen wrote the key through it, wherever it pointed (a secret key in someone else's file).
    Now it is refused in one line, nothing is created on either side of the link, and the
    pair is written whole (with its modes, whatever the umask) or not at all."""
    folder, elsewhere = tmp_path / "k", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    (folder / taken).symlink_to(elsewhere / "planted")
    r = run_cli("receiver", "keygen", str(folder), timeout=60)
    expect_error(r, f"bob: error: {folder}/{taken} already exists (a symbolic link, which keygen never writes "
                    f"through); choose another name or remove the old pair first", folder, [taken])
    assert leftovers(elsewhere) == [] and not (elsewhere / "planted").exists()
    (folder / taken).unlink()
    r = run_cli_with("receiver", "keygen", str(folder), umask=0o077, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    assert leftovers(folder) == ["mars.key", "mars.key_secret"]          # no draft folder left behind
    assert stat.S_IMODE(os.stat(folder / "mars.key").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(folder / "mars.key_secret").st_mode) == 0o600
    assert leftovers(elsewhere) == []


@pytest.mark.parametrize("args, name, what", [
    (["--name", "."], ".", "has '.', which is not allowed there"),
    (["--name=-x"], "-x", "has '-', which is not allowed there"),
    (["--name", "stéphane"], "stéphane", "has 'é', which is not allowed there"),
    (["--name", "a" * 65], "a" * 65, "is too long"),
    (["--name="], "", "is empty"),
])
def test_a_key_name_that_is_refused_says_which_character_and_why(tmp_path, args, name, what):
    """Round seven: `--name .` and `--name=-x` were refused as "must be letters, digits, '.', '_'
    or '-'", which both names are. Round eight: `stéphane` was refused as "must begin with a
    letter", which it does; the rule is ASCII, and the line names the character refused."""
    r = run_cli("sender", "keygen", str(tmp_path / "k"), *args, timeout=60)
    expect_error(r, f"alice: error: key name {name!r} {what}: a name begins with an ASCII letter or digit, then "
                    f"ASCII letters, digits, '.', '_' or '-' (at most 64 in all)", tmp_path, [])


def test_key_options_are_checked_before_any_work(keys, tmp_path):
    secret, mars = str(keys / "earth" / "earth.key_secret"), str(keys / "mars" / "mars.key")
    assert curve_keys("connect", None, None) is None
    with pytest.raises(UsageError, match="^encryption needs both --curve-secret and --server-key; "
                                         "--server-key is missing$"):
        curve_keys("connect", secret, None)
    with pytest.raises(UsageError, match="^encryption needs both --curve-secret and --allow; --curve-secret is missing$"):
        curve_keys("bind", None, str(keys / "allow"))
    with pytest.raises(UsageError, match="holds no secret key; pass the NAME.key_secret file, not NAME.key$"):
        curve_keys("connect", mars, mars)
    with pytest.raises(UsageError, match="not found or unreadable$"):
        curve_keys("connect", str(tmp_path / "nope.key_secret"), mars)
    leaky = tmp_path / "leaky.key_secret"
    leaky.write_bytes((keys / "earth" / "earth.key_secret").read_bytes())
    leaky.chmod(0o644)
    with pytest.raises(UsageError, match=rf"is accessible by other users \(mode 0644\); run: chmod 600 {leaky}$"):
        curve_keys("connect", str(leaky), mars)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"holds no public keys \(\*\.key\); copy each sender's NAME.key there$"):
        curve_keys("bind", str(keys / "mars" / "mars.key_secret"), str(tmp_path / "empty"))
    with pytest.raises(UsageError, match="does not exist$"):
        curve_keys("bind", str(keys / "mars" / "mars.key_secret"), str(tmp_path / "missing"))
    assert curve_keys("connect", secret, mars).public_file == str(keys / "earth" / "earth.key")
    assert "secret" not in repr(curve_keys("connect", secret, mars))      # secrets stay out of logs


def test_plain_text_endpoints_stay_on_loopback_unless_encrypted_or_insecure():
    with pytest.raises(UsageError, match=r"^tcp://10\.1\.2\.3:5555 is not a loopback address and this link is "
                                         r"unencrypted; encrypt it with --curve-secret and --server-key "
                                         r"\(keys from 'keygen'\), or add --insecure to send plain text over a network$"):
        check_endpoint("tcp://10.1.2.3:5555", False, "connect")
    assert check_endpoint("tcp://10.1.2.3:5555", False, "connect", encrypted=True) == "tcp://10.1.2.3:5555"
    assert check_endpoint("tcp://10.1.2.3:5555", True, "connect") == "tcp://10.1.2.3:5555"
    with pytest.raises(UsageError, match="encrypt it with --curve-secret and --allow"):
        check_endpoint("tcp://0.0.0.0:5555", False, "bind")
    for lookalike in ("tcp://127.0.0.1.evil.org:5555", "tcp://localhost.evil.org:5555", "tcp://*:5555"):
        with pytest.raises(UsageError, match="not a loopback address"):   # names may resolve anywhere
            check_endpoint(lookalike, False, "bind")
    for ok in ("tcp://127.0.0.1:5555", "tcp://127.9.9.9:1", "tcp://localhost:1", "tcp://[::1]:5555",
               "tcp://127.0.0.1:*", "ipc:///tmp/marslink"):
        assert check_endpoint(ok, False, "bind") == ok


# -- the link, in one process ----------------------------------------------------------------------


def run_link(bob_curve, alice_curve, log=None):
    """Bob serves one END; returns (alice outcome, bob outcome, seconds Alice took). A refusal
    must end Alice's handshake long before its 20 s timeout."""
    port = free_port()
    bob = BobLink(f"tcp://127.0.0.1:{port}", settings(curve=bob_curve, handshake_timeout_s=2.5), log=log)

    def serve():
        h = bob.accept()
        bob.welcome(Welcome(h.stream_id, 0))
        frame = bob.next_frame()
        bob.done(Done(SHA, ""))
        bob.poll(0.3)
        return frame

    background = Background(serve)
    started = time.monotonic()
    try:
        with AliceLink(f"tcp://127.0.0.1:{port}", settings(curve=alice_curve, handshake_timeout_s=20)) as alice:
            alice.handshake(hello())
            alice.send(End(0, 0, SHA))
            alice.wait_done()
            outcome = "ok"
    except AuthFailed as e:
        outcome = e
    took = time.monotonic() - started
    try:
        bob_outcome = background.result()
    except HandshakeTimeout as e:
        bob_outcome = e
    finally:
        bob.close()
    return outcome, bob_outcome, took


def test_curve_link_delivers(keys):
    outcome, frame, _ = run_link(server(keys), client(keys))
    assert outcome == "ok" and frame == End(0, 0, SHA)


def test_unknown_key_is_refused_at_once_and_logged_with_its_key(keys):
    log = []
    outcome, bob, took = run_link(server(keys), client(keys, "eve"), log.append)
    assert isinstance(outcome, AuthFailed) and took < 8
    assert str(outcome) == f"Mars refused our key (not in its allow-list); ask Mars to add {keys}/eve/eve.key"
    assert log == [f"refused a sender with unknown key {public(keys, 'eve')[:12]}... from 127.0.0.1 "
                   f"(not in allow-list {keys}/allow)"]
    assert isinstance(bob, HandshakeTimeout) and str(bob).endswith(f"(refused 1 connection(s); latest: {log[0]})")


def test_allow_list_is_reread_so_a_key_can_be_added_while_bob_runs(keys, tmp_path):
    allow = tmp_path / "allow"
    allow.mkdir()
    (allow / "earth.key").write_bytes((keys / "earth" / "earth.key").read_bytes())
    mars = security.CurveKeys.server(str(keys / "mars" / "mars.key_secret"), str(allow))
    assert isinstance(run_link(mars, client(keys, "eve"))[0], AuthFailed)
    (allow / "eve.key").write_bytes((keys / "eve" / "eve.key").read_bytes())
    assert run_link(mars, client(keys, "eve"))[0] == "ok"


def bob_saw_plain_text(line: str, endpoint: str) -> bool:
    """Which side notices a mechanism mismatch first is a race; the other only sees a drop."""
    return line in (f"refused a plain-text sender on {endpoint}: this receiver requires CURVE encryption",
                    f"dropped a sender on {endpoint} mid-handshake (a plain-text sender? "
                    f"this receiver requires CURVE encryption; or one that gave up waiting for this receiver)")


def test_plain_sender_to_curve_receiver_is_refused(keys):
    log = []
    outcome, bob, took = run_link(server(keys), None, log.append)
    assert str(outcome) == "Mars requires encryption (CURVE); pass --server-key and --curve-secret" and took < 8
    endpoint = str(bob).split(" on ")[1].split(" ")[0]
    assert len(log) == 1 and bob_saw_plain_text(log[0], endpoint), log


def test_curve_sender_to_plain_receiver_is_refused(keys):
    log = []
    outcome, _, took = run_link(None, client(keys), log.append)
    assert took < 8 and (str(outcome).startswith("Mars does not use encryption (it listens in plain text)")
                           or str(outcome).endswith("or Mars listens in plain text"))
    assert len(log) == 1 and ("refused an encrypted (CURVE) sender" in log[0] or "not a marslink sender, or an encrypted one" in log[0])


def test_wrong_server_key_is_named(keys):
    log = []
    outcome, _, took = run_link(server(keys), client(keys, "earth", server_key="eve"), log.append)
    assert str(outcome) == (f"Mars dropped our encrypted handshake {security.REPEATED_FAILURES} times in a row: "
                            f"either --server-key is not Mars's public key (its NAME.key), or Mars listens "
                            f"in plain text") and took < 8
    assert log and "whose handshake did not decrypt: its --server-key is not this receiver's public key" in log[0]


def test_sigterm_becomes_a_clean_stop(capsys):
    previous = signal.getsignal(signal.SIGTERM)

    def body():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)

    assert run_main("bob", body) == 143
    assert capsys.readouterr().err == "bob: stopped (SIGTERM); no output was written\n"
    assert signal.getsignal(signal.SIGTERM) is previous


# -- the command lines, as two real processes ------------------------------------------------------


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def spawn(tmp_path, name: str, *args):
    """python -m ARGS, stderr to tmp_path/NAME.err (readable while it runs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARSLINK_")}
    env.update(PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(tmp_path / "cache"))
    err = open(tmp_path / f"{name}.err", "wb")
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    proc.err_path = tmp_path / f"{name}.err"
    err.close()
    return proc


def err_lines(proc) -> list[str]:
    return proc.err_path.read_text().strip().splitlines()


def wait_for_line(proc, line: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(x.startswith(line) for x in err_lines(proc)):
            return
        assert proc.poll() is None, f"exited {proc.returncode} before saying {line!r}: {err_lines(proc)}"
        time.sleep(0.2)
    raise AssertionError(f"never said {line!r}: {err_lines(proc)}")


def stop(proc) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def test_curve_stream_is_byte_exact(keys, tmp_path):
    data = mission_log(3000)
    (tmp_path / "in.txt").write_bytes(data)
    ep, out = free_endpoint(), tmp_path / "out.txt"
    bob = spawn(tmp_path, "bob", "receiver", "listen", "--bind", ep, "--out", str(out), "--preset", "tiny",
                "--curve-secret", str(keys / "mars" / "mars.key_secret"), "--allow", str(keys / "allow"))
    alice = spawn(tmp_path, "alice", "sender", "send", str(tmp_path / "in.txt"), "--connect", ep, "--preset", "tiny",
                  "--curve-secret", str(keys / "earth" / "earth.key_secret"),
                  "--server-key", str(keys / "mars" / "mars.key"))
    try:
        assert alice.wait(300) == 0, err_lines(alice)
        assert bob.wait(120) == 0, err_lines(bob)
    finally:
        stop(alice), stop(bob)
    assert out.read_bytes() == data
    assert err_lines(alice)[-1].startswith("alice: sent 3,000 bytes")


@pytest.fixture(scope="module")
def curve_bob(keys, tmp_path_factory):
    """One CURVE receiver (allow-list: earth) for the refusal tests; SIGTERMed at the end."""
    tmp = tmp_path_factory.mktemp("curve_bob")
    ep = free_endpoint()
    bob = spawn(tmp, "bob", "receiver", "listen", "--bind", ep, "--out", str(tmp / "out.txt"), "--preset", "tiny",
                "--curve-secret", str(keys / "mars" / "mars.key_secret"), "--allow", str(keys / "allow"))
    bob.endpoint, bob.out = ep, tmp / "out.txt"
    yield bob
    assert stop(bob) == 143 and err_lines(bob)[-1] == "bob: stopped (SIGTERM); no output was written"
    assert not bob.out.exists() and not (tmp / "out.txt.partial").exists()


def send_refused(tmp_path, bob, *curve_args) -> tuple[list[str], float]:
    (tmp_path / "in.txt").write_bytes(b"hello mars")
    started = time.monotonic()
    alice = spawn(tmp_path, "alice", "sender", "send", str(tmp_path / "in.txt"), "--connect", bob.endpoint,
                  "--preset", "tiny", "--handshake-timeout", "600", *curve_args)
    try:
        assert alice.wait(300) == 2, err_lines(alice)
    finally:
        stop(alice)
    return err_lines(alice), time.monotonic() - started


def test_unknown_key_is_refused_on_both_sides(keys, curve_bob, tmp_path):
    lines, took = send_refused(tmp_path, curve_bob, "--curve-secret", str(keys / "eve" / "eve.key_secret"),
                               "--server-key", str(keys / "mars" / "mars.key"))
    assert lines[-1] == (f"alice: error: Mars refused our key (not in its allow-list); "
                         f"ask Mars to add {keys}/eve/eve.key")
    assert took < 300              # not the 600 s handshake timeout: the refusal ends it at once
    wait_for_line(curve_bob, f"bob: refused a sender with unknown key {public(keys, 'eve')[:12]}... "
                             f"from 127.0.0.1 (not in allow-list {keys}/allow)")
    assert not curve_bob.out.exists()


def test_plain_text_sender_is_refused_by_a_curve_receiver(curve_bob, tmp_path):
    lines, _ = send_refused(tmp_path, curve_bob)
    assert lines[-1] == "alice: error: Mars requires encryption (CURVE); pass --server-key and --curve-secret"
    deadline = time.monotonic() + 60
    while not any(bob_saw_plain_text(x[len("bob: "):], curve_bob.endpoint) for x in err_lines(curve_bob)):
        assert time.monotonic() < deadline, err_lines(curve_bob)
        time.sleep(0.2)
    assert not curve_bob.out.exists()


def test_sigterm_stops_bob_mid_stream_cleanly(tmp_path):
    data = mission_log(40_000)
    (tmp_path / "in.txt").write_bytes(data)
    ep, out = free_endpoint(), tmp_path / "out.txt"
    bob = spawn(tmp_path, "bob", "receiver", "listen", "--bind", ep, "--out", str(out), "--preset", "tiny")
    alice = spawn(tmp_path, "alice", "sender", "send", str(tmp_path / "in.txt"), "--connect", ep, "--preset", "tiny",
                  "--handshake-timeout", "3")
    try:
        wait_for_line(bob, "bob: receiving stream")
        time.sleep(1.5)                                  # well into the stream (~150 steps)
        bob.send_signal(signal.SIGTERM)
        assert bob.wait(60) == 143
        assert alice.wait(120) == 2                      # after waiting her handshake time for him
    finally:
        stop(alice), stop(bob)
    assert err_lines(bob)[-1] == "bob: stopped (SIGTERM); no output was written"
    assert "alice: Mars was interrupted; waiting for him to return (up to 3 s)" in err_lines(alice)
    assert err_lines(alice)[-1].startswith(f"alice: error: no answer from Mars ({ep}) within 3.0 s of HELLO")
    assert not out.exists()


def test_a_fifo_in_the_allow_folder_is_one_line_not_a_hang(keys, tmp_path):
    """Issue 25 A14: a FIFO named *.key in --allow hung Bob forever at start."""
    allow = tmp_path / "allow"
    allow.mkdir()
    (allow / "earth.key").write_bytes((keys / "earth" / "earth.key").read_bytes())
    os.mkfifo(allow / "trap.key")
    r = run_cli("receiver", "listen", "--bind", f"tcp://127.0.0.1:{free_port()}", "--out", str(tmp_path / "o"),
                "--preset", "tiny", "--curve-secret", str(keys / "mars" / "mars.key_secret"), "--allow", str(allow),
                "--handshake-timeout", "3", timeout=60)
    assert r.returncode == 2 and r.stderr.decode().splitlines() == [
        f"bob: error: public key file {str(allow / 'trap.key')!r} is not a regular file (a FIFO or device?); "
        f"keys are files made by 'keygen'"]


def test_a_key_folder_given_as_a_key_file_is_named_a_folder(keys, tmp_path):
    """The folder 'keygen' wrote, given where its key file belongs (an easy slip): one line that
    says which file to pass, not "a FIFO or device?"."""
    (tmp_path / "in.txt").write_bytes(b"Sol 1.\n" * 20)
    r = run_cli("sender", "send", str(tmp_path / "in.txt"), "--connect", f"tcp://127.0.0.1:{free_port()}",
                "--preset", "tiny", "--curve-secret", str(keys / "earth"), "--server-key", str(keys / "mars" / "mars.key"),
                "--handshake-timeout", "3", timeout=60)
    assert r.returncode == 2 and r.stderr.decode().splitlines() == [
        f"alice: error: secret key file {str(keys / 'earth')!r} is a folder; pass the key file in it that 'keygen' "
        f"made (NAME.key_secret for a secret key, NAME.key for a public one)"]


def test_a_secret_key_where_a_public_key_belongs_is_refused_as_leaked(keys, tmp_path):
    """Issue 25 A15: a secret key was silently accepted as --server-key, and as a world-readable
    copy inside --allow."""
    mars_secret = str(keys / "mars" / "mars.key_secret")
    src = tmp_path / "in.txt"
    src.write_bytes(b"hello mars")
    r = run_cli("sender", "send", str(src), "--connect", f"tcp://127.0.0.1:{free_port()}", "--preset", "tiny",
                "--curve-secret", str(keys / "earth" / "earth.key_secret"), "--server-key", mars_secret, timeout=60)
    assert r.returncode == 2 and r.stderr.decode().splitlines() == [
        f"alice: error: {mars_secret!r} holds a secret key where only a public key belongs; treat that secret as "
        f"leaked: make a new pair with 'keygen', then hand out only NAME.key"]
    allow = tmp_path / "allow"
    allow.mkdir()
    copy = allow / "earth.key"
    copy.write_bytes((keys / "earth" / "earth.key_secret").read_bytes())
    copy.chmod(0o644)
    r = run_cli("receiver", "listen", "--bind", f"tcp://127.0.0.1:{free_port()}", "--out", str(tmp_path / "o"),
                "--preset", "tiny", "--curve-secret", mars_secret, "--allow", str(allow), timeout=60)
    assert r.returncode == 2 and r.stderr.decode().splitlines() == [
        f"bob: error: {str(copy)!r} holds a secret key (readable by other users) where only a public key belongs; "
        f"treat that secret as leaked: make a new pair with 'keygen', then hand out only NAME.key"]
