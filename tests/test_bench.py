"""`make bench`'s measuring harness: it follows the children's progress and measures what it says."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

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
                                note="", bpb=", 2.001 bits/byte", rate=301.5, left="0:55:12")
    assert line == "Mars: decompressing: 123,456 / 1,115,394 B (11.1%), 2.001 bits/byte, 302 B/s, 0:55:12 left"
    assert bench.PROGRESS_BYTES.search(line).group(1) == "123,456"
    segmented = PROGRESS_LINE.format(label="Earth: compressing", done=9_000_000, total=10_000_000, percent=90.0,
                                     note=", 3/4 segments", bpb="", rate=20_000, left="0:00:50")
    assert bench.PROGRESS_BYTES.search(segmented).group(1) == "9,000,000"


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
    src.write_bytes(mission_log(1000))          # small: the children's start-up is most of the run
    calls = []
    rec = bench.bench_marslink(str(src), 1000, "tiny", "portable", tmp_path, lambda done, line: calls.append(done))
    assert "error" not in rec, rec.get("error")
    assert rec["verified"] is True
    assert rec["bits_per_byte"] == rec["compressed_bytes"] * 8 / 1000
    # each side's last line (100%) always comes: compress ends at n, decompress at 2n
    assert 1000 in calls and calls[-1] == 2000
    assert calls == sorted(calls)


def test_bench_jobs_compares_one_worker_with_two_on_the_same_file(tmp_path):
    """--jobs (issue 24): the same segmented file through --jobs 1 (this process) and --jobs 2
    (two workers), twice, alternating; every round trip checked, every file compared byte for
    byte with the first, the medians of each side's runs compared."""
    import statistics
    bench = load_bench()
    src = tmp_path / "log.txt"
    src.write_bytes(mission_log(2100))          # three segments, the last one short: 1,024 + 1,024 + 52
    rec = bench.bench_jobs(str(src), 2100, "tiny", "portable", tmp_path, 1024, 2, repeat=2)
    assert "error" not in rec, rec.get("error")
    assert (rec["segments"], rec["workers_1"], rec["workers_2"]) == (3, "this process", "2 worker processes")
    assert rec["same_bytes"] is True and rec["verified"] is True
    assert [r["jobs"] for r in rec["runs"]] == [1, 2, 1, 2]
    assert rec["compress_wall_seconds_2"] == statistics.median(r["compress_wall_seconds"] for r in rec["runs"][1::2])
    assert rec["compress_speedup"] == rec["compress_wall_seconds_1"] / rec["compress_wall_seconds_2"]
    row = next(bench.jobs_rows([{**rec, "file": "log.txt"}]))
    assert row[:3] == ["log.txt", "tiny", "3 x 1,024 B"] and row[-1] == "same bytes, exact"


# --- paq8px beside the classic compressors (issue 23), through a stand-in with its command line ---
FAKE_PAQ8PX = """#!/bin/sh
# paq8px's command line: no arguments prints the version and help; -8 IN ARCHIVE; -d ARCHIVE OUT.
# The "archive" is the input plus a 5-byte trailer, so its size is known exactly.
if [ $# -eq 0 ]; then echo "paq8px v216 (c) 2025, Matt Mahoney et al."; echo "Usage: ..."; exit 0; fi
case "$1" in
  -8) cat "$2" > "$3" && printf 'PAQ8X' >> "$3" ;;
  -d) head -c -5 "$2" > "$3" ;;
  *) echo "unknown option $1" >&2; exit 2 ;;
esac
"""


def fake_paq8px(tmp_path, body=FAKE_PAQ8PX):
    exe = tmp_path / "paq8px"
    exe.write_text(body)
    exe.chmod(0o755)
    return exe


def test_paq8px_round_trip_is_measured_like_the_classic_tools(tmp_path):
    bench = load_bench()
    exe = fake_paq8px(tmp_path)
    src = tmp_path / "log.txt"
    src.write_bytes(mission_log(5000))
    work = tmp_path / "work"
    work.mkdir()
    assert bench.paq8px_version(str(exe)) == "216"
    rec = bench.bench_paq8px(str(exe), str(src), 5000, work)
    assert "error" not in rec, rec.get("error")
    assert rec["compressor"] == "paq8px -8" and rec["kind"] == "paq8px"
    assert rec["verified"] is True
    assert rec["compressed_bytes"] == 5005
    assert rec["bits_per_byte"] == 5005 * 8 / 5000
    assert rec["compress_bytes_per_second"] == 5000 / rec["compress_seconds"]
    assert rec["decompress_bytes_per_second"] == 5000 / rec["decompress_seconds"]
    assert rec["peak_rss_bytes"] == max(rec["compress_peak_rss_bytes"], rec["decompress_peak_rss_bytes"]) > 0
    assert rec["compress_cpu_seconds"] >= 0 and rec["decompress_cpu_seconds"] >= 0


def test_paq8px_that_loses_a_byte_is_reported(tmp_path):
    bench = load_bench()
    exe = fake_paq8px(tmp_path, FAKE_PAQ8PX.replace("head -c -5", "head -c -6"))
    src = tmp_path / "in.bin"
    src.write_bytes(bytes(range(256)) * 4)
    rec = bench.bench_paq8px(str(exe), str(src), 1024, tmp_path)
    assert rec["verified"] is False
    assert rec["error"] == "decompressed output differs from the input"


def test_paq8px_failure_is_reported_with_its_message(tmp_path):
    bench = load_bench()
    exe = fake_paq8px(tmp_path, FAKE_PAQ8PX.replace('-d) head -c -5 "$2" > "$3" ;;',
                                                    '-d) echo "Archive is corrupted" >&2; exit 1 ;;'))
    src = tmp_path / "in.bin"
    src.write_bytes(b"x" * 100)
    rec = bench.bench_paq8px(str(exe), str(src), 100, tmp_path)
    assert rec["error"] == "paq8px exited 1 decompressing: Archive is corrupted"


def run_bench(*args, env=None, timeout=300):
    import os
    import subprocess
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_bench_with_paq8px_writes_its_row_table_and_plot(tmp_path):
    import json
    exe = fake_paq8px(tmp_path)
    src = tmp_path / "log.txt"
    src.write_bytes(mission_log(4000))
    out = tmp_path / "out"
    r = run_bench("--presets", "", "--no-classic", "--files", str(src), "--out", str(out),
                  env={"PAQ8PX": str(exe)})
    assert r.returncode == 0, r.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["paq8px"] == {"path": str(exe), "version": "216", "level": "-8"}
    [row] = results["results"]
    assert (row["file"], row["compressor"], row["compressed_bytes"], row["verified"]) == \
        ("log.txt", "paq8px -8", 4005, True)
    assert "| log.txt | paq8px -8 | 4,005 | 8.010 |" in (out / "results.md").read_text()
    assert (out / "frontier.png").stat().st_size > 0


def test_bad_paq8px_binary_is_a_one_line_error(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"hello\n")
    hint = "build it from github hxim/paq8px (cd build && bash build-linux-with-gcc.sh) or unset PAQ8PX"
    common = ("--presets", "", "--no-classic", "--files", str(src), "--out", str(tmp_path / "out"))
    missing = tmp_path / "nowhere" / "paq8px"
    r = run_bench("--paq8px", str(missing), *common)
    assert (r.returncode, r.stderr) == (1, f"bench: paq8px binary {str(missing)!r} not found; {hint}\n")
    not_exe = tmp_path / "paq8px.txt"
    not_exe.write_text("not a program")
    r = run_bench(*common, env={"PAQ8PX": str(not_exe)})
    assert (r.returncode, r.stderr) == \
        (1, f"bench: paq8px binary {str(not_exe)!r} does not run (PermissionError: Permission denied); {hint}\n")
    other = fake_paq8px(tmp_path, "#!/bin/sh\necho 'gzip 1.12'\n")
    r = run_bench("--paq8px", str(other), *common)
    assert (r.returncode, r.stderr) == (1, f"bench: {str(other)!r} does not print a paq8px version when run; {hint}\n")
    assert not (tmp_path / "out" / "results.json").exists()


def test_an_out_that_is_a_file_is_refused_in_one_line_and_left_alone(tmp_path):
    """It was a FileExistsError traceback."""
    out = tmp_path / "results"
    out.write_text("mine\n")
    r = run_bench("--presets", "", "--no-classic", "--out", str(out))
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (f"bench: error: --out {str(out)!r} is a file, not a folder; give a folder "
                        f"(it is created if missing)\n")
    assert out.read_text() == "mine\n"


def test_a_limit_that_is_not_positive_is_refused(tmp_path):
    """`--limit -100` meant 'all but the last 100 bytes' of each file, silently."""
    for limit in ("-100", "0", "1e3"):
        r = run_bench("--presets", "", "--no-classic", "--limit", limit, "--out", str(tmp_path / "out"))
        assert (r.returncode, r.stdout) == (2, "")
        assert r.stderr == (f"bench: error: argument --limit: {limit!r} is not a positive count (a whole number, "
                            f"1 or more); see 'python scripts/bench.py --help'\n")
    assert not (tmp_path / "out").exists()


def test_each_build_is_warmed_up_before_it_is_timed(tmp_path, monkeypatch):
    """A --baseline build is a fresh checkout: its first run compiled numba's loops inside its
    timed compress (about 30 s and 100 MB more than the build it was compared with). Each build
    now makes one untimed round trip of each preset first; one that fails it stops the bench."""
    bench = load_bench()
    src = tmp_path / "log.txt"
    src.write_bytes(mission_log(2000))
    calls = []

    def fake(path, n, preset, profile, work, on_progress=None, build=None):
        calls.append((Path(path).name, n, preset, build.name if build else "this"))
        return {} if Path(path).name == "warm.txt" else {"compressor": preset, "kind": "marslink", "error": "not run"}
    monkeypatch.setattr(bench, "bench_marslink", fake)
    args = ["--presets", "tiny,fast", "--no-classic", "--files", str(src), "--baseline", "HEAD",
            "--out", str(tmp_path / "out")]
    bench.main(args)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=10", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    warm = [(p, b) for name, n, p, b in calls if name == "warm.txt" and n == bench.WARM_BYTES]
    assert warm == [("tiny", "this"), ("tiny", head), ("fast", "this"), ("fast", head)]
    assert calls[:4] == [("warm.txt", bench.WARM_BYTES, p, b) for p, b in warm]     # before any timed run
    assert sorted(c[2:] for c in calls[4:]) == sorted(warm) and all(c[0] == "log.txt" for c in calls[4:])

    def broken(path, n, preset, profile, work, on_progress=None, build=None):
        return {"error": "alice exited 1: boom"}
    monkeypatch.setattr(bench, "bench_marslink", broken)
    with pytest.raises(SystemExit) as stop:
        bench.main(args[:-1] + [str(tmp_path / "out2")])
    assert str(stop.value) == "bench: tiny failed its warm-up round trip: alice exited 1: boom"
