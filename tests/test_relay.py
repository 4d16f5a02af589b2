"""The simulated deep-space link: delay/bandwidth arithmetic, and a lossy path that still ends exact."""
import json
import os
import subprocess
import sys

import pytest
import zmq

from protocol.relay import Channel, SimulatedLink
from scripts.relay import parser
from shared.app.options import simulated_link, simulated_link_argv
from shared.texts import mission_log
from tests.helpers import ROOT, child_env, free_endpoint, kill_all, spawn

SEE = "; see 'python -m scripts.relay --help'"


def run_relay(*args, **kw):
    """`python -m scripts.relay ARGS` to its end, as a user runs it (stdout and stderr as text)."""
    kw.setdefault("stdout", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "scripts.relay", *args], cwd=ROOT, env=child_env(),
                          stderr=subprocess.PIPE, text=True, timeout=30, **kw)


def test_light_delay_and_bandwidth_queue():
    ch = Channel("up", delay_s=1.0, bandwidth_bps=8000, loss=0, dup=0, reorder=0, seed=0, faults=True)
    assert ch.admit(0.0, 1000) == [2.0]          # 1 s to transmit 8000 bits, then 1 s of light
    assert ch.admit(0.0, 1000) == [3.0]          # queued behind the first
    assert ch.stats.max_queue_s == 1.0
    assert ch.admit(10.0, 500) == [11.5]         # an idle channel starts at once
    unlimited = Channel("up", 0.25, 0, 0, 0, 0, 0, True)
    assert unlimited.admit(5.0, 10**6) == [5.25]


def test_faults_are_seeded_and_only_where_asked():
    def decisions(seed, faults=True):
        ch = Channel("up", 0.1, 0, loss=0.3, dup=0.3, reorder=0.3, seed=seed, faults=faults)
        return [tuple(round(t, 6) for t in ch.admit(float(i), 100)) for i in range(200)], ch.stats

    a, sa = decisions(7)
    b, _ = decisions(7)
    assert a == b                                              # same seed, same path
    assert sa.dropped and sa.duplicated and sa.reordered
    assert sum(len(x) for x in a) == 200 - sa.dropped + sa.duplicated
    _, clean = decisions(7, faults=False)                      # e.g. the Mars->Earth direction by default
    assert clean.dropped == clean.duplicated == clean.reordered == 0


def test_light_minutes_and_time_scale():
    args = parser().parse_args(["--listen", "tcp://127.0.0.1:1", "--forward", "tcp://127.0.0.1:2",
                                "--light-minutes", "12", "--time-scale", "600"])
    assert (simulated_link(args).delay_s, simulated_link(args).light_minutes) == (1.2, 12.0)
    args = parser().parse_args(["--listen", "tcp://127.0.0.1:1", "--forward", "tcp://127.0.0.1:2", "--delay-s", "0.3"])
    assert simulated_link(args).delay_s == 0.3


def test_the_demo_starts_the_relay_with_exactly_its_simulated_link():
    """One object: the options simulated_link_argv writes give the same SimulatedLink back."""
    for path in (SimulatedLink.from_light(22, 300, bandwidth_bps=8000, loss=0.05, seed=4),
                 SimulatedLink(delay_s=0.15, bandwidth_bps=4e5, back_bandwidth_bps=1e3, dup=0.1, reorder=0.1,
                               fault_direction="both")):
        args = parser().parse_args(["--listen", "tcp://127.0.0.1:1", "--forward", "tcp://127.0.0.1:2",
                                    *simulated_link_argv(path)])
        assert simulated_link(args) == path


def test_lossy_duplicating_reordering_relay_is_still_byte_exact(tmp_path):
    """Alice -> relay (10% loss, 10% duplication, 10% reordering, 0.15 s light, bandwidth cap) -> Bob."""
    data = mission_log(10_000)
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_bytes(data)
    relay_ep, bob_ep = free_endpoint(), free_endpoint()
    relay = spawn("scripts.relay", "--listen", relay_ep, "--forward", bob_ep, "--delay-s", "0.15",
                  "--bandwidth-bps", "400000", "--loss", "0.1", "--dup", "0.1", "--reorder", "0.1", "--seed", "5",
                  "--stats-json", str(tmp_path / "relay.json"), "--max-seconds", "150", "-q")
    common = ["--preset", "tiny", "--timeout", "20", "--link-info", "delay=0.15,bw=400000,loss=0.1,dup=0.1,reorder=0.1"]
    bob = spawn("receiver", "listen", "--bind", bob_ep, "--out", str(out), "--stats-json", str(tmp_path / "bob.json"),
                "--plain", *common)
    alice = spawn("sender", "send", str(src), "--connect", relay_ep, "--stats-json", str(tmp_path / "alice.json"),
                  "--state-dir", str(tmp_path / "state"), "--retransmit", "0.8", "--plain", *common)
    try:
        a_out, a_err = alice.communicate(timeout=150)
        b_out, b_err = bob.communicate(timeout=60)
    finally:
        kill_all(alice, bob)
        relay.terminate()
        relay.communicate(timeout=30)
    assert alice.returncode == 0, a_err.decode()[-2000:]
    assert bob.returncode == 0, b_err.decode()[-2000:]
    assert out.read_bytes() == data
    a, b = (json.loads((tmp_path / f"{w}.json").read_text()) for w in ("alice", "bob"))
    r = json.loads((tmp_path / "relay.json").read_text())
    assert a["final_digest"] == b["final_digest"]
    assert a["curve"] == b["curve"] and len(a["curve"]) == a["steps"]   # the same loss curve, twice
    up = r["earth_to_mars"]
    assert up["dropped"] > 0 and up["duplicated"] > 0 and up["reordered"] > 0
    assert a["frames_resent"] > 0 and b["duplicates"] > 0
    # plain log mode: no ANSI, one line per few steps, and the verified end on both sides
    for text in (a_out.decode(), b_out.decode()):
        assert "\x1b[" not in text
        assert "VERIFIED: SHA-256 ok" in text and a["final_digest"][:12] in text
        assert "loss 10%" in text                                  # the configured link, as shown


def test_nonsense_settings_are_refused_at_once_with_one_line(tmp_path):
    """Issue 25 A10: `--delay-s nan` and `--time-scale nan` made the relay busy-loop forever,
    negative delays and bandwidths were accepted, and `--forward 127.0.0.1:PORT` printed a
    ZMQError traceback, then hung on exit."""
    ep = free_endpoint()
    see = "; see 'python -m scripts.relay --help'"
    cases = {
        ("--delay-s", "nan"): "argument --delay-s: 'nan' is not a delay in seconds (0 to 2,592,000)",
        ("--delay-s", "-1"): "argument --delay-s: '-1' is not a delay in seconds (0 to 2,592,000)",
        ("--time-scale", "nan"): "argument --time-scale: 'nan' is not a time scale (a positive number)",
        ("--time-scale", "0"): "argument --time-scale: '0' is not a time scale (a positive number)",
        ("--bandwidth-bps", "-8000"): "argument --bandwidth-bps: '-8000' is not a bandwidth in bits per second "
                                      "(0 = unlimited)",
        ("--back-bandwidth-bps", "inf"): "argument --back-bandwidth-bps: 'inf' is not a bandwidth in bits per "
                                         "second (0 = unlimited)",
        ("--light-minutes", "-3"): "argument --light-minutes: '-3' is not a light time in minutes (0 to 1440)",
        ("--loss", "nan"): "argument --loss: 'nan' is not a probability below 1 (a number from 0 to 0.999)",
        ("--status-every", "0"): "argument --status-every: '0' is not a positive number of seconds (at most "
                                 "2,592,000)",
        ("--forward", "127.0.0.1:5602"): "argument --forward: '127.0.0.1:5602' is not an endpoint such as "
                                         "tcp://127.0.0.1:5602",
        ("--listen", "localhost"): "argument --listen: 'localhost' is not an endpoint such as tcp://127.0.0.1:5602",
    }
    for (flag, value), message in cases.items():
        args = {"--listen": ep, "--forward": "tcp://127.0.0.1:5602", flag: value}
        relay = spawn("scripts.relay", *[x for kv in args.items() for x in kv], "--plain")
        out, err = relay.communicate(timeout=60)
        assert relay.returncode == 2 and err.decode().splitlines() == [f"python -m scripts.relay: error: "
                                                                       f"{message}{see}"], (flag, value, err)
        assert out == b""


@pytest.mark.parametrize("listen, forward, says", [
    ("tcp://127.0.0.1:99999", "FREE", "argument --listen: 'tcp://127.0.0.1:99999' is not an endpoint such as "
     "tcp://127.0.0.1:5602: it needs a host and a port from 1 to 65535 (or * for any free one)"),
    ("FREE", "tcp://127.0.0.1", "argument --forward: 'tcp://127.0.0.1' is not an endpoint such as "
     "tcp://127.0.0.1:5602: it needs a host and a port from 1 to 65535"),
    ("FREE", "tcp://*:5602", "argument --forward: 'tcp://*:5602' is not an endpoint such as "
     "tcp://127.0.0.1:5602: it needs a host and a port from 1 to 65535"),
    ("tcp://127.0.0.1:5610", "tcp://127.0.0.1:5610", "--listen and --forward are the same endpoint "
     "(tcp://127.0.0.1:5610): the relay would send every message back to itself; give Bob's address to --forward"),
    ("tcp://*:5610", "tcp://localhost:5610", "--listen and --forward are the same endpoint "
     "(tcp://localhost:5610): the relay would send every message back to itself; give Bob's address to --forward"),
])
def test_a_port_out_of_range_a_missing_port_or_a_relay_to_itself_is_refused(listen, forward, says):
    """zmq bound tcp://127.0.0.1:99999 as port 34463 (99999 modulo 65536) without a word, and a
    --forward without a port, or equal to --listen, was accepted."""
    listen, forward = (free_endpoint() if e == "FREE" else e for e in (listen, forward))
    r = run_relay("--listen", listen, "--forward", forward, "--max-seconds", "20", "--plain")
    assert (r.returncode, r.stdout, r.stderr) == (2, "", f"python -m scripts.relay: error: {says}{SEE}\n")


def test_an_ipc_path_longer_than_a_sockets_name_is_refused_as_an_argument(tmp_path):
    """Round seven: an ipc:// --listen path over the 107 bytes a socket's name may hold passed the
    parser and ended the relay with zmq's three-sentence message; it is now refused with the
    arguments, as Alice and Bob refuse it, in one line (--forward too)."""
    long = f"ipc://{tmp_path / ('s' * 200)}"
    size = len(os.fsencode(long)) - len("ipc://")
    why = (f"{long[:80]!r}: its path is {size} bytes, more than the {zmq.IPC_PATH_MAX_LEN} this system allows a "
           f"socket's name; choose a shorter path")
    for flag, args in (("--listen", ["--listen", long, "--forward", free_endpoint()]),
                       ("--forward", ["--listen", free_endpoint(), "--forward", long])):
        r = run_relay(*args, "--max-seconds", "2", "--plain")
        assert (r.returncode, r.stdout, r.stderr) == (2, "", f"python -m scripts.relay: error: argument {flag}: "
                                                             f"{why}{SEE}\n")
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_stats_json_is_refused_before_the_run(tmp_path):
    """It was found only when the run ended (a FileNotFoundError traceback, the counters lost). The
    line names --stats-json, not an "output" (round seven)."""
    missing = tmp_path / "no" / "relay.json"
    for path, says in ((missing, f"--stats-json folder {str(missing.parent)!r} does not exist; create it first"),
                       ("/proc/relay.json", "cannot write --stats-json '/proc/relay.json': its folder takes no new files (a "
                                            "virtual file system such as /proc?); choose a folder on a disk, then "
                                            "run again")):
        r = run_relay("--listen", free_endpoint(), "--forward", free_endpoint(), "--stats-json", str(path),
                      "--max-seconds", "60", "--plain")          # refused at once: a run would outlast the timeout
        assert (r.returncode, r.stdout, r.stderr) == (2, "", f"relay: error: {says}\n")
    assert list(tmp_path.iterdir()) == []


def test_a_closed_stdout_runs_quietly_and_writes_the_stats(tmp_path):
    """`relay ... >&-` was an AttributeError (sys.stdout is None): the link runs, with nothing to show."""
    stats = tmp_path / "relay.json"
    r = run_relay("--listen", free_endpoint(), "--forward", free_endpoint(), "--max-seconds", "0.5",
                  "--stats-json", str(stats), stdout=None, preexec_fn=lambda: os.close(1))
    assert (r.returncode, r.stderr) == (0, "")
    assert json.loads(stats.read_text())["earth_to_mars"]["messages"] == 0


def test_a_reader_that_went_away_is_no_traceback_and_the_stats_are_written(tmp_path):
    """`relay ... | head -1`: a BrokenPipeError traceback, and no stats. The relay goes on quietly
    (Alice and Bob still need the link) and writes them. Here the reader is gone before the
    first line, every time."""
    stats = tmp_path / "relay.json"
    read, write = os.pipe()
    os.close(read)
    try:
        r = run_relay("--listen", free_endpoint(), "--forward", free_endpoint(), "--plain", "--status-every", "0.1",
                      "--max-seconds", "0.5", "--stats-json", str(stats), stdout=write)
    finally:
        os.close(write)
    assert (r.returncode, r.stderr) == (0, "")
    assert json.loads(stats.read_text())["settings"]["delay_s"] == 1.2
