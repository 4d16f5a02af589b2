"""Soak benchmark (not part of `make test`): one long live stream through the fault-injecting
relay on loopback, watching both processes' memory.

    .venv/bin/python scripts/soak.py --mbytes 20 --preset bulk --loss 0.02

Bob listens, the relay (scripts/relay.py) forwards to him and drops, duplicates and reorders
--loss of the messages each way from Earth to Mars, Alice connects to the relay. Passes when
the output is byte-exact and each side's resident memory grows less than MAX_GROWTH from the
first quarter of the run to the last. Writes soak.json into --out (default bench-results/).
"""
from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts.common import ScriptParser, child_env, free_endpoint, out_folder, positive_number, stop  # noqa: E402
from scripts.make_mission_log import mission_log  # noqa: E402
from shared.core.config import PRESETS  # noqa: E402

MAX_GROWTH = 0.10        # resident memory, last quarter over first quarter
SAMPLE_S = 2.0           # how often both processes' memory is read
LINK_TIMEOUT_S = 60      # alice/bob --timeout: generous, the relay loses messages on purpose


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def soak_input(n: int) -> bytes:
    """Varied text with a little random binary mixed in (exercises the stored escape)."""
    text = mission_log(n, seed=7).encode()
    rng = random.Random(3)
    blocks = bytearray(text)
    for _ in range(max(1, n // 2_000_000)):
        at = rng.randrange(0, max(1, n - 20_000))
        blocks[at:at + 16_384] = rng.randbytes(16_384)
    return bytes(blocks[:n])


def quarter_means(samples: list[tuple[float, int]]) -> tuple[int, int]:
    """Mean resident kB over the first and the last quarter of the samples."""
    k = max(1, len(samples) // 4)
    return sum(v for _, v in samples[:k]) // k, sum(v for _, v in samples[-k:]) // k


def main(argv: list[str] | None = None) -> int:
    ap = ScriptParser("soak", description=__doc__.splitlines()[0])
    ap.add_argument("--mbytes", type=positive_number, default=20.0, help="stream length in millions of bytes")
    ap.add_argument("--preset", default="tiny", choices=PRESETS)
    ap.add_argument("--loss", type=float, default=0.02, help="the relay's drop, duplicate and reorder probability each")
    ap.add_argument("--out", default=str(ROOT / "bench-results"))
    args = ap.parse_args(argv)
    if not 0 <= args.loss < 1:
        print("soak: error: --loss must be in [0, 1)", file=sys.stderr)
        return 2
    n = int(args.mbytes * 1_000_000)
    if n < 1:
        ap.error(f"argument --mbytes: {args.mbytes:g} million bytes is less than one byte")
    out = out_folder(args.out, "soak")
    work = out / "soak-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    src, dst = work / "in.bin", work / "out.bin"
    src.write_bytes(soak_input(n))
    relay_ep, bob_ep = free_endpoint(), free_endpoint()
    env, py = child_env(), sys.executable
    common = ["--preset", args.preset, "--timeout", str(LINK_TIMEOUT_S), "-q"]
    p = f"{args.loss:g}"
    relay = subprocess.Popen([py, "-m", "scripts.relay", "--listen", relay_ep, "--forward", bob_ep, "-q",
                              "--loss", p, "--dup", p, "--reorder", p, "--seed", "1",
                              "--stats-json", str(work / "relay.json")], env=env)
    bob = subprocess.Popen([py, "-m", "receiver", "listen", "--bind", bob_ep, "--out", str(dst),
                            "--stats-json", str(work / "bob.json"), *common], env=env)
    alice = subprocess.Popen([py, "-m", "sender", "send", str(src), "--connect", relay_ep,
                              "--state-dir", str(work / "state"), "--stats-json", str(work / "alice.json"), *common],
                             env=env)
    started = time.time()
    series = {"alice": [], "bob": []}
    try:
        while alice.poll() is None or bob.poll() is None:
            spool = Path(str(dst) + ".partial") / "stream.bin"
            held = spool.stat().st_size if spool.exists() else 0
            for name, proc in (("alice", alice), ("bob", bob)):
                kb = rss_kb(proc.pid) if proc.poll() is None else None
                if kb and held > 0:                  # measure the stream, not the start-up (imports)
                    series[name].append((round(time.time() - started, 1), kb))
            print(f"\r{time.time() - started:7.0f} s  coded bytes received {held:,}  "
                  f"RSS alice {series['alice'][-1][1] if series['alice'] else 0:,} kB "
                  f"bob {series['bob'][-1][1] if series['bob'] else 0:,} kB", end="", file=sys.stderr, flush=True)
            time.sleep(SAMPLE_S)
    finally:
        for proc in (alice, bob, relay):
            stop(proc)
    print(file=sys.stderr)
    ok = alice.returncode == 0 and bob.returncode == 0 and dst.exists() and dst.read_bytes() == src.read_bytes()
    a = json.loads((work / "alice.json").read_text()) if ok else {}
    b = json.loads((work / "bob.json").read_text()) if ok else {}
    link = json.loads((work / "relay.json").read_text()).get("earth_to_mars", {}) if (work / "relay.json").exists() \
        else {}
    means = {k: quarter_means(v) for k, v in series.items() if v}
    result = {
        "ok": ok, "input_bytes": src.stat().st_size, "seconds": round(time.time() - started, 1),
        "preset": args.preset, "fault_probability_each": args.loss,
        "relay_earth_to_mars": {k: link.get(k) for k in ("messages", "dropped", "duplicated", "reordered")},
        "frames_sent": a.get("frames_sent"), "frames_resent": a.get("frames_resent"),
        "duplicates_dropped_by_bob": b.get("duplicates"), "out_of_order_buffered_by_bob": b.get("out_of_order"),
        "bits_per_byte": (a["compressed_bytes"] * 8 / a["input_bytes"]) if a else None,
        "rss_kb": {k: {"first_quarter_mean": first, "last_quarter_mean": last} for k, (first, last) in means.items()},
        "growth_first_to_last_quarter": {k: round((last - first) / first, 4) for k, (first, last) in means.items()},
        "peak_rss_kb": {k: max(x for _, x in v) for k, v in series.items() if v},
        "samples": series,
    }
    (out / "soak.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    flat = all(g < MAX_GROWTH for g in result["growth_first_to_last_quarter"].values())
    return 0 if ok and flat else 1


if __name__ == "__main__":
    sys.exit(main())
