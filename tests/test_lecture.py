"""Lecture mode: the exact-fraction coder and its worked example, and a short run of the script."""
import math
import shlex
import subprocess
import sys
from fractions import Fraction as F

import numpy as np
import pytest

from shared.coding.coder import ArithmeticEncoder
from shared.core.config import PRESETS, preset
from shared.show.lecture import (ExactCoder, Lecture, binary_digits, bits_value, encode_words, settled_prefix,
                                 shortest_binary_fraction, word_intervals)
from shared.show.ledger import program_size, state_sizes
from shared.texts import mission_log
from tests.helpers import ROOT, run_twin


def test_worked_example_interval_and_single_bit():
    low, high, bits = encode_words(["rover"])
    assert (low, high) == (F(2, 5), F(3, 5))            # exactly [0.4, 0.6)
    assert bits == "1"                                   # 0.1 in binary = 0.5
    assert bits_value(bits) == F(1, 2)
    assert word_intervals()["rover"] == (F(2, 5), F(3, 5))


def test_second_interval_by_hand():
    # [0.25, 0.3): 0.25 = 0.01b is inside (low is inclusive), nothing shorter is: "01"
    assert shortest_binary_fraction(F(1, 4), F(3, 10)) == "01"
    # [0.3, 0.35): 0.5, 0.25, 0.375 are out; 0.3125 = 0.0101b is the first inside
    assert shortest_binary_fraction(F(3, 10), F(7, 20)) == "0101"
    # two words: rover then ice -> [0.52, 0.58): 0.5625 = 0.1001b
    low, high, bits = encode_words(["rover", "ice"])
    assert (low, high, bits) == (F(13, 25), F(29, 50), "1001")


@pytest.mark.parametrize("low,high", [(F(0), F(1)), (F(0), F(1, 1000)), (F(999, 1000), F(1)),
                                      (F(1, 3), F(1, 3) + F(1, 10**12)), (F(1, 2), F(1, 2) + F(1, 7))])
def test_shortest_fraction_is_inside_and_shortest(low, high):
    bits = shortest_binary_fraction(low, high)
    assert low <= bits_value(bits) < high
    for k in range(len(bits)):                      # no k-bit fraction fits
        scale = 1 << k
        c = -((-low.numerator * scale) // low.denominator)
        assert F(c, scale) >= high


def test_exact_coder_settles_the_common_prefix():
    coder = ExactCoder()
    coder.encode(2, 3, 5)                            # [0.4, 0.6): no bit is certain yet
    assert coder.settled == 0
    coder.encode(3, 4, 5)                            # [0.52, 0.56): 0.52 = 0.100001.., 0.56 = 0.100011..
    assert coder.settled == settled_prefix(coder.low, coder.high) == 4
    assert binary_digits(coder.low, 4) == binary_digits(coder.high - F(1, 10**9), 4) == "1000"
    assert coder.code_bits().startswith("1000")
    assert abs(coder.ideal_bits() - (-math.log2(F(1, 25)))) < 1e-12


def test_exact_coder_matches_engine_coder_on_quantised_frequencies():
    """Fed the engine's 24-bit frequencies, the exact interval code is as long as the real coder's
    output, give or take the final byte padding."""
    rng = np.random.default_rng(0)
    exact, real = ExactCoder(), ArithmeticEncoder()
    total = 1 << 24
    for _ in range(300):
        cuts = sorted(set(rng.integers(1, total, size=3).tolist()))
        cdf = [0, *cuts, total]
        s = int(rng.integers(0, len(cdf) - 1))
        exact.encode(cdf[s], cdf[s + 1], total)
        real.encode(cdf[s], cdf[s + 1], total)
    real_bits = len(real.finish()) * 8
    assert abs(len(exact.code_bits()) - real_bits) <= 10
    assert len(exact.code_bits()) <= exact.ideal_bits() + 2


def test_lecture_script_runs_plain_and_both_sides_agree():
    r = subprocess.run([sys.executable, "scripts/lecture.py", "--bytes", "48", "--delay", "0", "--show-every", "8"],
                       cwd=ROOT, capture_output=True, timeout=120)
    out = r.stdout.decode()
    assert r.returncode == 0, out[-2000:] + r.stderr.decode()
    assert "\x1b[" not in out                          # not a terminal: plain text
    assert 'the single bit "1"' in out
    assert "[0.4, 0.6)" in out
    assert "MARS decodes step 3" in out and "✓ = Earth's" in out and "✗" not in out
    assert "✔ VERIFIED" in out
    assert "The ledger: the stream cost" in out
    bad = subprocess.run([sys.executable, "scripts/lecture.py", "--preset", "nope"], cwd=ROOT, capture_output=True,
                         timeout=60)
    assert bad.returncode == 2 and bad.stdout == b""                  # refused before anything is shown
    assert bad.stderr.decode() == f"lecture: error: unknown preset 'nope'; choose one of {', '.join(PRESETS)}\n"


def test_the_lectures_ledger_says_the_reports_numbers():
    twin = run_twin(preset("tiny"), mission_log(300))
    ledger = Lecture._ledger(twin, 1234)
    program, state = program_size(), state_sizes(twin)
    assert ledger["program"] == program and ledger["state"] == state
    text = ledger["text"]
    assert text.startswith("The ledger: the stream cost 1,234 bits.")
    assert f"(core + coder, {len(program['files'])} files: {program['gzip_bytes'] * 8:,} bits gzip -9)" in text
    assert f"trained state instead would cost {sum(r['gzip_bytes'] for r in state) * 8:,} bits (gzip -9)" in text
    for r in state:
        assert f"{r['name']} {r['gzip_bytes'] * 8:,}" in text


# -- bad options and inputs: one line, before torch loads; a reader who leaves ends it quietly ----

def lecture(*args, shell_suffix="", timeout=120, **popen):
    """`python scripts/lecture.py ARGS` as a user runs it (through a shell, for `>&-` and the like)."""
    cmd = " ".join(map(shlex.quote, [sys.executable, "scripts/lecture.py", *args])) + shell_suffix
    return subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, timeout=timeout, **popen)


HELP = "; see 'python scripts/lecture.py --help'"


@pytest.mark.parametrize("option,value,message", [
    ("--top", "0", "argument --top: '0' is not a candidate count (a whole number in 1..256)"),
    ("--bytes", "-5", "argument --bytes: '-5' is not a byte count (a whole number in 1..10000)"),
    ("--bytes", "0", "argument --bytes: '0' is not a byte count (a whole number in 1..10000)"),
    ("--delay", "nan", "argument --delay: 'nan' is not a number of seconds (0 to 2,592,000)"),
    ("--delay", "-1", "argument --delay: '-1' is not a number of seconds (0 to 2,592,000)"),
    ("--show-every", "0", "argument --show-every: '0' is not a token count (a whole number in 1..10000)"),
    ("--width", "0", "argument --width: '0' is not a console width (a whole number in 40..1000)"),
    ("--streams", "abc", "argument --streams: 'abc' is not a stream count (a whole number in 1..1024)"),
])
def test_lecture_refuses_a_bad_option_in_one_line(option, value, message):
    """A tester's findings: `--top 0` was an IndexError mid-lecture, `--bytes -5` meant "all but 5
    bytes" (hours), `--delay nan` a ValueError from time.sleep."""
    r = lecture("--delay", "0", option, value, timeout=60)
    assert (r.returncode, r.stdout) == (2, b""), r.stdout.decode()[-2000:] + r.stderr.decode()[-2000:]
    assert r.stderr.decode() == f"lecture: error: {message}{HELP}\n"


def test_lecture_refuses_closed_streams_and_an_endless_input_in_one_line():
    """A tester's findings: stdout closed (`>&-`) was an AttributeError, `--step` with stdin closed
    a RuntimeError ("input(): lost sys.stdin"), `--input /dev/zero` read until memory ran out."""
    r = lecture("--bytes", "48", "--delay", "0", shell_suffix=" >&-")
    assert r.returncode == 2
    assert r.stderr.decode() == ("lecture: error: standard output is closed; run the lecture on a terminal, or "
                                 "into a file or a pipe\n")
    r = lecture("--bytes", "48", "--step", shell_suffix=" <&-")
    assert (r.returncode, r.stdout) == (2, b"")
    assert r.stderr.decode() == ("lecture: error: --step waits for Enter, but standard input is closed; run it "
                                 "from a terminal, or leave out --step\n")
    r = lecture("--input", "/dev/zero", "--delay", "0", timeout=60)
    assert (r.returncode, r.stdout) == (2, b"")
    assert r.stderr.decode() == ("lecture: error: input '/dev/zero' never ends; give a file, or a finite part "
                                 "of it (e.g. head -c 1M /dev/zero > part.bin)\n")


def test_lecture_reads_only_the_bytes_it_shows():
    """`--input` was read whole before --bytes cut it: a pipe is read only as far as it is shown."""
    proc = subprocess.Popen([sys.executable, "scripts/lecture.py", "--input", "/dev/stdin", "--bytes", "48",
                             "--only-example"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    accepted = 0
    try:
        for _ in range(512):                                 # 32 MiB, if the lecture took it all
            proc.stdin.write(b"Sol 1. " * 9362 + b"\n")
            proc.stdin.flush()
            accepted += 65535
    except BrokenPipeError:
        pass
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
    out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err.decode()
    assert 'the single bit "1"' in out.decode() and accepted < 4 << 20


def test_a_reader_who_leaves_ends_the_lecture_quietly():
    """A tester's finding: `lecture.py | head -c 100` aborted (rc 134, "terminate called without an
    active exception"): rich turned the broken pipe into SystemExit while Mars's thread was inside
    torch. Now Mars is stopped first and the lecture exits as a pipe's writer does, 141, silently."""
    proc = subprocess.Popen([sys.executable, "scripts/lecture.py", "--bytes", "200", "--delay", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = proc.stdout.read(8000)                          # past the worked example: Mars is decoding
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, err.decode()
    assert b"EARTH codes" in head and err == b""
