"""`make bench`: marslink's presets against the classic compressors, through the real CLIs.

For every file (the built-in mission log, 200 KB of seeded random bytes, every file in
../shared/corpora/ if that folder exists; or the files given with --files and, with --devset,
issue 23's development set, built and checked by scripts/devset.py) and every chosen preset,
this runs

    alice compress IN OUT --preset P --profile X --stats-json S --progress-every 2   (one OS process)
    bob decompress OUT BACK --stats-json S --progress-every 2                         (another one)

checks BACK == IN byte for byte, and records bits/byte (whole container, header included),
compress and decompress bytes/s (the codec's own clock: model and coder, not the ~2 s of
Python/torch start-up, which is recorded separately as wall-clock seconds), the peak resident
memory of each process (os.wait4 on that very child: no cumulative maximum across children)
and the arithmetic coder's overhead over the model's ideal code length. gzip -9, bzip2 -9,
xz -9e and zstd -19 are measured on the same files the same way, and so is paq8px -8 (the
strongest peer, issue 23) when a binary is given: `--paq8px PATH` or the environment variable
PAQ8PX (build it from github hxim/paq8px with build/build-linux-with-gcc.sh; -8 takes ~2 GB and
codes ~6 kB/s, so ~3 minutes each way per MB).

Every process runs with one thread (marslink pins it; the classic tools are single-threaded
at these settings), one at a time, so the speeds are one core's. Before anything is timed, each
build (this one, and a --baseline) makes one untimed round trip of a few KB with each preset:
numba compiles a fresh checkout's loops at its first run, which would otherwise land in its
timed compress.

With `--jobs N` (issue 24) each preset and file is also coded in segments (`--segment SIZE`,
default: a quarter of the file, so 4 segments) with `alice compress --jobs 1` and `--jobs N`,
and decoded with `bob decompress --jobs 1` and `--jobs N`, one after the other in the same run
(`--repeat R`: R times, alternating, medians compared): wall-clock time from start to exit
(start-up included: the user's wait), the speedup, and a check that every file is the same
bytes and every round trip exact.

Progress: alice and bob run with `--progress-every 2` and the bench follows their lines, so its
bar moves within a run (`strong` codes about 2-3 kB/s each way, docs/results.md, so a round trip
of tinyshakespeare's 1.1 MB takes about 15 minutes); when stderr is a log rather than a
terminal, the bench copies one of those lines a minute.

Outputs, in --out (default bench-results/, git-ignored):
  results.json   every measurement plus the machine and library description
  results.md     the same as markdown tables (the form docs/results.md uses)
  frontier.png   speed vs bits/byte, one panel per text file (log-x)

Examples:
  make bench                                           # fast, default, strong on every file: slow (hours)
  make bench ARGS="--presets fast,default --limit 200000"
  .venv/bin/python scripts/bench.py --presets default --files ../shared/corpora/tinyshakespeare.txt
  .venv/bin/python scripts/bench.py --profile native --presets default --limit 100000
  make bench ARGS="--presets default --limit 200000 --baseline v0.1"   # this build against an older one
  make bench PAQ8PX=/path/to/paq8px ARGS="--devset --presets default"    # the development set, with paq8px
  .venv/bin/python scripts/bench.py --paq8px ~/paq8px --presets '' --devset   # the peers only
  make bench ARGS="--presets default --limit 131072 --no-classic --jobs 2"   # two workers against one
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts.common import ScriptParser, child_env, count, out_folder, positive_count  # noqa: E402
from scripts.devset import DEFAULT_OUT as DEVSET, build as build_devset  # noqa: E402
from shared.core.config import PRESETS  # noqa: E402
from shared.texts import mission_log  # noqa: E402
CORPORA = ROOT.parent / "shared" / "corpora"
BIN = Path(sys.executable).parent
RANDOM_BYTES, RANDOM_SEED = 200_000, 20240601
PROGRESS_SECONDS = 2.0    # how often alice/bob report progress to the bench while they run
TARGET_SPEED = 5000.0     # issue 5: the default preset, compress and decompress, one core
PLOT_COLUMNS = 4          # frontier panels per row (the development set has ten files)
WARM_BYTES = 4000         # the untimed round trip that compiles a build's loops before it is timed

CLASSIC = {
    # name: (compress argv, decompress argv); both read stdin and write stdout
    "gzip -9": (["gzip", "-9", "-c", "-n"], ["gzip", "-d", "-c"]),
    "bzip2 -9": (["bzip2", "-9", "-c"], ["bzip2", "-d", "-c"]),
    "xz -9e": (["xz", "-9e", "-c", "-T1"], ["xz", "-d", "-c", "-T1"]),
    "zstd -19": (["zstd", "-19", "-c", "-q", "-T1"], ["zstd", "-d", "-c", "-q"]),
}

PAQ8PX = "paq8px -8"
PAQ8PX_LEVEL = "-8"                      # 2.4 GB: the level the anchors and issue 23 quote
PAQ8PX_VERSION = re.compile(rb"paq8px v(\S+)")   # its first line: "paq8px v216 (c) 2025, Matt Mahoney et al."

# Published in ../shared/handbook/anchors.md for tinyshakespeare (another run, same kind of
# machine): drawn on the frontier as grey reference points, never mixed into the tables.
ANCHORS_TINYSHAKESPEARE = {
    "lstm-compress v3": (2.37, 9000.0),
    "paq8px -8": (1.81, 6000.0),
}


# --- running one child ----------------------------------------------------------------------
GNU_TIME = "/usr/bin/time"


def _has_gnu_time() -> bool:
    try:
        r = subprocess.run([GNU_TIME, "-f", "%M", "true"], capture_output=True, text=True, timeout=30)
        return r.returncode == 0 and r.stderr.strip().isdigit()
    except (OSError, subprocess.SubprocessError):
        return False


USE_GNU_TIME = _has_gnu_time()


def run_child(argv: list[str], stdin_path: str | None = None, stdout_path: str | None = None,
              env: dict | None = None, on_line: Callable[[str], None] | None = None, cwd: Path | None = None) -> dict:
    """Run argv to completion; return wall seconds, exit code, stderr and *this child's* peak RSS.

    The peak RSS comes from GNU time (`/usr/bin/time -f %M`), whose own tiny process forks the
    command: a child spawned straight from this Python process would inherit this process's
    high-water mark (Linux keeps it across exec), ~40 MB that gzip never used. Without GNU
    time, os.wait4's figure is used and that floor is noted in the results.
    on_line: called with each new complete line the child writes to stderr, while it runs.
    """
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    stdout = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    err = tempfile.TemporaryFile()
    mem_file = None
    if USE_GNU_TIME:
        fd, mem_file = tempfile.mkstemp(prefix="bench-rss-")
        os.close(fd)
        argv = [GNU_TIME, "-f", "%M", "-o", mem_file, "--"] + argv
    try:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0) if on_line is None else _wait_reading(proc.pid, err, on_line)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        peak = usage.ru_maxrss * 1024
        if mem_file:
            lines = Path(mem_file).read_text().split()
            if lines and lines[-1].isdigit():
                peak = int(lines[-1]) * 1024
    finally:
        for f in (stdin, stdout):
            if hasattr(f, "close"):
                f.close()
        if mem_file:
            os.unlink(mem_file)
    err.seek(0)
    stderr = err.read().decode(errors="replace")
    err.close()
    return {"rc": proc.returncode, "wall_seconds": wall, "peak_rss_bytes": peak,
            "cpu_seconds": usage.ru_utime + usage.ru_stime, "stderr": stderr.strip()}


def _wait_reading(pid: int, err, on_line: Callable[[str], None]):
    """os.wait4 for pid, meanwhile passing each complete line the child adds to `err` to on_line."""
    seen = 0
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        size = os.fstat(err.fileno()).st_size
        if size > seen:
            new = os.pread(err.fileno(), size - seen, seen)
            complete = new[:new.rfind(b"\n") + 1]
            seen += len(complete)
            for line in complete.decode(errors="replace").splitlines():
                on_line(line)
        if done:
            return done, status, usage
        time.sleep(0.2)


def same_bytes(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


# --- one measurement ------------------------------------------------------------------------
PROGRESS_BYTES = re.compile(r": ([\d,]+) / ([\d,]+) B \(")   # from shared.app.cli.PROGRESS_LINE


def bench_marslink(src: str, n: int, preset: str, profile: str, work: Path,
                   on_progress: Callable[[int, str], None] | None = None, build: Path | None = None) -> dict:
    """One compress + decompress through the CLIs. on_progress(bytes done of 2n, child's line)
    follows the children's plain progress lines (an hour of `strong` should show signs of life).
    `build`: another checkout of marslink (--baseline) whose alice and bob run instead, with the
    same Python and libraries, so the two builds are compared in one run on one machine."""
    src = str(Path(src).resolve())              # a --baseline build runs in its own folder
    comp, back = work / "out.mrs", work / "back.bin"
    cstats, dstats = work / "c.json", work / "d.json"
    for p in (comp, back, cstats, dstats):
        p.unlink(missing_ok=True)
    rec = {"compressor": f"marslink {preset}" + (f" @{build.name}" if build else ""), "kind": "marslink",
           "preset": preset, "profile": profile, "build": build.name if build else "this"}
    env = child_env(PYTHONPATH=str(build)) if build else child_env()
    alice, bob = ([sys.executable, "-m", "sender"], [sys.executable, "-m", "receiver"]) if build else \
        ([str(BIN / "alice")], [str(BIN / "bob")])
    def follow(base: int):
        def on_line(line: str):
            m = PROGRESS_BYTES.search(line)
            if m and on_progress:
                on_progress(base + int(m.group(1).replace(",", "")), line)
        return on_line

    report = ["--progress-every", str(PROGRESS_SECONDS)]
    c = run_child(alice + ["compress", src, str(comp), "--preset", preset, "--profile", profile,
                           "--stats-json", str(cstats)] + report, env=env, on_line=follow(0), cwd=build)
    if c["rc"] != 0:
        return {**rec, "error": f"alice exited {c['rc']}: {_without_progress(c['stderr'])[-500:]}"}
    d = run_child(bob + ["decompress", str(comp), str(back), "--stats-json", str(dstats)] + report,
                  env=env, on_line=follow(n), cwd=build)
    if d["rc"] != 0:
        return {**rec, "error": f"bob exited {d['rc']}: {_without_progress(d['stderr'])[-500:]}"}
    cs, ds = json.loads(cstats.read_text()), json.loads(dstats.read_text())
    size = comp.stat().st_size
    ideal = cs["ideal_bits"]
    overhead_bits = cs["payload_bytes"] * 8 - ideal
    rec.update({
        "compressed_bytes": size,
        "header_bytes": cs.get("header_bytes"),
        "payload_bytes": cs["payload_bytes"],
        "bits_per_byte": size * 8 / n if n else 0.0,
        "ideal_bits_per_byte": ideal / n if n else 0.0,
        "coder_overhead_bits": overhead_bits,
        "coder_overhead_pct": 100.0 * overhead_bits / ideal if ideal else 0.0,
        "stored_chunks": cs.get("stored_chunks"),
        "steps": cs.get("steps"),
        "compress_bytes_per_second": cs["bytes_per_second"],
        "decompress_bytes_per_second": ds["bytes_per_second"],
        "compress_seconds": cs["seconds"], "decompress_seconds": ds["seconds"],
        "compress_wall_seconds": c["wall_seconds"], "decompress_wall_seconds": d["wall_seconds"],
        "compress_cpu_seconds": c["cpu_seconds"], "decompress_cpu_seconds": d["cpu_seconds"],
        "compress_peak_rss_bytes": c["peak_rss_bytes"], "decompress_peak_rss_bytes": d["peak_rss_bytes"],
        "peak_rss_bytes": max(c["peak_rss_bytes"], d["peak_rss_bytes"]),
        "threads": cs.get("threads"),
        "profile": cs.get("profile", profile),
        "final_digest": cs.get("final_digest", "")[:16],
        "verified": same_bytes(src, str(back)) and cs.get("final_digest") == ds.get("final_digest"),
    })
    if not rec["verified"]:
        rec["error"] = "decompressed output differs from the input"
    return rec


def warm_up(preset: str, profile: str, work: Path, build: Path | None = None) -> str | None:
    """One untimed round trip of WARM_BYTES of the mission log, so that numba compiles (or
    finds in its cache) the build's loops before it is timed. A --baseline build is a fresh
    checkout: its first run would otherwise compile them inside its timed compress (about 30
    s and 100 MB more). Returns an error, or None."""
    src = work / "warm.txt"
    src.write_bytes(mission_log(WARM_BYTES))
    folder = work / "warm"
    folder.mkdir(exist_ok=True)
    rec = bench_marslink(str(src), WARM_BYTES, preset, profile, folder, build=build)
    return rec.get("error")


def _without_progress(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines() if not PROGRESS_BYTES.search(line))


def bench_jobs(src: str, n: int, preset: str, profile: str, work: Path, segment: int, jobs: int,
               repeat: int = 1) -> dict:
    """The same segmented file coded and decoded with --jobs 1 and --jobs `jobs`, `repeat` times,
    alternating (1, N, 1, N, ...: a load that drifts meets both alike): the median wall seconds
    of each (start to exit; every run kept in `runs`), the speedup of the medians, and whether
    every file is the same bytes and every round trip exact."""
    rec = {"file": None, "compressor": f"marslink {preset} --jobs", "preset": preset, "segment_size": segment,
           "jobs": jobs, "segments": -(-n // segment), "repeat": repeat, "runs": []}
    first = work / "jobs-first.mrs"
    first.unlink(missing_ok=True)
    same, exact = True, True
    for _ in range(repeat):
        for j in (1, jobs):
            comp, back, stats = work / f"jobs{j}.mrs", work / f"jobs{j}.bin", work / f"jobs{j}.json"
            c = run_child([str(BIN / "alice"), "compress", src, str(comp), "--preset", preset, "--profile", profile,
                           "--segment", str(segment), "--jobs", str(j), "-f", "-q", "--stats-json", str(stats)],
                          env=child_env())
            d = run_child([str(BIN / "bob"), "decompress", str(comp), str(back), "--jobs", str(j), "-f", "-q"],
                          env=child_env()) if c["rc"] == 0 else c
            if c["rc"] != 0 or d["rc"] != 0:
                return {**rec, "error": f"--jobs {j}: exited {(c if c['rc'] else d)['rc']}: "
                                        f"{(c if c['rc'] else d)['stderr'][-300:]}"}
            rec["runs"].append({"jobs": j, "compress_wall_seconds": c["wall_seconds"],
                                "decompress_wall_seconds": d["wall_seconds"],
                                "peak_rss_bytes": max(c["peak_rss_bytes"], d["peak_rss_bytes"])})
            rec[f"workers_{j}"] = json.loads(stats.read_text())["workers"]
            if not first.exists():
                comp.rename(first)
            else:
                same = same and same_bytes(str(first), str(comp))
            exact = exact and same_bytes(src, str(back))
    for j in (1, jobs):
        mine = [r for r in rec["runs"] if r["jobs"] == j]
        for side in ("compress", "decompress"):
            rec[f"{side}_wall_seconds_{j}"] = float(np.median([r[f"{side}_wall_seconds"] for r in mine]))
        rec[f"peak_rss_bytes_{j}"] = max(r["peak_rss_bytes"] for r in mine)
    rec["compress_speedup"] = rec["compress_wall_seconds_1"] / rec[f"compress_wall_seconds_{jobs}"]
    rec["decompress_speedup"] = rec["decompress_wall_seconds_1"] / rec[f"decompress_wall_seconds_{jobs}"]
    rec["same_bytes"], rec["verified"] = same, exact
    if not (same and exact):
        rec["error"] = f"--jobs 1 and --jobs {jobs} differ, or a round trip is not exact"
    return rec


def jobs_rows(workers: list[dict]):
    for r in workers:
        j = r["jobs"]
        if "error" in r:
            yield [r["file"], r["preset"], f"{r['segments']} x {r['segment_size']:,} B", "ERROR", r["error"][:60]]
            continue
        yield [r["file"], r["preset"], f"{r['segments']} x {r['segment_size']:,} B",
               f"{r['compress_wall_seconds_1']:.1f} s / {r[f'compress_wall_seconds_{j}']:.1f} s",
               f"{r['compress_speedup']:.2f}x",
               f"{r['decompress_wall_seconds_1']:.1f} s / {r[f'decompress_wall_seconds_{j}']:.1f} s",
               f"{r['decompress_speedup']:.2f}x",
               f"{human_mem(r['peak_rss_bytes_1'])} / {human_mem(r[f'peak_rss_bytes_{j}'])}",
               "same bytes, exact" if r["verified"] and r["same_bytes"] else "DIFFERENT"]


def jobs_headers(jobs: int) -> list[str]:
    return ["file", "preset", "segments", f"compress --jobs 1 / {jobs} (median)", "speedup",
            f"decompress --jobs 1 / {jobs} (median)", "speedup", f"peak RSS 1 / {jobs} (largest process)", "files"]


def bench_classic(name: str, src: str, n: int, work: Path) -> dict:
    cargv, dargv = CLASSIC[name]
    comp, back = work / "out.classic", work / "back.classic"
    rec = {"compressor": name, "kind": "classic"}
    c = run_child(cargv, stdin_path=src, stdout_path=str(comp))
    d = run_child(dargv, stdin_path=str(comp), stdout_path=str(back)) if c["rc"] == 0 else c
    if c["rc"] != 0 or d["rc"] != 0:
        return {**rec, "error": (c if c["rc"] else d)["stderr"][-300:]}
    return _measured(rec, src, n, comp, back, c, d)


def paq8px_version(binary: str) -> str:
    """The version a paq8px binary prints first (run without arguments it prints it and its help);
    a path that is not one is a one-line error, before any long run starts."""
    path = Path(binary).expanduser()
    hint = "build it from github hxim/paq8px (cd build && bash build-linux-with-gcc.sh) or unset PAQ8PX"
    if not path.is_file():
        raise SystemExit(f"bench: paq8px binary {binary!r} not found; {hint}")
    try:
        r = subprocess.run([str(path.resolve())], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise SystemExit(f"bench: paq8px binary {binary!r} does not run ({e.__class__.__name__}: "
                         f"{getattr(e, 'strerror', None) or e}); {hint}") from None
    m = PAQ8PX_VERSION.search(r.stdout + r.stderr)
    if not m:
        raise SystemExit(f"bench: {binary!r} does not print a paq8px version when run; {hint}")
    return m.group(1).decode(errors="replace")


def bench_paq8px(binary: str, src: str, n: int, work: Path) -> dict:
    """paq8px -8 IN ARCHIVE, then paq8px -d ARCHIVE BACK: two processes, timed and measured like
    the classic tools (wall clock, which for paq8px is all model and coder)."""
    comp, back = work / "out.paq8px", work / "back.paq8px"
    for p in (comp, back):
        p.unlink(missing_ok=True)
    exe = str(Path(binary).expanduser().resolve())
    rec = {"compressor": PAQ8PX, "kind": "paq8px"}
    c = run_child([exe, PAQ8PX_LEVEL, str(Path(src).resolve()), str(comp)], cwd=work)
    if c["rc"] != 0 or not comp.is_file():
        return {**rec, "error": f"paq8px exited {c['rc']} compressing: {c['stderr'][-300:]}"}
    d = run_child([exe, "-d", str(comp), str(back)], cwd=work)
    if d["rc"] != 0 or not back.is_file():
        return {**rec, "error": f"paq8px exited {d['rc']} decompressing: {d['stderr'][-300:]}"}
    return _measured(rec, src, n, comp, back, c, d)


def _measured(rec: dict, src: str, n: int, comp: Path, back: Path, c: dict, d: dict) -> dict:
    """The record of a peer's round trip: size, speeds by the wall clock, peak RSS, verified."""
    size = comp.stat().st_size
    rec.update({
        "compressed_bytes": size,
        "bits_per_byte": size * 8 / n if n else 0.0,
        "compress_bytes_per_second": n / c["wall_seconds"],
        "decompress_bytes_per_second": n / d["wall_seconds"],
        "compress_seconds": c["wall_seconds"], "decompress_seconds": d["wall_seconds"],
        "compress_cpu_seconds": c["cpu_seconds"], "decompress_cpu_seconds": d["cpu_seconds"],
        "compress_peak_rss_bytes": c["peak_rss_bytes"], "decompress_peak_rss_bytes": d["peak_rss_bytes"],
        "peak_rss_bytes": max(c["peak_rss_bytes"], d["peak_rss_bytes"]),
        "verified": same_bytes(src, str(back)),
    })
    if not rec["verified"]:
        rec["error"] = "decompressed output differs from the input"
    return rec


def checkout(rev: str, work: Path) -> Path:
    """The build at git revision `rev`, unpacked into work/<short commit> (git archive: no worktree
    left behind)."""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=10", f"{rev}^{{commit}}"],
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit(f"bench: --baseline {rev!r} is not a git revision of {ROOT}") from None
    folder = work / commit
    folder.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


# --- inputs ---------------------------------------------------------------------------------
def gather_inputs(args, work: Path) -> list[dict]:
    """[{name, path, bytes}], each file cut to --limit bytes into the work folder if needed."""
    items: list[tuple[str, bytes | None, Path | None]] = []
    for f in args.files or []:
        p = Path(f)
        if not p.is_file():
            raise SystemExit(f"bench: {f!r} is not a file")
        items.append((p.name, None, p))
    if args.devset:
        items += [(e.name, None, path) for e, path in build_devset(DEVSET)]
    if not items:
        items.append(("mission_log.txt", mission_log(), None))
        rng = np.random.default_rng(RANDOM_SEED)
        items.append((f"random-{RANDOM_BYTES // 1000}k.bin",
                      rng.integers(0, 256, RANDOM_BYTES, dtype=np.uint8).tobytes(), None))
        if CORPORA.is_dir():
            items += [(p.name, None, p) for p in sorted(CORPORA.iterdir()) if p.is_file()]
    inputs = []
    for i, (name, data, path) in enumerate(items):
        if data is None and (args.limit or path is None):
            data = path.read_bytes()
        if data is not None:
            if args.limit:
                data = data[:args.limit]
            path = work / f"input{i}.bin"
            path.write_bytes(data)
        size = path.stat().st_size
        if size == 0:
            print(f"bench: skipping {name}: empty", file=sys.stderr)
            continue
        inputs.append({"name": name, "path": str(path), "bytes": size})
    return inputs


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(),
            "peak_rss_method": "GNU time %M" if USE_GNU_TIME else "os.wait4 ru_maxrss (includes the bench "
                                                                  "process's own RSS as a floor)"}
    try:
        out = subprocess.run([sys.executable, "-c", "import torch, numpy; print(torch.__version__, numpy.__version__)"],
                             capture_output=True, text=True, timeout=120).stdout.split()
        info["torch"], info["numpy"] = out[0], out[1]
    except Exception:  # noqa: BLE001  (a description only)
        pass
    return info


# --- reporting ------------------------------------------------------------------------------
def human_rate(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:.1f} MB/s"
    if x >= 1e3:
        return f"{x / 1e3:.1f} kB/s"
    return f"{x:.0f} B/s"


def human_mem(b: int | None) -> str:
    if b is None:
        return "-"
    return f"{b / 2**20:.0f} MiB" if b < 2**30 else f"{b / 2**30:.2f} GiB"


def table_rows(results: list[dict]):
    for r in results:
        if "error" in r:
            yield r, [r["file"], r["compressor"], "ERROR", "", "", "", "", "", r["error"][:60]]
            continue
        overhead = f"{r['coder_overhead_pct']:+.3f}%" if r.get("kind") == "marslink" else ""
        yield r, [r["file"], r["compressor"] + (f" ({r['profile']})" if r.get("kind") == "marslink" else ""),
                  f"{r['compressed_bytes']:,}", f"{r['bits_per_byte']:.3f}",
                  human_rate(r["compress_bytes_per_second"]), human_rate(r["decompress_bytes_per_second"]),
                  human_mem(r["peak_rss_bytes"]), overhead, "ok" if r.get("verified") else "NOT VERIFIED"]


HEADERS = ["file", "compressor", "bytes", "bits/byte", "compress", "decompress", "peak RSS",
           "coder overhead", "round trip"]


def print_table(results: list[dict]):
    t = Table(title="marslink bench (one core per process)")
    for h in HEADERS:
        t.add_column(h, justify="left" if h in ("file", "compressor", "round trip") else "right")
    last = None
    for r, row in table_rows(results):
        if last is not None and r["file"] != last:
            t.add_section()
        last = r["file"]
        style = "bold" if r.get("kind") == "marslink" else None
        t.add_row(*row, style=style)
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)
    console.print(t)


def write_markdown(path: Path, results: list[dict], meta: dict, workers: list[dict] = (), jobs: int = 0):
    lines = [f"Measured {meta['date']} on {meta['machine'].get('cpu', '?')}, one core per process, "
             f"numeric profile `{meta['profile']}`"
             + (f", first {meta['limit']:,} bytes of each file" if meta.get("limit") else "") + ".",
             "Speeds are the codec's own clock (model + coder; start-up excluded); bits/byte counts the "
             "whole file, header included.", ""]
    lines.append("| " + " | ".join(HEADERS) + " |")
    lines.append("| " + " | ".join("---" if h in ("file", "compressor", "round trip") else "---:"
                                   for h in HEADERS) + " |")
    for _, row in table_rows(results):
        lines.append("| " + " | ".join(c.replace("|", "/") for c in row) + " |")
    if workers:
        lines += ["", f"Segments on workers, `--jobs 1` against `--jobs {jobs}`, one run after the other; "
                  "wall-clock seconds from start to exit (start-up included):", "",
                  "| " + " | ".join(jobs_headers(jobs)) + " |", "|" + " --- |" * len(jobs_headers(jobs))]
        lines += ["| " + " | ".join(row) + " |" for row in jobs_rows(workers)]
    path.write_text("\n".join(lines) + "\n")


def plot_frontier(path: Path, results: list[dict], inputs: list[dict]):
    import matplotlib  # optional: the `report` extra
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = [i["name"] for i in inputs if not i["name"].startswith("random")]
    files = [f for f in files if any(r["file"] == f and "error" not in r for r in results)]
    if not files:
        return False
    cols = min(len(files), PLOT_COLUMNS)
    nrows = -(-len(files) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(6.5 * cols, 5 * nrows), squeeze=False)
    for ax in axes.flat[len(files):]:
        ax.set_visible(False)
    markers = {"fast": "^", "default": "o", "strong": "s", "tiny": "v"}
    for ax, name in zip(axes.flat, files):
        rows = [r for r in results if r["file"] == name and "error" not in r]
        for r in rows:
            x, y = r["compress_bytes_per_second"], r["bits_per_byte"]
            if r["kind"] == "marslink":
                ax.scatter([x], [y], marker=markers.get(r["preset"], "D"), s=90, color="tab:red", zorder=3,
                           label=f"marslink {r['preset']} ({r['profile']})")
                ax.annotate(r["compressor"], (x, y), textcoords="offset points", xytext=(6, 6),
                            fontsize=8, color="tab:red")
            else:
                color = "tab:green" if r["kind"] == "paq8px" else "tab:blue"
                ax.scatter([x], [y], marker="o", s=40, color=color, zorder=2)
                ax.annotate(r["compressor"], (x, y), textcoords="offset points", xytext=(6, -10), fontsize=8,
                            color=color)
        if name.startswith("tinyshakespeare") and rows and rows[0]["input_bytes"] == 1_115_394:
            for label, (bpb, speed) in ANCHORS_TINYSHAKESPEARE.items():
                ax.scatter([speed], [bpb], marker="x", s=40, color="grey", zorder=2)
                ax.annotate(f"{label} (anchors.md)", (speed, bpb), textcoords="offset points", xytext=(6, 4),
                            fontsize=7, color="grey")
        ax.axvline(TARGET_SPEED, color="tab:red", alpha=0.3, linestyle="--", linewidth=1)
        ax.annotate("5 kB/s target (default)", (TARGET_SPEED, ax.get_ylim()[1]), textcoords="offset points",
                    xytext=(3, -12), fontsize=7, color="tab:red", alpha=0.7)
        ax.set_xscale("log")
        ax.set_xlabel("compression speed, bytes/s (one core, log scale)")
        ax.set_ylabel("bits per byte (lower is better)")
        ax.set_title(name + (f" ({rows[0]['input_bytes']:,} bytes)" if rows else ""), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("marslink presets vs classic compressors" + (" and paq8px" if any(r["kind"] == "paq8px"
                 for r in results if "error" not in r) else "") + ": speed/ratio frontier")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# --- main -----------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = ScriptParser("bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="fast,default,strong", help="comma-separated (default: %(default)s)")
    ap.add_argument("--files", nargs="+", metavar="PATH", help="benchmark these files instead of the default set")
    ap.add_argument("--limit", type=positive_count, default=None, metavar="BYTES",
                    help="use only the first BYTES of each file (default: all of it)")
    ap.add_argument("--profile", default="portable", choices=("portable", "native"),
                    help="marslink numeric profile (default: %(default)s)")
    ap.add_argument("--no-classic", action="store_true", help="skip gzip/bzip2/xz/zstd")
    ap.add_argument("--paq8px", metavar="PATH", default=os.environ.get("PAQ8PX") or None,
                    help="also run paq8px -8, this binary (default: the environment variable PAQ8PX)")
    ap.add_argument("--devset", action="store_true", help="benchmark the development set (scripts/devset.py "
                    "builds and checks it in devset/), with the --files given, instead of the default set")
    ap.add_argument("--out", default=str(ROOT / "bench-results"), help="output folder (default: %(default)s)")
    ap.add_argument("--baseline", metavar="REV", help="also run the presets with the build at git revision REV "
                    "(e.g. a commit before a change), in the same run: the comparison docs/results.md asks for")
    ap.add_argument("--jobs", type=count, default=0, metavar="N", help="also code each preset and file in "
                    "segments with --jobs 1 and --jobs N, and report the speedup (issue 24)")
    ap.add_argument("--segment", type=count, default=0, metavar="BYTES", help="segment size for --jobs (default: "
                    "a quarter of each file, rounded up to KiB: 4 segments)")
    ap.add_argument("--repeat", type=positive_count, default=1, metavar="R", help="with --jobs: run each side R times, "
                    "alternating, and compare the medians (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.jobs == 1:                      # the types refused the negatives
        raise SystemExit("bench: --jobs must be 2 or more (it is compared with --jobs 1)")

    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise SystemExit(f"bench: unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    paq8px = paq8px_version(args.paq8px) if args.paq8px else None
    for tool in ("alice", "bob") if presets else ():
        if not (BIN / tool).exists():
            raise SystemExit(f"bench: {BIN / tool} not found; run `make setup` first")
    classic = [] if args.no_classic else [c for c in CLASSIC if shutil.which(CLASSIC[c][0][0])]
    missing = [] if args.no_classic else [c for c in CLASSIC if c not in classic]
    if missing:
        print(f"bench: not installed, skipped: {', '.join(missing)}", file=sys.stderr)

    out = out_folder(args.out, "bench")
    results: list[dict] = []
    workers: list[dict] = []        # --jobs: the segmented runs, a table of their own
    with tempfile.TemporaryDirectory(prefix="marslink-bench-") as tmp:
        work = Path(tmp)
        inputs = gather_inputs(args, work)
        baseline = checkout(args.baseline, work) if args.baseline else None
        meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
                "profile": args.profile, "presets": presets, "limit": args.limit or None,
                "preset_configs": {p: PRESETS[p].to_dict() for p in presets},
                "inputs": [{"name": i["name"], "bytes": i["bytes"]} for i in inputs]}
        if paq8px:
            meta["paq8px"] = {"path": str(Path(args.paq8px).expanduser().resolve()), "version": paq8px,
                              "level": PAQ8PX_LEVEL}
        # a baseline run follows the same preset's run on the same file: both see the machine's load alike
        jobs = [(i, "classic", c) for i in inputs for c in classic] + \
               [(i, "paq8px", PAQ8PX) for i in inputs if paq8px] + \
               [(i, kind, p) for i in inputs for p in presets for kind in ("marslink", "baseline")
                if kind == "marslink" or baseline]
        if baseline:
            meta["baseline"] = {"rev": args.baseline, "commit": baseline.name}
        console = Console(stderr=True)
        for p in presets:
            for build in [None] + ([baseline] if baseline else []):
                error = warm_up(p, args.profile, work, build)
                if error:
                    raise SystemExit(f"bench: {p}{' @' + build.name if build else ''} failed its warm-up round trip: {error}")
        # progress is measured in marslink bytes (compress + decompress): they are the slow part
        total = sum(2 * i["bytes"] for i, kind, _ in jobs if kind != "classic") or 1
        with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), TextColumn("left"),
                      TimeRemainingColumn(), console=console, transient=False) as bar:
            task = bar.add_task("bench", total=total)
            for k, (inp, kind, what) in enumerate(jobs, 1):
                label = f"[{k}/{len(jobs)}] {what} on {inp['name']} ({inp['bytes']:,} B)"
                bar.update(task, description=label)
                if not console.is_terminal:
                    print(f"bench: {label} ...", file=sys.stderr, flush=True)
                t = time.perf_counter()
                base = bar.tasks[0].completed
                said = [t]

                def on_progress(done: int, line: str):
                    bar.update(task, completed=base + done)
                    if not console.is_terminal and time.perf_counter() - said[0] >= 60:   # a log: once a minute
                        said[0] = time.perf_counter()
                        print(f"bench:   {line}", file=sys.stderr, flush=True)

                rec = bench_classic(what, inp["path"], inp["bytes"], work) if kind == "classic" else \
                    bench_paq8px(args.paq8px, inp["path"], inp["bytes"], work) if kind == "paq8px" else \
                    bench_marslink(inp["path"], inp["bytes"], what, args.profile, work, on_progress,
                                   baseline if kind == "baseline" else None)
                rec = {"file": inp["name"], "input_bytes": inp["bytes"], **rec}
                results.append(rec)
                if kind != "classic":
                    bar.update(task, completed=base + 2 * inp["bytes"])
                    msg = (f"  {what}: ERROR {rec['error']}" if "error" in rec else
                           f"  {what}: {rec['bits_per_byte']:.3f} bits/byte, "
                           f"{rec['compress_bytes_per_second']:,.0f} / {rec['decompress_bytes_per_second']:,.0f} B/s, "
                           f"{human_mem(rec['peak_rss_bytes'])}, {time.perf_counter() - t:.0f} s")
                    bar.console.print(msg)
                # write as we go: a long bench interrupted late still leaves its numbers
                (out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
        for inp in inputs if args.jobs else ():
            for p in presets:
                segment = args.segment or -(-inp["bytes"] // 4096) * 1024
                console.print(f"bench: {p} on {inp['name']} in segments of {segment:,} B, --jobs 1 and {args.jobs} ...")
                rec = {**bench_jobs(inp["path"], inp["bytes"], p, args.profile, work, segment, args.jobs,
                                    args.repeat), "file": inp["name"]}
                workers.append(rec)
                console.print("  " + " | ".join(next(jobs_rows([rec]))[3:]))
                (out / "results.json").write_text(json.dumps({"meta": meta, "results": results, "workers": workers},
                                                             indent=2) + "\n")

    # group rows by file for the tables: classic first, then marslink presets in the given order
    order = {i["name"]: n for n, i in enumerate(inputs)}
    results.sort(key=lambda r: (order[r["file"]], r.get("kind") == "marslink"))
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results, "workers": workers},
                                                 indent=2) + "\n")
    write_markdown(out / "results.md", results, meta, workers, args.jobs)
    plotted = plot_frontier(out / "frontier.png", results, inputs)
    print_table(results)
    if workers:
        t = Table(title=f"segments on workers: --jobs 1 against --jobs {args.jobs} (wall, start-up included)")
        for h in jobs_headers(args.jobs):
            t.add_column(h)
        for row in jobs_rows(workers):
            t.add_row(*row)
        Console(width=170).print(t)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}" + (f", {out / 'frontier.png'}" if plotted else ""),
          file=sys.stderr)
    failed = [r for r in results + workers if "error" in r]
    if failed:
        print(f"bench: {len(failed)} run(s) failed: "
              + "; ".join(f"{r['compressor']} on {r['file']}: {r['error'][:80]}" for r in failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
