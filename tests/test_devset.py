"""scripts/devset.py: the development set is rebuilt byte for byte, and a source that changed is
a one-line error that writes nothing. (Only the generated files are rebuilt here: the others
come from PyPI, and no test needs the network.)"""
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile

import pytest

from scripts import devset
from tests.helpers import ROOT, child_env

GENERATED = ("sensor-records.bin", "events.msgpack", "events.pb")


def entry(name):
    return next(e for e in devset.MANIFEST if e.name == name)


@pytest.mark.parametrize("name", GENERATED)
def test_generated_file_matches_its_manifest_digest(tmp_path, name):
    e = entry(name)
    data = e.make(tmp_path)
    assert hashlib.sha256(data).hexdigest() == e.sha256
    assert 50_000 <= len(data) <= 1_000_000


def test_manifest_has_every_kind_the_issue_asks_for():
    kinds = " ".join(e.kind for e in devset.MANIFEST).lower()
    for kind in ("english prose", "chinese", "source code", "html", "fixed-length binary records",
                 "messagepack", "protocol buffers", "pdf", "jpeg"):
        assert kind in kinds
    assert len({e.sha256 for e in devset.MANIFEST}) == len(devset.MANIFEST) >= 8


def test_sensor_records_are_fixed_length_rows_in_time_order(tmp_path):
    import numpy as np
    rows = np.frombuffer(entry("sensor-records.bin").make(tmp_path), dtype=devset.RECORD)
    assert rows.dtype.itemsize == 32
    assert len(rows) == 12_500
    assert (np.diff(rows["time_s"].astype(np.int64)) > 0).all()
    assert sorted(set(rows["station"].tolist())) == list(range(101, 109))


def test_msgpack_encoder_is_read_back_by_a_real_decoder(tmp_path):
    from pip._vendor import msgpack
    assert msgpack.unpackb(entry("events.msgpack").make(tmp_path)) == devset.events(3000, devset.SEED + 1)
    sample = {"a": [0, 127, 128, -1, -33, 255, 65_536, -40_000, 2**40], "s": "x" * 40, "f": 1.5, "n": None,
              "t": True, "l": list(range(20)), "m": {str(i): i for i in range(17)}}
    assert msgpack.unpackb(devset.msgpack_encode(sample), strict_map_key=False) == sample


def test_protobuf_file_is_a_sequence_of_length_delimited_events(tmp_path):
    data = entry("events.pb").make(tmp_path)

    def varint(i):
        n = shift = 0
        while True:
            b = data[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n, i
    i, count = 0, 0
    while i < len(data):
        key, i = varint(i)
        assert key == (1 << 3 | 2)             # field 1, length-delimited
        length, i = varint(i)
        i += length
        count += 1
    assert (i, count) == (len(data), 4000)


def test_changed_source_is_a_one_line_error_and_writes_nothing(tmp_path, monkeypatch):
    good = hashlib.sha256(b"expected").hexdigest()
    monkeypatch.setattr(devset, "MANIFEST", [devset.Entry("x.bin", "test", "a test source", good,
                                                          lambda cache: b"changed")])
    with pytest.raises(SystemExit) as e:
        devset.main(["--out", str(tmp_path / "set")])
    assert str(e.value) == (f"devset: x.bin: SHA-256 {hashlib.sha256(b'changed').hexdigest()[:16]}... is not "
                            f"the manifest's {good[:16]}... (a test source); the source changed: do not use this set")
    assert [p.name for p in (tmp_path / "set").iterdir()] == [".cache"]


def test_second_run_only_verifies(tmp_path, monkeypatch, capsys):
    calls = []

    def make(cache):
        calls.append(cache)
        return b"expected"
    digest = hashlib.sha256(b"expected").hexdigest()
    monkeypatch.setattr(devset, "MANIFEST", [devset.Entry("x.bin", "test", "a test source", digest, make)])
    out = tmp_path / "set"
    assert devset.main(["--out", str(out)]) == 0
    assert devset.main(["--out", str(out)]) == 0
    assert len(calls) == 1 and (out / "x.bin").read_bytes() == b"expected"
    (out / "x.bin").write_bytes(b"damaged")            # a damaged copy is rebuilt, not trusted
    assert devset.main(["--out", str(out)]) == 0
    assert len(calls) == 2 and (out / "x.bin").read_bytes() == b"expected"
    assert capsys.readouterr().out.splitlines() == [f"x.bin{' ' * 24}        8 B  {digest}  test"] * 3


def test_out_that_is_a_file_is_a_one_line_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SystemExit) as e:
        devset.main(["--out", str(f)])
    assert str(e.value) == f"devset: {f} is not a folder; give --out a folder"


def fake_sources(tmp_path, monkeypatch, size=20):
    """A two-file set, one more source and a 6-byte tinyshakespeare, so mixed() runs offline."""
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    (corpora / "tinyshakespeare.txt").write_bytes(b"TS-ts\n")
    files = [(b"aaaa", "a.txt"), (b"bbbbbb", "b.bin")]
    monkeypatch.setattr(devset, "MANIFEST", [devset.Entry(n, "test", "test", hashlib.sha256(d).hexdigest(),
                                                          lambda cache, d=d: d) for d, n in files])
    monkeypatch.setattr(devset, "MIXED_MORE", [("more", lambda cache: b"0123456789")])
    monkeypatch.setattr(devset, "CORPORA", corpora)
    monkeypatch.setattr(devset, "MIXED_SIZE", size)
    return b"TS-ts\n" + b"aaaa" + b"bbbbbb" + b"0123456789"


def test_mixed_input_is_tinyshakespeare_the_set_then_more_cut_at_its_size(tmp_path, monkeypatch, capsys):
    whole = fake_sources(tmp_path, monkeypatch)
    monkeypatch.setattr(devset, "MIXED_SHA256", hashlib.sha256(whole[:20]).hexdigest())
    assert devset.main(["--out", str(tmp_path / "set"), "--mixed"]) == 0
    assert (tmp_path / "set" / devset.MIXED_NAME).read_bytes() == whole[:20]
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"{devset.MIXED_NAME}{' ' * 15}        20 B  ")


def test_mixed_input_of_changed_sources_is_a_one_line_error_and_not_written(tmp_path, monkeypatch):
    whole = fake_sources(tmp_path, monkeypatch)
    with pytest.raises(SystemExit) as e:
        devset.main(["--out", str(tmp_path / "set"), "--mixed"])
    assert str(e.value) == (f"devset: {devset.MIXED_NAME}: SHA-256 {hashlib.sha256(whole[:20]).hexdigest()[:16]}"
                            f"... is not the manifest's {devset.MIXED_SHA256[:16]}...; a source changed: do not use it")
    assert not (tmp_path / "set" / devset.MIXED_NAME).exists()
    monkeypatch.setattr(devset, "MIXED_SIZE", 27)          # more than the sources hold
    with pytest.raises(SystemExit) as e:
        devset.main(["--out", str(tmp_path / "set"), "--mixed"])
    assert str(e.value) == "devset: the mixed input has only 26 bytes, not 27"


def test_mixed_inputs_generated_parts_are_new_data_not_repeats_of_the_set(tmp_path):
    more = dict(devset.MIXED_MORE)
    assert len(more) == len(devset.MIXED_MORE) >= 10
    for kind, name in (("binary records", "sensor-records.bin"), ("MessagePack", "events.msgpack"),
                       ("protocol buffers", "events.pb")):
        data, first = more[kind](tmp_path), entry(name).make(tmp_path)
        assert data[:4096] not in first and len(data) >= 200_000


def run_devset(*args, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "devset.py"), *args], cwd=ROOT, env=child_env(),
                          stderr=subprocess.PIPE, text=True, timeout=60, **kw)


def test_an_out_that_takes_no_files_is_a_one_line_error():
    """`--out /proc/x` was a FileNotFoundError traceback (before any download: nothing is fetched)."""
    r = run_devset("--out", "/proc/x")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == "devset: cannot write the set into '/proc/x': no such file or folder; check the path, then run again\n"


def truncated(archive: str, data: bytes) -> bytes:
    """A pinned archive holding `data` at the states.py path, cut in half (an interrupted download)."""
    buf = io.BytesIO()
    if archive.endswith(".whl"):
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("docutils/parsers/rst/states.py", data)
    else:
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            info = tarfile.TarInfo("docutils-0.23/docutils/parsers/rst/states.py")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()[:len(buf.getvalue()) // 2]


@pytest.mark.parametrize("archive, why", [
    ("docutils-0.23.tar.gz", "EOFError: Compressed file ended before the end-of-stream marker was reached"),
    ("docutils-0.23-py3-none-any.whl", "BadZipFile: File is not a zip file"),
])
def test_a_truncated_cached_archive_names_the_file_to_delete(tmp_path, monkeypatch, archive, why):
    """It was a BadZipFile (or EOFError) traceback with no advice."""
    data = os.urandom(200_000)                            # random: the cut falls inside the member
    cache = tmp_path / "set" / ".cache"
    cache.mkdir(parents=True)
    (cache / archive).write_bytes(truncated(archive, data))
    monkeypatch.setattr(devset, "MANIFEST", [devset.Entry("states.py", "test", "test", hashlib.sha256(data).hexdigest(),
                                                          devset.member("docutils", "docutils/parsers/rst/states.py"))])
    with pytest.raises(SystemExit) as e:
        devset.main(["--out", str(tmp_path / "set")])
    assert str(e.value) == (f"devset: the cached archive {cache / archive} is damaged ({why}); delete it and run "
                            f"again (it is downloaded again)")
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == [".cache"]


def test_list_to_a_reader_that_went_away_is_quiet():
    """`devset.py --list | head -1` was a BrokenPipeError traceback. Here the reader is gone
    before the first line, every time."""
    read, write = os.pipe()
    os.close(read)
    try:
        r = run_devset("--list", stdout=write)
    finally:
        os.close(write)
    assert (r.returncode, r.stderr) == (0, "")
