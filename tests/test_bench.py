"""`make bench`'s measuring harness: it follows the children's progress and measures what it says."""
import importlib.util
import sys

from shared.app.cli import PROGRESS_LINE
from shared.texts import mission_log
from tests.helpers import ROOT


def load_bench():
    spec = importlib.util.spec_from_file_location("marslink_bench", ROOT / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_progress_line_format_is_what_bench_parses():
    bench = load_bench()
    line = PROGRESS_LINE.format(label="Mars: decompressing", done=123_456, total=1_115_394, percent=11.07,
                                bpb=", 2.001 bits/byte", rate=301.5, left="0:55:12")
    assert line == "Mars: decompressing: 123,456 / 1,115,394 B (11.1%), 2.001 bits/byte, 302 B/s, 0:55:12 left"
    assert bench.PROGRESS_BYTES.search(line).group(1) == "123,456"


def test_run_child_passes_each_stderr_line_while_it_runs():
    bench = load_bench()
    seen = []
    code = "import sys, time\nfor i in range(3):\n    print('line', i, file=sys.stderr, flush=True); time.sleep(0.3)\n"
    r = bench.run_child([sys.executable, "-c", code], on_line=seen.append)
    assert r["rc"] == 0
    assert seen == ["line 0", "line 1", "line 2"]
    assert r["stderr"] == "line 0\nline 1\nline 2"


def test_bench_marslink_round_trip_with_progress(tmp_path):
    bench = load_bench()
    src = tmp_path / "log.txt"
    src.write_bytes(mission_log(3000))
    calls = []
    rec = bench.bench_marslink(str(src), 3000, "tiny", "portable", tmp_path, lambda done, line: calls.append(done))
    assert "error" not in rec, rec.get("error")
    assert rec["verified"] is True
    assert rec["bits_per_byte"] == rec["compressed_bytes"] * 8 / 3000
    # each side's last line (100%) always comes: compress ends at n, decompress at 2n
    assert 3000 in calls and calls[-1] == 6000
    assert calls == sorted(calls)
