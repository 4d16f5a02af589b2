"""Where the bits go (scripts/where_bits.py): each byte's cost as the engine coded it, and the
match model's guess for it, summed by kind."""
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from scripts.where_bits import KINDS, Costs, costliest_lines, kinds, measure, tables
from shared.coding.codec import compress
from shared.core.config import preset
from shared.texts import mission_log
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def log_costs():
    data = mission_log(4000)
    return data, measure(data, preset("tiny"))


def test_every_byte_costs_what_the_engine_coded_it_with(log_costs):
    data, c = log_costs
    assert not np.isnan(c.bits).any() and (c.bits >= 0).all()
    assert c.bits.sum() == pytest.approx(c.ideal_bits, rel=1e-12)
    _, stats = compress(data, preset("tiny"))          # the same run through file mode
    assert c.bits.sum() == pytest.approx(stats["ideal_bits"], rel=1e-12)
    row_len = -(-len(data) // preset("tiny").streams)
    assert c.position.max() == row_len - 1 and (c.position == np.arange(len(data)) % row_len).all()


def test_the_tables_account_for_every_byte_and_every_bit(log_costs):
    _, c = log_costs
    for title, _, rows in tables(c):
        parts = rows[:3] if title.startswith("by the match") else rows
        assert sum(int(r[1].replace(",", "")) for r in parts) == len(c.bits), title
        assert sum(float(r[3].replace(",", "")) for r in parts) == pytest.approx(c.bits.sum() / 8, abs=len(parts)), title


def test_a_repeat_is_guessed_by_the_match_model_and_costs_little():
    """One stream (the streams of a file are coded side by side, so a repeat must come later in
    time): 600 random bytes, then the same again. The first copy costs about 8 bits a byte and
    has no right guesses; the second is guessed right almost everywhere, for well under a bit."""
    block = np.random.default_rng(7).integers(0, 256, 600, dtype=np.uint8).tobytes()
    c = measure(block + block, replace(preset("tiny"), streams=1))
    first, second = slice(0, 600), slice(616, 1200)       # the match model needs 8 bytes, then a run
    assert (c.guess[first] != c.data[first]).all()
    assert c.bits[first].mean() > 7.0
    assert (c.guess[second] == c.data[second]).mean() > 0.98
    assert c.bits[second].mean() < 0.5
    assert c.run[second].max() == 255                     # the guess has been right 255 times or more


def test_kinds_of_bytes():
    got = [KINDS[k] for k in kinds(np.frombuffer(b"Hi 42,\n\xc3\xa9\x01", dtype=np.uint8))]
    assert got == ["first letter of a word", "rest of a word", "space or tab", "digit", "digit", "punctuation",
                   "newline", "UTF-8 (not ASCII)", "UTF-8 (not ASCII)", "other bytes"]


def test_the_costliest_lines_of_a_text_and_none_of_a_binary(log_costs):
    data, c = log_costs
    lines = costliest_lines(c, 2)
    assert len(lines) == 2 and lines[0][0] >= lines[1][0]
    spent, line, digits = lines[0]
    assert line.encode() in data and len(digits) == len(line)          # ASCII: a digit per byte
    binary = replace(c, data=np.frombuffer(bytes(range(256)) * 16, dtype=np.uint8)[:len(c.data)])
    assert costliest_lines(binary, 2) == []


@pytest.mark.parametrize("args, says", [
    (["/nonexistent/file.txt"], "cannot read /nonexistent/file.txt"),
    (["EMPTY"], "is empty: nothing to measure"),
    (["LOG", "--preset", "nope"], "nope"),
    (["LOG", "--bytes", "-1"], "--bytes must be 0 (all) or more"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, args, says):
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "log").write_bytes(mission_log(200))
    args = [str(tmp_path / "empty") if a == "EMPTY" else str(tmp_path / "log") if a == "LOG" else a for a in args]
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "where_bits.py"), *args], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_a_line_of_wide_characters_gets_a_digit_per_character_aligned_under_it():
    """Each character's digit is the whole bits of its bytes together; a wide (CJK) character
    takes two columns, so its digit gets a space after it."""
    data = "ok\n中文 x\n".encode()
    bits = np.array([0.5, 1.5, 0.1] + [1.0, 1.0, 1.5] + [4.0, 4.0, 4.5] + [0.2, 12.0, 0.3])
    c = Costs(np.frombuffer(data, dtype=np.uint8), bits, np.arange(len(data)), np.full(len(data), -1),
              np.zeros(len(data), dtype=np.int64), float(bits.sum()))
    spent, line, digits = costliest_lines(c, 1)[0]
    assert (spent, line, digits) == (pytest.approx(28.5), "中文 x", "3 9 09")   # its newline counts with it
