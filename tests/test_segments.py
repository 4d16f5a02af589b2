"""Segment-parallel file mode (issue 24): the same bytes for any number of workers, on this
machine or a real Dask cluster on loopback; one-line refusals; honest stats; no process left.

Small on purpose: the tiny preset, 1 KiB segments, a few KB of input."""
import dataclasses
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path

import pytest

from shared.app import parallel
from shared.app.parallel import InProcess, compress_file
from shared.coding.codec import compress
from shared.coding.container import DEFAULT_SEGMENT, MAX_SEGMENTS, parse
from shared.core.config import preset
from shared.core.errors import FormatError
from shared.texts import mission_log
from tests.helpers import (ROOT, child_env, dask_scheduler, dask_worker, expect_error, free_port, kill_all,
                           leftovers, run_cli, sigint_at_default, spawn, tagged_processes)

DATA = mission_log(2200)        # three segments of 1 KiB: 1024, 1024, 152
SEGMENT = 1024
TINY = preset("tiny")


def quiet(done, bits=None, note=""):
    pass


@pytest.fixture(scope="module")
def one_job():
    """The reference: --jobs 1, in this process."""
    return compress_file(DATA, TINY, SEGMENT, InProcess("portable"), quiet)


def test_jobs_2_gives_the_bytes_of_jobs_1_and_round_trips(tmp_path, one_job):
    """Two spawned worker processes (the CLI, --verify: they decode it too), against one job in
    this process. Progress lines count segments; nothing is said about --threads, not given (round
    seven); the stats add up; no worker is left behind."""
    blob, stats = one_job
    src, out = tmp_path / "in.txt", tmp_path / "in.mrs"
    src.write_bytes(DATA)
    tag = uuid.uuid4().hex
    r = run_cli("sender", "compress", str(src), str(out), "--preset", "tiny", "--segment", "1K", "--jobs", "2",
                "--verify", "--progress-every", "0.01", "--stats-json", str(tmp_path / "a.json"),
                env={"MARSLINK_TEST_TAG": tag})
    assert r.returncode == 0, r.stderr.decode()
    assert out.read_bytes() == blob
    assert tagged_processes(tag) == []
    lines = r.stderr.decode().splitlines()
    assert not any("--threads" in line for line in lines), lines      # said only with --threads (round seven)
    done = [line for line in lines if "2,200 / 2,200 B (100.0%), 3/3 segments" in line]
    assert [line.split(":")[1].strip() for line in done] == ["compressing", "verifying"], lines
    a = json.loads((tmp_path / "a.json").read_text())
    assert a["segments"] == 3 and a["segment_size"] == SEGMENT and a["workers"] == "2 worker processes"
    assert [s["input_bytes"] for s in a["segment_stats"]] == [1024, 1024, 152]
    assert a["payload_bytes"] == sum(s["payload_bytes"] for s in a["segment_stats"]) == stats["payload_bytes"]
    assert a["compressed_bytes"] == len(blob) == a["payload_bytes"] + a["header_bytes"]
    assert a["final_digest"] == stats["final_digest"] and a["verified"] is True


def test_jobs_4_gives_the_bytes_of_jobs_1(tmp_path):
    """Four workers (more than the cores here) on five segments: the file of one job, byte for byte."""
    data = mission_log(4200)                 # 4 x 1,024 + 104
    src, out = tmp_path / "in.txt", tmp_path / "in.mrs"
    src.write_bytes(data)
    blob, _ = compress_file(data, TINY, SEGMENT, InProcess("portable"), quiet)
    r = run_cli("sender", "compress", str(src), str(out), "--preset", "tiny", "--segment", "1K", "--jobs", "4",
                "-q", "--stats-json", str(tmp_path / "a.json"))
    assert r.returncode == 0, r.stderr.decode()
    assert out.read_bytes() == blob
    a = json.loads((tmp_path / "a.json").read_text())
    assert (a["segments"], a["workers"]) == (5, "4 worker processes")


def test_the_parent_of_workers_never_loads_torch(tmp_path, one_job):
    """With --jobs 2 only the workers load torch (seconds of start-up each); the parent cuts,
    assembles and checks, so its own start-up is not on the critical path. Checked in the parent
    itself, after a compress with --verify and a decompress."""
    src = tmp_path / "in.txt"
    src.write_bytes(DATA)
    mrs, back = tmp_path / "in.mrs", tmp_path / "back.txt"
    code = ("import sys\nfrom sender.cli import main as alice\nfrom receiver.cli import main as bob\n"
            f"a = alice(['compress', {str(src)!r}, {str(mrs)!r}, '--preset', 'tiny', '--segment', '1K', "
            "'--jobs', '2', '--verify', '-q'])\n"
            f"b = bob(['decompress', {str(mrs)!r}, {str(back)!r}, '--jobs', '2', '-q'])\n"
            "print(a, b, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=child_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.stdout.split() == ["0", "0", "False"], r.stderr
    assert mrs.read_bytes() == one_job[0] and back.read_bytes() == DATA


def test_workers_refuse_a_file_of_other_arithmetic_in_one_line(tmp_path, one_job):
    """The parent no longer compares the file's arithmetic itself: each worker does, before its
    first token, and the run ends in the same one line as with one job."""
    one = parse(one_job[0])
    ours = one.header["fingerprint"]["canary"]
    one.header["fingerprint"] = {**one.header["fingerprint"], "canary": "0123456789abcdef"}
    bad = tmp_path / "other.mrs"
    bad.write_bytes(one.to_bytes())
    before = leftovers(tmp_path)
    for jobs in ("1", "2"):
        r = run_cli("receiver", "decompress", str(bad), str(tmp_path / "out.txt"), "--jobs", jobs)
        expect_error(r, "bob: error: numeric profile mismatch in 'canary': the file has '0123456789abcdef', this "
                        f"machine has {ours!r}; both sides need a marslink build with "
                        "the same arithmetic", tmp_path, before)


def test_workers_die_with_a_killed_alice(tmp_path):
    """SIGKILL runs no cleanup in Alice; her workers still end (they asked the kernel to kill
    them with their parent) and nothing is written."""
    src = tmp_path / "in.txt"
    src.write_bytes(DATA)
    tag = uuid.uuid4().hex
    alice = subprocess.Popen([sys.executable, "-m", "sender", "compress", str(src), str(tmp_path / "out.mrs"),
                              "--preset", "tiny", "--segment", "1K", "--jobs", "2"], cwd=ROOT,
                             env=child_env(MARSLINK_TEST_TAG=tag), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(tagged_processes(tag)) < 3 and time.monotonic() < deadline:   # Alice and two workers
            time.sleep(0.2)
        assert len(tagged_processes(tag)) >= 3, "the workers never started"
    finally:
        kill_all(alice)
    deadline = time.monotonic() + 30
    while tagged_processes(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in tagged_processes(tag)] == []
    assert leftovers(tmp_path) == ["in.txt"]


def test_a_dead_worker_process_is_one_line_and_nothing_is_written(tmp_path):
    """A --jobs worker killed mid-segment (SIGKILL, as the OOM killer would): one line, exit 2."""
    src = tmp_path / "in.txt"
    src.write_bytes(DATA)
    before = leftovers(tmp_path)
    r = run_cli("sender", "compress", str(src), str(tmp_path / "out.mrs"), "--preset", "tiny", "--segment", "1K",
                "--jobs", "2", env={parallel.FAULT_KILL_ENV: "2"})
    expect_error(r, "alice: error: a worker process died (killed, or out of memory?); nothing was written; run "
                    "again, with fewer --jobs if memory is short", tmp_path, before)


def test_each_segment_is_a_one_twin_file_of_its_bytes(one_job):
    """Independent twins: the middle segment's payload is what one twin makes of its bytes alone."""
    blob, _ = one_job
    c, alone = parse(blob), parse(compress(DATA[SEGMENT:2 * SEGMENT], TINY)[0])
    start = c.segments[0].payload_bytes
    assert c.payload[start:start + c.segments[1].payload_bytes] == alone.payload
    assert c.segments[1].sha256 == alone.header["sha256"]


def test_an_input_smaller_than_a_segment_codes_as_one_twin():
    data = DATA[:900]
    blob, stats = compress_file(data, TINY, 4 * SEGMENT, InProcess("portable"), quiet)
    today, today_stats = compress(data, TINY)
    ours, theirs = parse(blob), parse(today)
    assert ours.payload == theirs.payload and ours.digests == theirs.digests
    assert ours.header["segment_size"] == 4 * SEGMENT and len(ours.segments) == 1
    assert stats["final_digest"] == today_stats["final_digest"] and stats["ideal_bits"] == today_stats["ideal_bits"]
    def but_size(header):
        return {k: v for k, v in header.items() if k != "segment_size"}
    assert but_size(ours.header) == but_size(theirs.header) and ours.segments == theirs.segments
    assert compress_file(data, TINY, DEFAULT_SEGMENT, InProcess("portable"), quiet)[0] == today   # alice's default


def _rewrite(blob: bytes, edit) -> bytes:
    """The file with its segment table changed by `edit` (rows of Segment), every checksum made
    right again: only the table's own checks stand between it and a decoder."""
    c = parse(blob)
    c.segments = edit(list(c.segments))
    return c.to_bytes()


def _moved(rows):
    return [rows[0], dataclasses.replace(rows[1], offset=1000), rows[2]]


def test_a_damaged_segment_table_is_one_line(tmp_path, one_job):
    blob, _ = one_job
    with pytest.raises(FormatError, match=r"^'f' has a damaged segment table \(segment 1 at 1,000\+1,024, "
                                          r"expected 1,024\+1,024\); the file is corrupted$"):
        parse(_rewrite(blob, _moved), "'f'")
    with pytest.raises(FormatError, match=r"damaged segment table \(2 rows for 3 segments\)"):
        parse(_rewrite(blob, lambda rows: rows[:2]))
    with pytest.raises(FormatError, match=r"damaged segment table \(segment payload sizes do not add up"):
        parse(_rewrite(blob, lambda rows: [dataclasses.replace(rows[0], payload_bytes=1), *rows[1:]]))
    bad = tmp_path / "bad.mrs"
    bad.write_bytes(_rewrite(blob, _moved))
    before = leftovers(tmp_path)
    r = run_cli("receiver", "decompress", str(bad), str(tmp_path / "out.txt"))
    expect_error(r, f"bob: error: '{bad}' has a damaged segment table (segment 1 at 1,000+1,024, expected "
                    f"1,024+1,024); the file is corrupted", tmp_path, before)


def test_too_many_segments_are_refused_before_the_work(tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(bytes(MAX_SEGMENTS * 1024 + 1))
    before = leftovers(tmp_path)
    r = run_cli("sender", "compress", str(src), str(tmp_path / "out.mrs"), "--segment", "1K", "--preset", "tiny")
    expect_error(r, f"alice: error: --segment 1,024 cuts this {MAX_SEGMENTS * 1024 + 1:,}-byte input into "
                    f"{MAX_SEGMENTS + 1:,} segments, more than {MAX_SEGMENTS:,}; give --segment 2K or more",
                 tmp_path, before)


def test_a_flipped_payload_bit_names_the_file_not_a_segment(one_job):
    blob, _ = one_job
    bad = bytearray(blob)
    bad[-5] ^= 0x10
    with pytest.raises(FormatError, match="payload checksum mismatch"):
        parse(bytes(bad))
    forged = _rewrite(blob, lambda rows: [dataclasses.replace(rows[0], payload_crc32=zlib.crc32(b"x")), *rows[1:]])
    with pytest.raises(FormatError, match="segment 0 checksum mismatch"):
        parse(forged)


def test_a_divergence_in_a_worker_is_named_not_called_a_death(tmp_path, one_job):
    """A payload byte changed in segment 0, every checksum made right again: the twin decoding it
    diverges. Raised in a --jobs worker, that error once failed to reach the parent (it could
    not be unpickled), which then said 'a worker process died'. Both ways name the step now."""
    blob, _ = one_job
    c = parse(blob)
    n0 = c.segments[0].payload_bytes
    payload = bytearray(c.payload)
    payload[n0 - 8] ^= 0x20                 # late: the decoder reaches the last digest before the payload runs out
    c.payload = bytes(payload)
    c.segments = [dataclasses.replace(c.segments[0], payload_crc32=zlib.crc32(c.payload[:n0])), *c.segments[1:]]
    bad = tmp_path / "bad.mrs"
    bad.write_bytes(c.to_bytes())
    before = leftovers(tmp_path)
    one = run_cli("receiver", "decompress", str(bad), str(tmp_path / "one.txt"), "--jobs", "1")
    two = run_cli("receiver", "decompress", str(bad), str(tmp_path / "two.txt"), "--jobs", "2")
    assert one.returncode == two.returncode == 2 and one.stderr == two.stderr, (one.stderr, two.stderr)
    assert re.fullmatch(rb"bob: error: weights diverged at step \d+: .*\(nothing was written\)\n", two.stderr), two.stderr
    assert leftovers(tmp_path) == before


BAD_OPTIONS = [
    *[(["--segment", size], f"argument --segment: {size!r} is not a segment size: give 1K to 1G, e.g. 4M "
                            f"(K, M, G: KiB, MiB, GiB)") for size in ("0", "2G", "4X", "1.5M")],
    # round eight: past Python's 4,300 digits, int() itself refused, and argparse echoed all of them
    (["--segment", "9" * 5000 + "K"], f"argument --segment: {'9' * 40!r} is not a segment size: give 1K to 1G, "
                                      f"e.g. 4M (K, M, G: KiB, MiB, GiB)"),
    (["--cluster", "tcp://h:" + "9" * 5000], f"argument --cluster: {('tcp://h:' + '9' * 5000)[:80]!r} is not a Dask "
                                             f"scheduler address: give tcp://HOST:PORT, e.g. tcp://127.0.0.1:8786"),
    (["--jobs", "0"], "argument --jobs: '0' is not a number of worker processes (a whole number in 1..1024)"),
    (["--jobs", "two"], "argument --jobs: 'two' is not a number of worker processes (a whole number in 1..1024)"),
    (["--cluster", "localhost:8786"], "argument --cluster: 'localhost:8786' is not a Dask scheduler address: give "
                                      "tcp://HOST:PORT, e.g. tcp://127.0.0.1:8786"),
    (["--cluster", "tcp://h:99999"], "argument --cluster: 'tcp://h:99999' is not a Dask scheduler address: give "
                                     "tcp://HOST:PORT, e.g. tcp://127.0.0.1:8786"),
    (["--jobs", "2", "--cluster", "tcp://h:1"], "argument --cluster: not allowed with argument --jobs"),
]


@pytest.mark.parametrize("args,message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_are_one_line_and_write_nothing(tmp_path, args, message):
    src = tmp_path / "in.txt"
    src.write_bytes(DATA)
    before = leftovers(tmp_path)
    r = run_cli("sender", "compress", str(src), str(tmp_path / "out.mrs"), *args)
    expect_error(r, f"alice compress: error: {message}; see 'alice compress --help'", tmp_path, before)


def test_bob_refuses_bad_jobs_the_same_way(tmp_path):
    before = leftovers(tmp_path)
    r = run_cli("receiver", "decompress", str(tmp_path / "x.mrs"), str(tmp_path / "out"), "--jobs", "-1")
    expect_error(r, "bob decompress: error: argument --jobs: '-1' is not a number of worker processes (a whole "
                    "number in 1..1024); see 'bob decompress --help'", tmp_path, before)


def test_memory_caps_the_default_jobs_and_says_so(monkeypatch):
    need = parallel.worker_memory(TINY, SEGMENT)
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(parallel, "available_memory", lambda: need * 10**6)
    assert parallel.default_jobs(TINY, SEGMENT, 1000) == (min(cores, 1000), None)
    assert parallel.default_jobs(TINY, SEGMENT, 1) == (1, None)        # never more workers than segments
    monkeypatch.setattr(parallel, "available_memory", lambda: need * 3 // 2)
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: set(range(8)))
    assert parallel.default_jobs(TINY, SEGMENT, 100) == (
        1, f"1 worker(s), not 8: each needs about {need >> 20:,} MiB and {need * 3 // 2 >> 20:,} MiB of memory "
           f"are available")


# -- a real Dask cluster on loopback --------------------------------------------------------------

def test_dask_cluster_redoes_a_killed_workers_segment_and_gives_the_same_bytes(tmp_path, one_job):
    """A real scheduler; its only worker dies by SIGKILL after step 2 of its first segment. Two
    workers that join later code every segment, that one again from its start: the bytes of
    --jobs 1. Then Bob decodes on the same cluster."""
    blob, _ = one_job
    src, out, back = tmp_path / "in.txt", tmp_path / "in.mrs", tmp_path / "back.txt"
    src.write_bytes(DATA)
    scheduler, address = dask_scheduler(tmp_path)
    doomed = dask_worker(address, tmp_path, "doomed", MARSLINK_FAULT_KILL_STEP="2")
    alice, later = None, []
    try:
        alice = spawn("sender", "compress", str(src), str(out), "--preset", "tiny", "--segment", "1K",
                      "--cluster", address, "--stats-json", str(tmp_path / "a.json"))
        assert doomed.wait(120) == -9
        later = [dask_worker(address, tmp_path, f"later{i}") for i in range(2)]
        _, err = alice.communicate(timeout=180)
        assert alice.returncode == 0, err.decode()
        assert out.read_bytes() == blob
        assert json.loads((tmp_path / "a.json").read_text())["workers"] == f"Dask scheduler {address}"
        r = run_cli("receiver", "decompress", str(out), str(back), "--cluster", address, "--progress-every", "0.001")
        assert r.returncode == 0, r.stderr.decode()
        assert back.read_bytes() == DATA
        # the workers report each segment's steps as they go, not only its end: bytes are counted
        # while no segment has finished yet
        lines = r.stderr.decode().splitlines()
        assert any(re.match(r"Mars: decompressing: [1-9][\d,]* / 2,200 B \([\d.]+%\), 0/3 segments", line)
                   for line in lines), lines
    finally:
        kill_all(*[p for p in (alice, doomed, *later, scheduler) if p is not None])


def test_workers_without_marslink_or_with_other_arithmetic_are_one_line(tmp_path):
    scheduler, address = dask_scheduler(tmp_path)
    src = tmp_path / "in.txt"
    src.write_bytes(DATA)
    no_marslink = tmp_path / "no_marslink.py"
    no_marslink.write_text("import sys\nsys.modules['shared'] = None   # as if marslink were not installed\n")
    other = tmp_path / "other_arithmetic.py"
    other.write_text("from shared.core import portable\nportable.ARITHMETIC_VERSION = 'other-7'\n")
    worker = None
    try:
        worker = dask_worker(address, tmp_path, "bare", "--preload", str(no_marslink))
        before = leftovers(tmp_path)
        r = run_cli("sender", "compress", str(src), str(tmp_path / "x.mrs"), "--preset", "tiny", "--cluster", address)
        err = r.stderr.decode().strip()
        assert r.returncode == 2 and "\n" not in err, err
        assert err.startswith("alice: error: Dask worker tcp://127.0.0.1:") and "cannot run marslink (" in err
        assert err.endswith("install this marslink release on every worker (docs/cluster.md)")
        assert leftovers(tmp_path) == before
        kill_all(worker)
        worker = dask_worker(address, tmp_path, "other", "--preload", str(other))
        r = run_cli("sender", "compress", str(src), str(tmp_path / "x.mrs"), "--preset", "tiny", "--cluster", address)
        err = r.stderr.decode().strip()
        assert r.returncode == 2 and "\n" not in err, err
        assert err.startswith("alice: error: numeric profile mismatch in 'arithmetic': Dask worker tcp://127.0.0.1:")
        assert "has 'other-7'" in err
    finally:
        kill_all(*[p for p in (worker, scheduler) if p is not None])


def short_wait(name: str, seconds: int) -> str:
    """A spawn prelude: alice's Dask wait `name` (parallel.DASK_WORKERS_S, ...) set to `seconds`.
    Her wait and her message read the constant when they run, so both use the shorter time; the
    tests check that message exactly, and that she ends in time, without sitting through the
    default wait."""
    return f"from shared.app import parallel; parallel.{name} = {seconds}"


def run_alice(*args, prelude=None, timeout=120) -> subprocess.CompletedProcess:
    """run_cli for alice, after `prelude` (see helpers.spawn); never waits past `timeout`."""
    alice = spawn("sender", *args, prelude=prelude)
    try:
        out, err = alice.communicate(timeout=timeout)
    finally:
        kill_all(alice)
    return subprocess.CompletedProcess(alice.args, alice.returncode, out, err)


def test_a_scheduler_without_workers_is_one_line_in_time(tmp_path):
    """A scheduler that answers but has no worker: alice says so after DASK_WORKERS_S and how
    to start one, instead of waiting for ever; nothing is written. DASK_WORKERS_S is 2 s here
    (20 s by default): the message names the wait it made."""
    scheduler, address = dask_scheduler(tmp_path)
    src = tmp_path / "in.txt"
    src.write_bytes(DATA)
    try:
        before = leftovers(tmp_path)
        started = time.monotonic()
        r = run_alice("compress", str(src), str(tmp_path / "x.mrs"), "--preset", "tiny", "--cluster", address,
                      prelude=short_wait("DASK_WORKERS_S", 2))
        expect_error(r, f"alice: error: the Dask scheduler at {address} has no workers after 2 s; "
                        f"start some with 'dask worker {address} --nthreads 1'", tmp_path, before)
        assert time.monotonic() - started < 90      # 2 s, and the start-up of a loaded machine
    finally:
        kill_all(scheduler)


def test_an_unreachable_scheduler_is_one_line_in_time(tmp_path):
    """Nobody listens at the address: alice gives up after DASK_CONNECT_S (1 s here, 10 s by
    default) in one line that names the wait."""
    src = tmp_path / "in.txt"
    src.write_bytes(DATA)
    address = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    r = run_alice("compress", str(src), str(tmp_path / "x.mrs"), "--cluster", address,
                  prelude=short_wait("DASK_CONNECT_S", 1))
    err = r.stderr.decode().strip()
    assert r.returncode == 2 and "\n" not in err, err
    assert err.startswith(f"alice: error: cannot reach the Dask scheduler at {address} within 1 s (")
    assert err.endswith("start it with 'dask scheduler' and check the address")
    assert time.monotonic() - started < 60      # 1 s, and the start-up of a loaded machine



# -- round seven ----------------------------------------------------------------------------------

SIX = mission_log(6000)         # six segments of 1 KiB (5 x 1,024 + 880)


def test_threads_with_worker_processes_is_said_and_reported_as_it_runs(tmp_path, one_job):
    """Round seven: `--jobs 2 --threads 4` ran each worker on one thread, silently, and the stats
    said "threads": 4. One line now says what --threads does there, and the stats say 1; the file
    is the one without --threads (one_job: the bytes `--jobs 2` alone writes, as
    test_jobs_2_gives_the_bytes_of_jobs_1_and_round_trips checks, with nothing said there about
    --threads)."""
    src = tmp_path / "in.txt"
    src.write_bytes(DATA)
    r = run_cli("sender", "compress", str(src), str(tmp_path / "t.mrs"), "--preset", "tiny", "--segment", "1K",
                "--jobs", "2", "--threads", "4", "--stats-json", str(tmp_path / "t.json"))
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stderr.decode().splitlines()
    assert "alice: --threads 4 is for one process; the 2 worker processes use one thread each" in lines, lines
    assert json.loads((tmp_path / "t.json").read_text())["threads"] == 1
    assert (tmp_path / "t.mrs").read_bytes() == one_job[0]


@pytest.mark.parametrize("after", [0.05, 0.1, 0.15, 0.2, 0.4, 0.6])
def test_ctrl_c_in_the_first_moments_is_one_line(tmp_path, after):
    """Round seven: a Ctrl-C while alice's modules loaded or her options were read was a
    traceback, one while her workers started a traceback from each worker, and one just as they
    started (SIGINT ignored meanwhile) was lost: the run went on. Every moment of it is now the
    one line. Started as the installed `alice` script starts (`from sender import main`).

    `after` counts from the script's first line, which says so down a pipe: before it, CPython is
    still starting (its site module, the venv's .pth files), where no program's code runs yet and
    CPython reports a Ctrl-C itself (a fresh clone's loaded suite once took over 50 ms there)."""
    src = tmp_path / "six.txt"
    src.write_bytes(SIX)
    started, started_w = os.pipe()
    script = f"import os; os.write({started_w}, b'.'); import sys; from sender import main; sys.exit(main())"
    alice = subprocess.Popen([sys.executable, "-c", script,
                              "compress", str(src), str(tmp_path / "h.mrs"),
                              "--preset", "tiny", "--segment", "1K", "--jobs", "2", "-q"], cwd=ROOT, env=child_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                             preexec_fn=sigint_at_default, pass_fds=(started_w,))
    os.close(started_w)
    try:
        assert select.select([started], [], [], 60)[0], "alice's script did not start within 60 s"
        assert os.read(started, 1) == b"."
        time.sleep(after)
        os.killpg(alice.pid, signal.SIGINT)     # a terminal's Ctrl-C goes to the whole group
        _, err = alice.communicate(timeout=120)
    finally:
        os.close(started)
        kill_all(alice)
    assert (alice.returncode, err.decode()) == (130, "alice: interrupted; no output was written\n")
    assert leftovers(tmp_path) == ["six.txt"]
