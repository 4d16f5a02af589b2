"""Where the bits go (scripts/where_bits.py): each byte's cost as the engine coded it, and the
match model's guess for it, summed by kind. Also scripts/tune.py's command line: where_bits
takes --set through tune.py's apply_overrides."""
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from scripts.tune import apply_overrides
from scripts.where_bits import KINDS, Costs, against, costliest_lines, kinds, measure, tables
from shared.coding.codec import compress
from shared.core.config import preset
from shared.core.errors import UsageError
from shared.texts import mission_log
from tests.helpers import ROOT, child_env


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


KEYS = ("keys: streams, seed, sync_every, preset, model.n_layer, model.n_head, model.n_embd, model.context, "
        "model.chunk, model.orders, model.table_bits, model.words, model.match, model.structure, model.tree, "
        "model.hashed, model.hash_bits, train.lr, train.beta1, train.beta2, train.eps, train.weight_decay, "
        "train.grad_clip, train.steps_per_chunk, train.loss_on_context, train.replay, train.replay_span, "
        "train.lr_decay, train.hashed_lr")


@pytest.mark.parametrize("args, says", [
    (["/nonexistent/file.txt"], "input file '/nonexistent/file.txt' not found; check the path"),
    (["EMPTY"], "EMPTY is empty: nothing to measure"),
    (["LOG", "--preset", "nope"], "unknown preset 'nope'; choose one of fast, default, strong, neural, bulk, tiny"),
    (["LOG", "--bytes", "-1"], "argument --bytes: '-1' is not a count (a whole number, 0 or more); "
                               "see 'python scripts/where_bits.py --help'"),
    (["LOG", "--set", "model=3"], f"--set 'model=3' has an unknown key 'model'; {KEYS}"),      # was an AttributeError
    (["LOG", "--set", "bogus=1"], f"--set 'bogus=1' has an unknown key 'bogus'; {KEYS}"),
    (["LOG", "--set", "model.orders=1,x"], "--set 'model.orders=1,x': '1,x' is not a value; give a number, true or "
                                           "false, or whole numbers with commas (model.orders=1,2,3)"),
    (["LOG", "--set", "model.n_head=0"], "run configuration refused: model.n_head = 0 is outside 1..64"),
    (["/dev/zero"], "input '/dev/zero' never ends; give a file, or pipe a finite part of it in "
                    "(e.g. head -c 1M /dev/zero | ...)"),                                    # was read to memory's end
])
def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, args, says):
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "log").write_bytes(mission_log(200))
    names = {"EMPTY": str(tmp_path / "empty"), "LOG": str(tmp_path / "log")}
    args = [names.get(a, a) for a in args]
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "where_bits.py"), *args], capture_output=True,
                       text=True, timeout=120)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == f"where_bits: error: {says.replace('EMPTY', names['EMPTY'])}\n"


def test_set_overrides_reach_the_configuration_and_a_section_is_not_a_value():
    cfg = apply_overrides(preset("tiny"), ["model.n_embd=32", "train.lr=3e-3", "streams=8", "model.orders=1,2"])
    assert (cfg.model.n_embd, cfg.train.lr, cfg.streams, cfg.model.orders) == (32, 3e-3, 8, (1, 2))
    with pytest.raises(UsageError, match=r"^--set 'train=x' has an unknown key 'train'; keys: streams, "):
        apply_overrides(preset("tiny"), ["train=x"])


# --- scripts/tune.py: every refusal comes before the run, in one line --------------------------

def run_tune(*args, prelude=""):
    """`python scripts/tune.py ARGS` (with `prelude`: that code first, in the same process)."""
    cmd = [sys.executable, str(ROOT / "scripts" / "tune.py"), *args] if not prelude else \
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); {prelude}; import scripts.tune as t; "
                               f"sys.argv[0] = 'scripts/tune.py'; sys.exit(t.main(sys.argv[1:]))", *args]
    return subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, says", [
    (["--file", "/nonexistent/in.txt"], "input file '/nonexistent/in.txt' not found; check the path"),
    (["--file", "LOG", "--preset", "nope"], "unknown preset 'nope'; choose one of fast, default, strong, neural, "
                                            "bulk, tiny"),
    (["--file", "LOG", "--set", "bogus=1"], f"--set 'bogus=1' has an unknown key 'bogus'; {KEYS}"),
    (["--file", "LOG", "--offset", "1000"], "nothing to code: LOG has 200 bytes and --offset 1,000 is at or past its "
                                            "end; give a smaller --offset or another --file"),    # ZeroDivisionError
    (["--file", "LOG", "--bytes", "-5"], "argument --bytes: '-5' is not a count (a whole number, 0 or more); "
                                         "see 'python scripts/tune.py --help'"),
    (["--file", "/dev/zero"], "input '/dev/zero' never ends; give a file, or pipe a finite part of it in "
                              "(e.g. head -c 1M /dev/zero | ...)"),
    (["--file", "LOG", "--log", "/proc/tune.log"], "cannot write '/proc/tune.log': its folder takes no new files (a "
                                                   "virtual file system such as /proc?); choose a folder on a disk, "
                                                   "then run again"),                   # was found after the run
    (["--file", "LOG", "--log", "NOFOLDER"], "output folder 'NODIR' does not exist; create it first"),
])
def test_tune_refuses_bad_input_in_one_line_before_the_run(tmp_path, args, says):
    (tmp_path / "log").write_bytes(mission_log(200))
    names = {"LOG": str(tmp_path / "log"), "NOFOLDER": str(tmp_path / "no" / "tune.log"), "NODIR": str(tmp_path / "no")}
    r = run_tune(*(names.get(a, a) for a in args))
    for name, path in names.items():
        says = says.replace(name, path)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", f"tune: error: {says}\n")     # no result line: no run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]


def test_tune_refuses_an_empty_log_name_before_the_run(tmp_path):
    """Round seven: `--log ""` was taken for no --log at all: the run went on, and its result line
    was written nowhere but the screen. An empty name is refused with the arguments."""
    (tmp_path / "log").write_bytes(mission_log(200))
    r = run_tune("--file", str(tmp_path / "log"), "--preset", "tiny", "--log", "")
    assert (r.returncode, r.stdout, r.stderr) == (2, "", "tune: error: argument --log: an empty name is not a file "
                                                         "name; give a path; see 'python scripts/tune.py --help'\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]


def test_tune_without_the_workspace_corpus_says_where_it_comes_from(tmp_path):
    """The default --file is outside the repository: on a fresh clone the docstring's first
    example was a FileNotFoundError traceback."""
    missing = tmp_path / "shared" / "corpora" / "tinyshakespeare.txt"
    r = run_tune("--bytes", "1000", prelude=f"import scripts.tune, pathlib; "
                                          f"scripts.tune.DEFAULT_FILE = pathlib.Path({str(missing)!r})")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == (f"tune: error: the default --file {missing} is missing: it is tinyshakespeare from the "
                        f"workspace's shared/corpora/ folder beside the repository, not part of a clone; pass --file "
                        f"FILE (e.g. --file shared/texts/mission_log.txt)\n")


def test_tune_runs_and_appends_its_line_to_an_existing_log(tmp_path):
    import json
    (tmp_path / "log").write_bytes(mission_log(2000))
    (tmp_path / "tune.log").write_text("earlier\n")
    r = run_tune("--file", str(tmp_path / "log"), "--preset", "tiny", "--offset", "500", "--bytes", "1000",
                 "--set", "streams=4", "--log", str(tmp_path / "tune.log"))
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout)
    assert (line["bytes"], line["preset"], line["set"]) == (1000, "tiny", ["streams=4"])
    assert (tmp_path / "tune.log").read_text() == "earlier\n" + r.stdout


def test_a_line_of_wide_characters_gets_a_digit_per_character_aligned_under_it():
    """Each character's digit is the whole bits of its bytes together; a wide (CJK) character
    takes two columns, so its digit gets a space after it."""
    data = "ok\n中文 x\n".encode()
    bits = np.array([0.5, 1.5, 0.1] + [1.0, 1.0, 1.5] + [4.0, 4.0, 4.5] + [0.2, 12.0, 0.3])
    c = Costs(np.frombuffer(data, dtype=np.uint8), bits, np.arange(len(data)), np.full(len(data), -1),
              np.zeros(len(data), dtype=np.int64), float(bits.sum()))
    spent, line, digits = costliest_lines(c, 1)[0]
    assert (spent, line, digits) == (pytest.approx(28.5), "中文 x", "3 9 09")   # its newline counts with it


def test_a_reader_who_leaves_early_is_no_traceback(tmp_path):
    """`where_bits.py FILE | head` ended in a BrokenPipeError traceback."""
    (tmp_path / "log").write_bytes(mission_log(2000))
    r = subprocess.run(f"{sys.executable} {ROOT / 'scripts' / 'where_bits.py'} {tmp_path / 'log'} --preset tiny "
                       f"| head -c 50 > /dev/null; exit ${{PIPESTATUS[0]}}", shell=True, executable="/bin/bash",
                       capture_output=True, timeout=300, env=child_env())
    assert (r.returncode, r.stderr) == (0, b"")


def _costs_file(path, data: bytes, bits, lead: bytes = b""):
    """A costs file as scripts/paq8px-costs.patch makes paq8px write one: a record (byte,
    float64 bits) per byte coded, the coder's own `lead` bytes first."""
    from scripts.where_bits import COSTS_RECORD
    records = np.zeros(len(lead) + len(data), dtype=COSTS_RECORD)
    records["byte"] = np.frombuffer(lead + data, dtype=np.uint8)
    records["bits"][:len(lead)] = 5.0
    records["bits"][len(lead):] = bits
    path.write_bytes(records.tobytes())
    return path


def _where_bits(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "where_bits.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_against_another_coders_costs_the_same_bytes_side_by_side(tmp_path):
    """--against: the other coder's cost of the same bytes beside this build's, by kind and at
    the same history; its own leading bytes are skipped, and a prefix (--bytes) is matched."""
    data = mission_log(3000)
    src = tmp_path / "log.txt"
    src.write_bytes(data)
    costs = _costs_file(tmp_path / "other.costs", data, 2.0, lead=b"\x00paq8px\x01")
    r = _where_bits(src, "--preset", "tiny", "--lines", "0", "--against", costs, "--bytes", "2000")
    assert r.returncode == 0, r.stderr
    ours = float(r.stdout.split(" B of coded bits")[0].rsplit(" ", 1)[1].replace(",", ""))
    table = r.stdout.split("against the other coder, the same bytes: by kind\n")[1]
    cells = table.splitlines()[1].split()
    assert cells[:5] == ["all", "2,000", f"{ours:,.0f}", "500", f"{ours - 500:+,.0f}"]
    # the ratio is of the exact bits, `ours` of the whole bytes printed: within half a byte's
    assert float(cells[5]) == pytest.approx(ours / 500, abs=0.5 / 500 + 0.0005)
    history = r.stdout.split("at the same history (bytes seen before; other bytes in each row)\n")[1].split("\n\n")[0]
    [row] = [row.split() for row in history.splitlines()[1:]]
    assert row[3:] == ["2,000", "2.000"]                                  # all seen fewer than 4,096 there
    both = r.stdout.split("the same bytes where both had seen as much\n")[1].splitlines()
    assert both[1].split()[:4] == ["0-4,095", "2,000", row[2], "2.000"]   # and here: all 2,000
    assert float(both[1].split()[4]) == pytest.approx(float(row[2]) / 2, abs=1e-3)
    guesses = r.stdout.split("against the other coder, the same bytes: by the match model's guess\n")[1].splitlines()
    assert [row.split()[0] for row in guesses[1:4]] == ["no", "guess", "guess"]
    assert sum(int(row.split()[-5].replace(",", "")) for row in guesses[1:4]) == 2000      # every byte once


@pytest.mark.parametrize("make, says", [
    (lambda p, d: p.write_bytes(b"\x00" * 100), "is not a costs file: its size is not a multiple of 9 (a byte and "
                                                "a float64 per byte coded); see --help"),
    (lambda p, d: _costs_file(p, d[:100], 1.0), "holds the costs of 100 bytes, fewer than the 200 measured here; "
                                                 "give the costs of this file"),
    (lambda p, d: _costs_file(p, d.upper(), 1.0), "holds the costs of other bytes than this file's; give the costs "
                                                   "of this file"),
    (lambda p, d: _costs_file(p, d, np.nan), "has a cost that is negative or not a number; give the costs another "
                                              "coder wrote"),
    (lambda p, d: _costs_file(p, d + d, 1.0), "holds the costs of more than 264 bytes, this file's and 64 of the "
                                               "coder's own; give the costs of this file (a coder that transforms a "
                                               "block, as paq8px decodes base64, codes other bytes than the file's)"),
])
def test_costs_that_are_not_this_files_are_one_line_before_the_run(tmp_path, make, says):
    data = mission_log(200)
    src, costs = tmp_path / "log.txt", tmp_path / "other.costs"
    src.write_bytes(data)
    make(costs, data)
    r = _where_bits(src, "--preset", "tiny", "--against", costs)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == f"where_bits: error: --against {str(costs)!r} {says}\n"


def test_the_same_bytes_where_both_coders_had_seen_as_much():
    """Two streams of 5,000 bytes: byte i had 2 * (i % 5000) bytes seen here, i there. Below
    4,096 seen on both sides are bytes 0-2,047; from 4,096 to 16,383, bytes 4,096-4,999 and
    7,048-9,999 (stream 1's first 2,048 bytes were coded here with less history than there)."""
    n = 10_000
    data = np.zeros(n, dtype=np.uint8)
    ours = np.where(np.arange(n) < 2048, 3.0, 1.0)
    c = Costs(data, ours, np.arange(n) % 5000, np.full(n, -1), np.zeros(n, dtype=np.int64), float(ours.sum()))
    title, headers, rows = against(c, np.full(n, 2.0), streams=2)[-1]
    assert title == "against the other coder, the same bytes where both had seen as much"
    assert rows == [["0-4,095", "2,048", "3.000", "2.000", "1.500"],
                    ["4,096-16,383", "3,856", "1.000", "2.000", "0.500"]]
