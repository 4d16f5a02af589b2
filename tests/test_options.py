"""Options are checked while the command line is parsed, by one declaration both CLIs use: the
same bad value gets the same one-line refusal from alice and bob, before torch loads, and
every value they accept is one the other side accepts too (no file or stream nobody can decode)."""
import argparse
import contextlib
import io
import subprocess
import sys

import pytest

from receiver.cli import parser as bob_parser
from sender.cli import parser as alice_parser
from shared.app.options import run_config
from shared.core.config import INT_RANGES, RunConfig
from tests.helpers import ROOT, assert_verified, child_env, expect_error, leftovers, run_cli, run_pair

EP = "tcp://127.0.0.1:1"          # never contacted: every case below fails while parsing
ALICE = ["send", "in.txt", "--connect", EP]
BOB = ["listen", "--bind", EP, "--out", "out.bin"]

# option, value, what the refusal says after "argument OPTION: "
SEEDS = "a whole number in 0..9223372036854775807"
SILENCE = ("'{}' is not a silence timeout from 2 s, twice the heartbeat (shorter, a peer who is there seems lost), "
           "to 2,592,000 s")
BAD = [
    ("--seed", "18446744073709551616", f"'18446744073709551616' is not a seed ({SEEDS})"),
    ("--seed", "-5", f"'-5' is not a seed ({SEEDS})"),
    ("--seed", "1.5", f"'1.5' is not a seed ({SEEDS})"),
    ("--window", "0", "'0' is not a window (a whole number in 1..4096)"),
    ("--window", "100000", "'100000' is not a window (a whole number in 1..4096)"),
    ("--checkpoint-every", "0", "'0' is not a step count (a whole number in 1..1073741824)"),
    ("--timeout", "-1", SILENCE.format("-1")),
    ("--timeout", "nan", SILENCE.format("nan")),
    ("--timeout", "0", SILENCE.format("0")),
    ("--timeout", "1.5", SILENCE.format("1.5")),     # below two heartbeats: a stream that could never finish
    ("--handshake-timeout", "inf", "'inf' is not a positive number of seconds (at most 2,592,000)"),
    ("--threads", "0", "'0' is not a thread count: threads must be between 1 and 256 (got 0)"),
    ("--threads", "257", "'257' is not a thread count: threads must be between 1 and 256 (got 257)"),
    ("--threads", "two", "'two' is not a thread count (a whole number)"),
    ("--threads", "1_6", "'1_6' is not a thread count (a whole number)"),      # int() takes these three:
    ("--window", "١٢", "'١٢' is not a window (a whole number in 1..4096)"),   # ASCII digits only
    ("--timeout", "1_0", SILENCE.format("1_0")),
    ("--log-every", "0", "'0' is not a step count (a whole number in 1..1073741824)"),     # issue 25
    ("--log-every", "-3", "'-3' is not a step count (a whole number in 1..1073741824)"),
    ("--state-dir", "", "an empty name is not a folder name; give a path"),   # "$UNSET": never "not given"
    ("--stats-json", "", "an empty name is not a file name; give a path"),
]


def parse_error(parser, argv) -> str:
    """What argparse prints for argv (it must refuse), as one line."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        parser().parse_args(argv)
    assert e.value.code == 2
    assert err.getvalue().count("\n") == 1
    return err.getvalue().strip()


@pytest.mark.parametrize("option,value,why", BAD, ids=[f"{o}={v}" for o, v, _ in BAD])
def test_both_sides_refuse_a_bad_value_the_same_way(option, value, why):
    assert parse_error(alice_parser, [*ALICE, option, value]) == \
        f"alice send: error: argument {option}: {why}; see 'alice send --help'"
    assert parse_error(bob_parser, [*BOB, option, value]) == \
        f"bob listen: error: argument {option}: {why}; see 'bob listen --help'"


@pytest.mark.parametrize("sub", [["compress", "in", "out"], ["decompress", "in", "out"]])
def test_file_mode_shares_the_checks(sub):
    parser = alice_parser if sub[0] == "compress" else bob_parser
    prog = f"{'alice' if sub[0] == 'compress' else 'bob'} {sub[0]}"
    assert parse_error(parser, [*sub, "--threads", "0"]) == (
        f"{prog}: error: argument --threads: '0' is not a thread count: threads must be between 1 and 256 "
        f"(got 0); see '{prog} --help'")
    assert parse_error(parser, [*sub, "--progress-every", "nan"]) == (
        f"{prog}: error: argument --progress-every: 'nan' is not a positive number of seconds (at most 2,592,000); "
        f"see '{prog} --help'")
    assert parse_error(parser, [*sub, "--stats-json", ""]) == (
        f"{prog}: error: argument --stats-json: an empty name is not a file name; give a path; see '{prog} --help'")


@pytest.mark.parametrize("name", ["x" * 65, "", "tab\there", "bell\x07", "del\x7f",
                                  "evil\u2028bob: verified", "rtl\u202eAB", "byte\udcff"])   # round eight: the last 3
def test_stream_id_follows_the_wire_rules(name):
    """Round eight: a line separator or a right-to-left override in a stream id could forge a line
    of Bob's display, and a byte that is not text (LANG=C) was called a control character."""
    assert parse_error(alice_parser, [*ALICE, "--stream-id", name]) == (
        f"alice send: error: argument --stream-id: {name[:80]!r} is not a stream id: 1 to 64 printable characters "
        f"(no control, format or line-separator characters; text, not bytes); see 'alice send --help'")


def test_the_extremes_accepted_are_valid_everywhere():
    """What the parser lets through is a configuration Bob's HELLO check and a container accept."""
    top = INT_RANGES["seed"][1]
    for argv in ([*ALICE, "--seed", str(top)], [*ALICE, "--seed", "0"]):
        args = alice_parser().parse_args(argv)
        config = run_config(args)
        assert RunConfig.from_dict(config.to_dict()) == config
    args = alice_parser().parse_args([*ALICE, "--stream-id", "é" * 64, "--window", "4096", "--threads", "256",
                                      "--timeout", "2", "--checkpoint-every", "1"])
    assert (args.stream_id, args.window, args.threads, args.timeout, args.checkpoint_every) == ("é" * 64, 4096, 256,
                                                                                               2, 1)
    args = bob_parser().parse_args([*BOB, "--seed", str(top)])
    assert run_config(args).seed == top


def test_fault_options_are_checked_too():
    assert parse_error(alice_parser, [*ALICE, "--fault-drop", "1.5"]) == (
        "alice send: error: argument --fault-drop: '1.5' is not a probability (a number from 0 to 1); "
        "see 'alice send --help'")


def test_a_prefix_stands_for_a_shown_option_never_for_a_hidden_fault_injector():
    """Round eight: `--fa 1` listed the hidden fault options as candidates, and a prefix such as
    `--fault-dr 0.5` reached one and dropped frames. Prefixes of shown options still work."""
    assert parse_error(alice_parser, [*ALICE, "--fa", "1"]) == (
        "alice: error: unrecognized arguments: --fa 1; see 'alice --help'")
    assert parse_error(alice_parser, [*ALICE, "--fault-dr", "0.5"]) == (
        "alice: error: unrecognized arguments: --fault-dr 0.5; see 'alice --help'")
    assert parse_error(bob_parser, [*BOB, "--fault-per", "3"]) == (
        "bob: error: unrecognized arguments: --fault-per 3; see 'bob --help'")
    assert alice_parser().parse_args([*ALICE, "--fault-drop", "0.5", "--handshake-t", "3"]).fault_drop == 0.5
    assert alice_parser().parse_args([*ALICE, "--handshake-t", "3"]).handshake_timeout == 3


@pytest.mark.parametrize("module, prog", [("sender", "alice"), ("receiver", "bob")])
def test_version_names_the_release_and_what_a_file_or_a_peer_must_match(module, prog):
    """Round eight: `alice --version` said "the following arguments are required: command"."""
    from importlib.metadata import version
    from protocol.frames import PROTOCOL_VERSION
    from shared.coding.container import FORMAT_VERSION
    r = subprocess.run([sys.executable, "-m", module, "--version"], cwd=ROOT, env=child_env(), capture_output=True,
                       text=True, timeout=60)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == (f"{prog} (marslink {version('marslink')}): container format {FORMAT_VERSION}, wire protocol "
                        f"{PROTOCOL_VERSION}\n")


def test_real_processes_refuse_a_seed_bob_would_refuse(cli, tmp_path):
    """The issue's case: alice used to write a file nobody could decode with this seed."""
    (tmp_path / "in.txt").write_bytes(b"hello")
    r = cli("sender", "compress", str(tmp_path / "in.txt"), str(tmp_path / "c.mrs"), "--seed", "18446744073709551616")
    expect_error(r, "alice compress: error: argument --seed: '18446744073709551616' is not a seed (a whole number "
                    "in 0..9223372036854775807); see 'alice compress --help'", tmp_path, ["in.txt"])
    r = cli("receiver", "listen", "--bind", EP, "--out", str(tmp_path / "o"), "--seed", "-5")
    expect_error(r, "bob listen: error: argument --seed: '-5' is not a seed (a whole number "
                    "in 0..9223372036854775807); see 'bob listen --help'", tmp_path, ["in.txt"])


def test_listen_out_dash_is_refused_and_writes_nothing(tmp_path):
    """Streaming to stdout would hand out bytes before the final SHA-256 check; Bob refuses at
    parse time instead, and no file named '-' appears anywhere."""
    r = subprocess.run([sys.executable, "-m", "receiver", "listen", "--bind", EP, "--out", "-"], cwd=tmp_path,
                       env=child_env(), capture_output=True, timeout=120)
    expect_error(r, "bob listen: error: argument --out: '-' (standard output) is not supported: Bob publishes the "
                    "verified result by renaming a file; give a file name, then read it; see 'bob listen --help'",
                 tmp_path, [])
    assert not (ROOT / "-").exists()


PROBE = """
import sys
from {module}.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print("torch" in sys.modules, "numpy" in sys.modules)
"""


@pytest.mark.parametrize("module,argv", [
    ("sender", ["--help"]), ("sender", ["send", "--help"]), ("receiver", ["listen", "--help"]),
    ("sender", ["compress", "a", "b", "--seed", "-1"]), ("receiver", ["listen", "--bind", EP, "--out", "-"]),
    ("sender", ["--version"]), ("receiver", ["--version"]),
])
def test_torch_does_not_load_for_help_or_an_option_error(module, argv):
    """Nor numpy: its BLAS reads its thread count once, when it loads, so it must load only after
    the CLI pinned the numeric profile (one thread per process)."""
    r = subprocess.run([sys.executable, "-c", PROBE.format(module=module, argv=argv)], cwd=ROOT, env=child_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.strip().splitlines()[-1] == "False False", r.stderr


def test_missing_subcommand_is_one_line():
    r = run_cli("sender")
    expect_error(r, "alice: error: the following arguments are required: command; see 'alice --help'")


def test_linger_0_means_do_not_linger_and_a_negative_one_is_refused(tmp_path):
    """Issue 25: `--linger 0` was refused, so there was no way to say "don't linger"."""
    assert parse_error(bob_parser, [*BOB, "--linger", "-1"]) == (
        "bob listen: error: argument --linger: '-1' is not a number of seconds from 0 (do not linger) to "
        "2,592,000; see 'bob listen --help'")
    data = b"Sol 3. Nothing to report.\n" * 200
    result = run_pair(tmp_path, data, bob_args=("--linger", "0", "-q"), alice_args=("-q",))
    assert_verified(result, data)


def test_a_file_name_that_begins_with_a_dash_is_named_as_such(tmp_path):
    """Round seven: `alice compress -x.txt out.mrs` (./-x.txt exists) said only that an argument was
    missing; it now says the name was read as an option and how to give it."""
    (tmp_path / "-x.txt").write_bytes(b"Sol 9. A file whose name begins with a dash.\n" * 20)

    def alice(*argv):
        return subprocess.run([sys.executable, "-m", "sender", "compress", *argv], cwd=tmp_path, env=child_env(),
                              capture_output=True, timeout=120)
    r = alice("-x.txt", "out.mrs", "--preset", "tiny")
    expect_error(r, "alice compress: error: '-x.txt' is read as an option; a file name that begins with '-' goes "
                    "after '--' (e.g. alice compress -- -x.txt ...) or as ./-x.txt; see 'alice compress --help'",
                 tmp_path, ["-x.txt"])
    r = alice("--preset", "tiny", "-q", "--", "-x.txt", "out.mrs")
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()
    assert leftovers(tmp_path) == ["-x.txt", "out.mrs"]


SCRIPTS = sorted(p.stem for p in (ROOT / "scripts").glob("*.py") if p.stem != "common")
GOLDEN_FILES = ("tests/golden.json", "shared/texts/mission_log.txt")


def run_script(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=child_env(), capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_answers_help_and_refuses_a_stray_option_in_one_line(script):
    """`--help` is help and a stray option one line, for every script: update_golden.py once
    took `--help` for "regenerate", and make_mission_log.py died in int('--help')."""
    before = [(ROOT / f).read_bytes() for f in GOLDEN_FILES]
    helped = run_script(f"scripts/{script}.py", "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage:"), helped.stderr
    bad = run_script(f"scripts/{script}.py", "--frobnicate")
    assert bad.returncode == 2 and bad.stdout == ""
    assert len(bad.stderr.splitlines()) == 1 and ": error: " in bad.stderr and " --help'" in bad.stderr, bad.stderr
    assert [(ROOT / f).read_bytes() for f in GOLDEN_FILES] == before


def test_make_mission_log_never_shortens_the_built_in_text(tmp_path):
    built_in = (ROOT / GOLDEN_FILES[1]).read_bytes()
    r = run_script("scripts/make_mission_log.py", "--bytes", "5000")
    assert (r.returncode, r.stderr) == (2, "make_mission_log: error: the built-in text is 120,000 bytes and the golden "
                                           "values depend on it; give --out FILE to write 5,000 bytes elsewhere; see "
                                           "'python scripts/make_mission_log.py --help'\n")
    assert (ROOT / GOLDEN_FILES[1]).read_bytes() == built_in
    r = run_script("scripts/make_mission_log.py", "--bytes", "5000", "--out", str(tmp_path / "log.txt"))
    assert r.returncode == 0 and (tmp_path / "log.txt").read_bytes() == built_in[:5000]


@pytest.mark.parametrize("text", ["2_0", "\u0661\u0662", " 2", "1e_3"])
def test_the_scripts_read_numbers_as_the_clis_do(text):
    """`scripts/soak.py --mbytes 2_0` ran a 20 MB soak: float() and int() take underscores,
    spaces and other scripts' digits, which the CLIs refuse (shared.app.options.whole, decimal)."""
    from scripts.common import count, positive_number
    for parse in (count, positive_number):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)
