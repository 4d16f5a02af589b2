"""Two laptops, one command on each: `bob listen --lan` prints the line Earth types.

Real processes over loopback: Bob binds every interface and prints one line with his public key
and a one-time code; the address in it is replaced by 127.0.0.1 here (tests send nothing to
other addresses). Senders without the code, or with another one, are refused, and Bob keeps
listening for the right one.
"""
import dataclasses
import ipaddress
import shlex
import subprocess
import sys
import threading

from shared.texts import mission_log
from tests.helpers import ROOT, child_env, free_port

LINE_START = "alice send FILE --connect tcp://"


def start_bob(tmp_path, port: int, *extra):
    env = child_env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    return subprocess.Popen([sys.executable, "-m", "receiver", "listen", "--lan", "--port", str(port),
                             "--out", str(tmp_path / "out.txt"), "--preset", "tiny", "--timeout", "20", *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def earth_line(bob, timeout: float = 120.0) -> tuple[str, list[str]]:
    """Bob's stderr up to and including the line for Earth: (everything read, that line's words)."""
    seen: list[str] = []

    def read():
        for line in bob.stderr:
            seen.append(line)
            if line.startswith(LINE_START):
                return
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert seen and seen[-1].startswith(LINE_START), "".join(seen)
    return "".join(seen), shlex.split(seen[-1])


def on_loopback(words: list[str], path) -> list[str]:
    """The line as Earth types it, FILE replaced by the file and Mars's address by loopback."""
    i = words.index("--connect")
    address, port = words[i + 1].removeprefix("tcp://").rsplit(":", 1)
    ipaddress.ip_address(address)                     # a real address Earth can type
    out = list(words)
    out[2], out[i + 1] = str(path), f"tcp://127.0.0.1:{port}"
    return out


def server_key(words: list[str]) -> str:
    """Mars's public key from the line he printed (`--server-key-text=KEY`)."""
    return next(w.split("=", 1)[1] for w in words if w.startswith("--server-key-text="))


def without_key_and_code(words: list[str]) -> list[str]:
    """The line as a plain-text sender would type it: no key, no code."""
    out = []
    for i, w in enumerate(words):
        if not (w.startswith("--server-key-text=") or w == "--code" or (i and words[i - 1] == "--code")):
            out.append(w)
    return out


def alice(tmp_path, words: list[str], timeout: float = 300):
    assert words[:2] == ["alice", "send"]
    return subprocess.run([sys.executable, "-m", "sender", *words[1:], "--state-dir", str(tmp_path / "earth"),
                           "--handshake-timeout", "30", "--timeout", "20"], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_one_command_on_each_laptop_encrypted_and_only_for_the_earth_with_the_code(tmp_path):
    data = mission_log(3000)
    src = tmp_path / "notes.txt"
    src.write_bytes(data)
    port = free_port()
    bob = start_bob(tmp_path, port)
    try:
        said, words = earth_line(bob)
        assert said.splitlines()[-1].startswith(f"{LINE_START}")
        assert words[words.index("--connect") + 1].endswith(f":{port}")
        assert words[-2:] == ["--preset", "tiny"]                 # what Earth must match goes on the line
        line = on_loopback(words, src)
        code = words[words.index("--code") + 1]

        # No code and no key: a plain-text sender. Refused; Bob keeps listening.
        plain = alice(tmp_path, without_key_and_code(line))
        assert plain.returncode == 2
        assert plain.stderr.strip().splitlines()[-1] == \
            "alice: error: Mars requires encryption (CURVE); pass --server-key and --curve-secret"

        # Mars's key but another code (an old one, or a guess): refused, named; Bob keeps listening.
        other = "abcd-efgh-jkmn-pqrs" if code != "abcd-efgh-jkmn-pqrs" else "bcde-fghj-kmnp-qrst"
        wrong = alice(tmp_path, [other if w == code else w for w in line])
        assert wrong.returncode == 2
        assert wrong.stderr.strip().splitlines()[-1] == (
            "alice: error: Mars refused our key: the --code is not the one Mars printed for this listen "
            "(each 'bob listen --lan' prints a new one); type the line Mars prints now")

        # The line as printed: delivered, byte-exact, over CURVE.
        right = alice(tmp_path, line)
        assert right.returncode == 0, right.stderr[-2000:]
        _, rest = bob.communicate(timeout=120)
    finally:
        if bob.poll() is None:
            bob.kill()
            bob.communicate()
    assert bob.returncode == 0, rest[-2000:]
    assert (tmp_path / "out.txt").read_bytes() == data
    assert "(not in the one-time code's key: a wrong or old --code)" in rest
    assert "requires CURVE encryption" in rest


def test_mars_keeps_his_key_and_prints_a_new_code_each_time(tmp_path):
    lines = []
    for _ in range(2):
        bob = start_bob(tmp_path, free_port(), "-q")
        try:
            said, words = earth_line(bob)
        finally:
            bob.kill()
            bob.communicate()
        assert said.count("\n") == 2                   # -q: the line for Earth is still said, and its header
        lines.append(words)
    key = [server_key(w) for w in lines]
    code = [w[w.index("--code") + 1] for w in lines]
    assert key[0] == key[1] and len(key[0]) == 40
    assert code[0] != code[1]
    keys = tmp_path / "cache" / "marslink" / "mars" / "keys"
    assert (keys / "mars.key_secret").stat().st_mode & 0o077 == 0
    assert key[0] in (keys / "mars.key").read_text()


def test_lan_and_line_options_refuse_what_they_cannot_use(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=child_env(XDG_CACHE_HOME=str(tmp_path)),
                              capture_output=True, text=True, timeout=120)
    cases = [
        (("receiver", "listen", "--out", "x"),
         "bob: error: say where to listen: --bind ENDPOINT, or --lan for one command on each laptop"),
        (("receiver", "listen", "--lan", "--bind", "tcp://127.0.0.1:5555", "--out", "x"),
         "bob: error: --lan chooses the endpoint and the keys itself; drop --bind, --curve-secret and --allow"),
        (("receiver", "listen", "--bind", "tcp://127.0.0.1:5555", "--port", "6000", "--out", "x"),
         "bob: error: --port goes with --lan; with --bind, the port is part of the endpoint"),
        (("sender", "send", __file__, "--connect", "tcp://127.0.0.1:5555", "--code", "abcd-efgh-jkmn-pqrs"),
         "alice: error: the line 'bob listen --lan' prints has both --server-key-text and --code; "
         "--server-key-text is missing"),
        (("sender", "send", __file__, "--connect", "tcp://127.0.0.1:5555", "--code", "abcd-efgh-jkmn-pqrs",
          "--server-key-text", "not-a-key"),
         "alice: error: --server-key-text 'not-a-key' is not a public key "
         "(40 Z85 characters, as 'bob listen --lan' prints it)"),
        (("sender", "send", __file__, "--connect", "tcp://127.0.0.1:5555", "--code", "abc1",
          "--server-key-text", "x" * 40),
         "alice: error: --code 'abc1' is not a code 'bob listen --lan' prints "
         "(4 groups of 4 letters and digits, e.g. k7qm-x2pa-9fde-hw3t)"),
    ]
    for args, message in cases:
        r = run(*args)
        assert (r.returncode, r.stderr.strip()) == (2, message)
    assert not (tmp_path / "x").exists()
    keys = tmp_path / "marslink" / "mars" / "keys"               # half a pair: its secret was deleted
    keys.mkdir(parents=True)
    (keys / "mars.key").write_text("not read")
    r = run("receiver", "listen", "--lan", "--out", str(tmp_path / "x"), "--handshake-timeout", "2")
    assert (r.returncode, r.stderr.strip()) == (2, f"bob: error: {keys / 'mars.key'} has no secret key beside it "
                                                   f"({keys / 'mars.key_secret'} is missing); remove "
                                                   f"{keys / 'mars.key'}, and a new pair is made")


def test_a_key_that_begins_with_a_dash_is_read_as_the_key(tmp_path, monkeypatch):
    """Z85 has "-" among its 85 characters: about one listen in 85 printed a key that argparse
    took for an option ("expected one argument"). The line gives it as --server-key-text=KEY."""
    import zmq
    from sender.cli import parser
    from shared.app import cli
    from protocol.security import CurveKeys
    public, secret = next(k for k in iter(zmq.curve_keypair, None) if k[0].startswith(b"-"))
    real = CurveKeys.lan_server

    def dashed(key_dir, code):
        return dataclasses.replace(real(key_dir, code), public_key=public, secret_key=secret)
    monkeypatch.setattr(CurveKeys, "lan_server", staticmethod(dashed))
    _, _, line = cli.lan_listen(str(tmp_path), free_port(), ["--preset", "tiny"])
    args = parser().parse_args(shlex.split(line)[1:])
    assert args.server_key_text == public.decode("ascii")
    assert CurveKeys.from_code(args.server_key_text, args.code).server_key == public
