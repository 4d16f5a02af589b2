"""The command lines as a user runs them: round trips, stats, and one-line errors with no debris."""
import importlib
import json
import os
import pty
import resource
import socket
import struct
import subprocess
import sys

import pytest

from shared.coding.container import parse
from shared.core.errors import FormatError
from shared.texts import mission_log
from tests.helpers import ROOT, child_env, expect_error, leftovers, made_once, run_cli, run_cli_with


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One real compressed file, made once through the CLI (without -q or --progress-every: its
    stderr, in stderr.txt, is what test_plain_progress_lines_for_logs reads)."""
    return made_once(tmp_path_factory, mission_log(3000), stats=True)


@pytest.fixture(scope="module")
def decompressed(made, tmp_path_factory):
    """made's file decompressed once through the CLI, with --stats-json: the run whose output, stderr
    and statistics two tests check (tests read it, never change it)."""
    d = tmp_path_factory.mktemp("decompressed")
    r = run_cli("receiver", "decompress", str(made / "c.mrs"), str(d / "out.txt"), "--stats-json", str(d / "s.json"))
    return d, r


def test_stats_json_has_the_promised_fields(made):
    stats = json.loads((made / "stats.json").read_text())
    for key in ("input_bytes", "compressed_bytes", "ideal_bits", "seconds", "steps", "final_digest"):
        assert key in stats
    assert stats["input_bytes"] == 3000
    assert stats["compressed_bytes"] == (made / "c.mrs").stat().st_size
    assert len(stats["final_digest"]) == 64


def test_decompress_round_trip_and_same_final_digest(made, decompressed):
    d, r = decompressed
    assert r.returncode == 0, r.stderr.decode()
    assert (d / "out.txt").read_bytes() == (made / "in.txt").read_bytes()
    assert json.loads((d / "s.json").read_text())["final_digest"] == \
        json.loads((made / "stats.json").read_text())["final_digest"]
    assert "bob: verified 3,000 bytes" in r.stderr.decode()


def test_stdin_to_stdout_pipeline(cli):
    data = "Sol 1. Ünïcödé ✓\n".encode() * 30
    c = cli("sender", "compress", "-", "-", "--preset", "tiny", input_bytes=data)
    assert c.returncode == 0, c.stderr.decode()
    d = cli("receiver", "decompress", "-", "-", input_bytes=c.stdout)
    assert d.returncode == 0, d.stderr.decode()
    assert d.stdout == data


def test_missing_input(cli, tmp_path):
    r = cli("sender", "compress", str(tmp_path / "nope.txt"), str(tmp_path / "o.mrs"))
    expect_error(r, f"alice: error: input file {str(tmp_path / 'nope.txt')!r} not found; check the path",
                 tmp_path, [])


def test_input_is_a_folder(cli, tmp_path):
    r = cli("sender", "compress", str(tmp_path), str(tmp_path / "o.mrs"))
    expect_error(r, f"alice: error: input {str(tmp_path)!r} is a folder, not a file", tmp_path, [])


def test_output_in_missing_folder(cli, tmp_path, made):
    r = cli("sender", "compress", str(made / "in.txt"), str(tmp_path / "no" / "o.mrs"))
    expect_error(r, f"alice: error: output folder {str(tmp_path / 'no')!r} does not exist; create it first",
                 tmp_path, [])


def test_not_a_marslink_file(cli, tmp_path):
    (tmp_path / "x.txt").write_bytes(b"just some text, not compressed")
    r = cli("receiver", "decompress", str(tmp_path / "x.txt"), str(tmp_path / "out"))
    expect_error(r, f"bob: error: {str(tmp_path / 'x.txt')!r} is not a marslink file (no MRSL signature); "
                    "was it made by 'alice compress'?", tmp_path, ["x.txt"])


def test_empty_file_is_not_a_marslink_file(cli, tmp_path):
    (tmp_path / "e").write_bytes(b"")
    r = cli("receiver", "decompress", str(tmp_path / "e"), str(tmp_path / "out"))
    expect_error(r, f"bob: error: {str(tmp_path / 'e')!r} is not a marslink file (no MRSL signature); "
                    "was it made by 'alice compress'?", tmp_path, ["e"])


@pytest.mark.parametrize("version", [5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 28])  # 5: before the tree mixer; 8: before the near contexts; 9: bytes coded whole; 10: before the mixers' new start; 11: before the header dictionary and the mixer's early steps; 12: before the word rows; 13: before the shape weight set; 14: before neural's hashed contexts; 15: before the indirect context; 16: before the fuller count rows; 17: before the word pair between words; 18: before the mixer's late steps; 19: before default's hashed contexts; 20: before tiny's new shape; 21: before order 3's smaller table; 22: before order 5; 23: before the reach set; 24: before the shape context; 25: before the open elements; 26: before the line before's indentation
def test_wrong_format_version(cli, tmp_path, made, version):
    blob = bytearray((made / "c.mrs").read_bytes())
    blob[4] = version
    (tmp_path / "v.mrs").write_bytes(blob)
    r = cli("receiver", "decompress", str(tmp_path / "v.mrs"), str(tmp_path / "out"))
    expect_error(r, f"bob: error: {str(tmp_path / 'v.mrs')!r} is marslink format version {version}; this build "
                    "reads version 27 (use a matching marslink release)", tmp_path, ["v.mrs"])


def test_truncated_file(cli, tmp_path, made):
    blob = (made / "c.mrs").read_bytes()
    (tmp_path / "t.mrs").write_bytes(blob[:-100])
    r = cli("receiver", "decompress", str(tmp_path / "t.mrs"), str(tmp_path / "out"))
    (hlen,) = struct.unpack_from("<I", blob, 5)
    assert r.returncode == 2
    assert r.stderr.decode().startswith(f"bob: error: {str(tmp_path / 't.mrs')!r} is truncated: payload has ")
    assert leftovers(tmp_path) == ["t.mrs"]


def test_a_file_cut_in_its_first_bytes_or_with_an_impossible_header_length_is_named_as_such(made):
    """Four to eight bytes that begin with MRSL are a truncated file, not another kind; a header
    length no header has is damage, not a file whose rest is missing."""
    blob = (made / "c.mrs").read_bytes()
    for n in range(1, 9):
        with pytest.raises(FormatError) as e:
            parse(blob[:n], "'t.mrs'")
        assert str(e.value) == f"'t.mrs' is truncated: it has only {n} of a marslink header's first 9 bytes"
    flipped = bytearray(blob)
    flipped[8] ^= 0x10
    with pytest.raises(FormatError) as e:
        parse(bytes(flipped), "'t.mrs'")
    (hlen,) = struct.unpack_from("<I", flipped, 5)
    assert str(e.value) == (f"'t.mrs' is corrupted: its header length field says {hlen:,} bytes, more than any "
                            f"header (bit flip or damaged copy)")


def test_a_numeric_profile_the_environment_names_wrongly_is_named_with_its_variable(cli, tmp_path, made):
    r = cli("sender", "compress", str(made / "in.txt"), str(tmp_path / "c.mrs"), env={"MARSLINK_PROFILE": "fast"})
    expect_error(r, "alice: error: the environment variable MARSLINK_PROFILE='fast' names no numeric profile; set it "
                    "to one of portable, native, or unset it", tmp_path, [])


def test_flipped_bit_in_payload(cli, tmp_path, made):
    blob = bytearray((made / "c.mrs").read_bytes())
    blob[-20] ^= 0x10
    (tmp_path / "f.mrs").write_bytes(blob)
    r = cli("receiver", "decompress", str(tmp_path / "f.mrs"), str(tmp_path / "out"))
    expect_error(r, f"bob: error: {str(tmp_path / 'f.mrs')!r} is corrupted: payload checksum mismatch "
                    "(bit flip or damaged copy)", tmp_path, ["f.mrs"])


def test_flipped_bit_in_header(cli, tmp_path, made):
    blob = bytearray((made / "c.mrs").read_bytes())
    blob[20] ^= 0x01
    (tmp_path / "h.mrs").write_bytes(blob)
    r = cli("receiver", "decompress", str(tmp_path / "h.mrs"), str(tmp_path / "out"))
    expect_error(r, f"bob: error: {str(tmp_path / 'h.mrs')!r} is corrupted: header checksum mismatch "
                    "(bit flip or damaged copy)", tmp_path, ["h.mrs"])


def test_flipped_bit_in_digest_table(cli, tmp_path, made):
    """Format 4: the sync digests are covered by a checksum in the header, so damage there is a
    corrupted file before any decoding, not a divergence after all of it."""
    blob = bytearray((made / "c.mrs").read_bytes())
    (hlen,) = struct.unpack_from("<I", blob, 5)
    blob[13 + hlen + 1] ^= 0x04                      # inside the first digest
    (tmp_path / "d.mrs").write_bytes(blob)
    r = cli("receiver", "decompress", str(tmp_path / "d.mrs"), str(tmp_path / "out"))
    expect_error(r, f"bob: error: {str(tmp_path / 'd.mrs')!r} is corrupted: sync digest table checksum mismatch "
                    "(bit flip or damaged copy)", tmp_path, ["d.mrs"])


def test_other_numeric_profile_decodes(cli, tmp_path, made):
    r = cli("receiver", "decompress", str(made / "c.mrs"), str(tmp_path / "out"), "--profile", "native")
    assert r.returncode == 0, r.stderr.decode()
    assert (tmp_path / "out").read_bytes() == (made / "in.txt").read_bytes()


def test_file_of_another_arithmetic_is_refused(cli, tmp_path, made):
    from shared.coding.container import parse
    c = parse((made / "c.mrs").read_bytes())
    header = dict(c.header, fingerprint=dict(c.header["fingerprint"], arithmetic="0"))
    (tmp_path / "a.mrs").write_bytes(type(c)(header, c.digests, c.payload).to_bytes())
    r = cli("receiver", "decompress", str(tmp_path / "a.mrs"), str(tmp_path / "out"))
    expect_error(r, "bob: error: numeric profile mismatch in 'arithmetic': the file has '0', this machine "
                    "has '1'; both sides need a marslink build with the same arithmetic", tmp_path, ["a.mrs"])


def test_existing_output_is_untouched_on_failure(cli, tmp_path, made):
    """Even with --force, an output is replaced only by a verified result."""
    blob = bytearray((made / "c.mrs").read_bytes())
    blob[-20] ^= 0x10
    (tmp_path / "bad.mrs").write_bytes(blob)
    (tmp_path / "out").write_bytes(b"precious")
    r = cli("receiver", "decompress", str(tmp_path / "bad.mrs"), str(tmp_path / "out"), "--force")
    expect_error(r, f"bob: error: {str(tmp_path / 'bad.mrs')!r} is corrupted: payload checksum mismatch "
                    "(bit flip or damaged copy)", tmp_path, ["bad.mrs", "out"])
    assert (tmp_path / "out").read_bytes() == b"precious"


def test_plain_progress_lines_for_logs(cli, tmp_path, made):
    """With --progress-every and stderr not a terminal, both sides print parseable progress lines
    ending at 100%; without it, stderr holds only the one summary line (made's run: the same
    input and command with no --progress-every)."""
    src = tmp_path / "in.txt"
    src.write_bytes(mission_log(3000))
    c = cli("sender", "compress", str(src), str(tmp_path / "c.mrs"), "--preset", "tiny", "--progress-every", "0.001")
    assert c.returncode == 0, c.stderr.decode()
    lines = c.stderr.decode().splitlines()
    assert lines[-2].startswith("Earth: compressing: 3,000 / 3,000 B (100.0%), ")
    assert lines[-1].startswith("alice: 3,000 -> ")
    assert len(lines) > 3                                   # intermediate lines, not just the last
    d = cli("receiver", "decompress", str(tmp_path / "c.mrs"), str(tmp_path / "back.txt"), "--progress-every", "0.001")
    assert d.returncode == 0, d.stderr.decode()
    assert d.stderr.decode().splitlines()[-2].startswith("Mars: decompressing: 3,000 / 3,000 B (100.0%), ")
    assert (tmp_path / "back.txt").read_bytes() == src.read_bytes()
    assert (made / "in.txt").read_bytes() == src.read_bytes()
    assert len((made / "stderr.txt").read_text().splitlines()) == 1


def test_progress_every_must_be_a_positive_duration(cli, tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"x" * 100)
    r = cli("sender", "compress", str(src), str(tmp_path / "c.mrs"), "--progress-every", "0")
    expect_error(r, "alice compress: error: argument --progress-every: '0' is not a positive number of seconds "
                    "(at most 2,592,000); see 'alice compress --help'", tmp_path, ["in.txt"])


TOO_BIG = "is larger than 1,073,741,824 bytes, the most marslink takes in one file; split it into smaller files"


def test_endless_and_huge_inputs_are_refused_after_the_limit(cli, tmp_path):
    """Issue 25 A5: /dev/zero ended in a MemoryError traceback, a 2 GB sparse file reached 2.4 GB
    of memory before its size was refused. Now at most the limit plus one byte is read, and an
    endless device (by its device number, so also as stdin) is refused before a byte is."""
    r = cli("sender", "compress", "/dev/zero", str(tmp_path / "z.mrs"))
    expect_error(r, "alice: error: input '/dev/zero' never ends; give a file, or pipe a finite part of it in "
                    "(e.g. head -c 1M /dev/zero | ...)", tmp_path, [])
    with open("/dev/urandom", "rb") as endless:
        r = run_cli_with("sender", "compress", "-", str(tmp_path / "z.mrs"), stdin=endless)
    expect_error(r, "alice: error: input standard input is /dev/urandom, which never ends; give a file, or pipe "
                    "a finite part of it in (e.g. head -c 1M /dev/urandom | ...)", tmp_path, [])
    zero = subprocess.Popen(["cat", "/dev/zero"], stdout=subprocess.PIPE)
    try:
        r = run_cli_with("sender", "compress", "-", str(tmp_path / "z.mrs"), stdin=zero.stdout)
    finally:
        zero.kill()
        zero.wait()
    expect_error(r, f"alice: error: input standard input {TOO_BIG}", tmp_path, [])
    r = cli("receiver", "decompress", "/dev/zero", str(tmp_path / "z.txt"))
    expect_error(r, "bob: error: '/dev/zero' is not a marslink file (no MRSL signature); was it made by "
                    "'alice compress'?", tmp_path, [])
    sparse = tmp_path / "sparse.bin"
    with open(sparse, "wb") as f:
        f.truncate(2 << 30)
    for prog, cmd in (("alice", ("sender", "compress")), ("alice", ("sender", "send")), ("bob", ("receiver", "decompress"))):
        args = ("--connect", "tcp://127.0.0.1:1") if cmd[1] == "send" else (str(tmp_path / "o"),)
        r = run_cli_with(*cmd, str(sparse), *args, prefix=("prlimit", "--as=1500000000", "--"))
        limit = "1,073,741,824" if prog == "alice" else "1,207,959,552"
        expect_error(r, f"{prog}: error: input {str(sparse)!r} is larger than {limit} bytes, the most marslink "
                        f"takes in one file; split it into smaller files", tmp_path, ["sparse.bin"])


def test_closed_standard_streams_are_one_line_before_any_work(tmp_path, made):
    """Issue 25 A12: `<&-` and `>&-` gave an AttributeError traceback; decompress to a closed stdout
    failed only after decoding everything."""
    def shell(command):
        return subprocess.run(["bash", "-c", command], cwd=ROOT, env=child_env(), capture_output=True, timeout=300)
    py = f"{sys.executable} -m"
    r = shell(f"{py} sender compress - {tmp_path / 'x.mrs'} --preset tiny <&-")
    expect_error(r, "alice: error: standard input is closed; give an input file, or pipe data in", tmp_path, [])
    r = shell(f"{py} sender compress {made / 'in.txt'} - --preset tiny >&-")
    expect_error(r, "alice: error: standard output is closed; give an output file name instead of '-'")
    r = shell(f"{py} receiver decompress {made / 'c.mrs'} - >&-")
    expect_error(r, "bob: error: standard output is closed; give an output file name instead of '-'")
    # stderr closed: nowhere to say anything, so the work is done, silently (it failed silently with exit 1)
    r = shell(f"{py} sender compress {made / 'in.txt'} {tmp_path / 'q.mrs'} --preset tiny --progress-every 1 2>&-")
    assert r.returncode == 0 and r.stderr == b"" and (tmp_path / "q.mrs").read_bytes() == (made / "c.mrs").read_bytes()
    r = shell(f"{py} receiver decompress {tmp_path / 'q.mrs'} {tmp_path / 'q.txt'} 2>&-")
    assert r.returncode == 0 and (tmp_path / "q.txt").read_bytes() == (made / "in.txt").read_bytes()


@pytest.mark.parametrize("output", ["-", "/dev/stdout"])
def test_compressed_data_is_not_written_to_a_terminal(made, output):
    """Issue 25 A13: `alice compress in -` wrote binary to a terminal; gzip refuses this, so does
    alice. Round seven: so it does when the terminal is named (`/dev/stdout`), which skipped the check."""
    main, terminal = pty.openpty()
    try:
        r = run_cli_with("sender", "compress", str(made / "in.txt"), output, "--preset", "tiny", stdout=terminal)
        expect_error(r, "alice: error: compressed data not written to a terminal; redirect it (> FILE), give an "
                        "output file name, or add --force")
        os.set_blocking(main, False)
        with pytest.raises(BlockingIOError):
            os.read(main, 100)                  # not a byte reached the terminal
    finally:
        os.close(main)
        os.close(terminal)


def test_decompress_stats_have_the_sizes_compress_writes(made, decompressed):
    """Issue 25: `bob decompress --stats-json` lacked bits_per_byte and header_bytes."""
    d, r = decompressed
    assert r.returncode == 0, r.stderr.decode()
    alice, bob = json.loads((made / "stats.json").read_text()), json.loads((d / "s.json").read_text())
    for key in ("compressed_bytes", "header_bytes", "bits_per_byte", "payload_bytes", "input_bytes"):
        assert bob[key] == alice[key], key
    assert bob["header_bytes"] == bob["compressed_bytes"] - bob["payload_bytes"] > 0


def test_an_empty_input_has_no_bits_per_byte(cli, tmp_path):
    """Issue 25: an empty input reported "8.000 bits/byte" (one coded byte over max(0, 1))."""
    (tmp_path / "empty").write_bytes(b"")
    r = cli("sender", "compress", str(tmp_path / "empty"), str(tmp_path / "e.mrs"), "--preset", "tiny",
            "--stats-json", str(tmp_path / "e.json"))
    assert r.returncode == 0, r.stderr.decode()
    size = (tmp_path / "e.mrs").stat().st_size
    assert r.stderr.decode().startswith(f"alice: 0 -> {size:,} bytes (an empty input, ")
    assert json.loads((tmp_path / "e.json").read_text())["bits_per_byte"] is None
    r = cli("receiver", "decompress", str(tmp_path / "e.mrs"), str(tmp_path / "e.out"), "--stats-json",
            str(tmp_path / "d.json"))
    assert r.returncode == 0 and (tmp_path / "e.out").read_bytes() == b""
    assert json.loads((tmp_path / "d.json").read_text())["bits_per_byte"] is None


# -- round seven: streams, limits and failures outside the work, each one line ---------------------

def test_compressed_data_is_not_read_from_a_terminal(tmp_path):
    """Round seven: `bob decompress - out` with standard input a terminal waited for someone to type
    compressed data; it is refused at once, as gzip -d refuses it."""
    main, terminal = pty.openpty()
    try:
        r = run_cli_with("receiver", "decompress", "-", str(tmp_path / "out.txt"), stdin=terminal, timeout=60)
    finally:
        os.close(main)
        os.close(terminal)
    expect_error(r, "bob: error: compressed data not read from a terminal; pipe a file in (< FILE) or give its name",
                 tmp_path, [])


def _compress_with_stderr(made, out, stderr, **popen):
    return subprocess.Popen([sys.executable, "-m", "sender", "compress", str(made / "in.txt"), str(out),
                             "--preset", "tiny", "--progress-every", "0.01"], cwd=ROOT, env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=stderr, **popen)


def test_the_work_outlives_the_reader_of_stderr(tmp_path, made):
    """Round seven: `alice ... 2>&1 >out | head -1` exited 1 with no output once the reader of its
    progress lines went away; the lines now go nowhere and the work completes (as with 2>&-)."""
    alice = _compress_with_stderr(made, tmp_path / "a.mrs", subprocess.PIPE)
    try:
        assert alice.stderr.readline().startswith(b"Earth: compressing: ")
        alice.stderr.close()                    # the reader goes after the first line
        assert alice.wait(120) == 0
    finally:
        if alice.poll() is None:
            alice.kill()
    read_end, write_end = os.pipe()
    os.close(read_end)                          # gone before the start
    try:
        alice = _compress_with_stderr(made, tmp_path / "b.mrs", write_end)
    finally:
        os.close(write_end)
    assert alice.wait(120) == 0
    for name in ("a.mrs", "b.mrs"):
        assert (tmp_path / name).read_bytes() == (made / "c.mrs").read_bytes(), name
    assert leftovers(tmp_path) == ["a.mrs", "b.mrs"]


def test_a_file_size_limit_is_named(tmp_path, made):
    """Round seven: under `ulimit -f` a write failed as "file too large for this file system; choose
    another folder", which no folder fixes; the shell's limit is now named with it."""
    out = tmp_path / "c.mrs"
    r = run_cli_with("sender", "compress", str(made / "in.txt"), str(out), "--preset", "tiny",
                     preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0)))
    expect_error(r, f"alice: error: cannot write {str(out)!r}: file too large for this file system, or for the "
                    f"shell's file-size limit (ulimit -f); choose another folder or raise the limit, then run again",
                 tmp_path, [])


OUT_OF_MEMORY = ("alice: error: out of memory; close other programs, choose a smaller preset or fewer --jobs, or "
                 "raise the memory limit (ulimit -v), then run again\n")


def _raise(e):
    def body():
        raise e
    return body


@pytest.mark.parametrize("error,line", [
    (MemoryError(), OUT_OF_MEMORY),
    (OSError(12, "Cannot allocate memory"), OUT_OF_MEMORY),
    (OSError(24, "Too many open files"), "alice: error: too many open files; raise the limit (ulimit -n) or use "
                                         "fewer --jobs, then run again\n"),
], ids=["MemoryError", "ENOMEM", "EMFILE"])
def test_the_safety_net_says_what_to_do_about_memory_and_open_files(capsys, error, line):
    """Round seven: a MemoryError was a traceback; ENOMEM and EMFILE said "check the path and the
    device", which neither fixes."""
    from shared.app.cli import run_main
    assert run_main("alice", _raise(error)) == 2
    assert capsys.readouterr().err == line


def test_a_current_folder_that_was_removed_is_one_line(tmp_path, made):
    """Round seven: started in a folder removed meanwhile, alice died while torch loaded ("Intel
    oneMKL FATAL ERROR: Cannot load .../libtorch_cpu.so"); run_main now says why before any work."""
    gone = tmp_path / "gone"
    gone.mkdir()
    argv = ["compress", str(made / "in.txt"), str(tmp_path / "c.mrs"), "--preset", "tiny"]
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from sender.cli import main; sys.exit(main({argv!r}))"
    r = subprocess.run(["bash", "-c", f'cd {str(gone)!r} && rmdir "$PWD" && exec "$0" -c "$1"', sys.executable,
                        code], env=child_env(), capture_output=True, timeout=120)
    expect_error(r, "alice: error: the current folder no longer exists; change to a folder that exists and run "
                    "again", tmp_path, [])


def test_a_socket_as_input_is_one_line(tmp_path):
    """Round seven: a Unix socket given as the input failed as "cannot read ...: No such device or
    address"; it is now named for what it is."""
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        r = run_cli("sender", "compress", str(path), str(tmp_path / "out.mrs"))
    expect_error(r, f"alice: error: input {str(path)!r} is a socket, not a file; give a file, or pipe the data in "
                    f"('-')", tmp_path, ["sock"])


class _Interrupting:
    """A module whose every attribute is a Ctrl-C: as if one came while it loads."""
    def __getattribute__(self, name):
        raise KeyboardInterrupt


@pytest.mark.parametrize("package,prog", [("sender", "alice"), ("receiver", "bob")])
def test_ctrl_c_while_the_modules_load_is_one_line(monkeypatch, capsys, tmp_path, package, prog):
    """Round seven: a Ctrl-C in the first tenths of a second, while the CLI's modules loaded,
    was a traceback from an import; it is now the one line of any other Ctrl-C."""
    main = importlib.import_module(package).main
    monkeypatch.setitem(sys.modules, f"{package}.cli", _Interrupting())
    command = "compress" if package == "sender" else "decompress"
    assert main([command, str(tmp_path / "in"), str(tmp_path / "out")]) == 130
    monkeypatch.undo()
    assert capsys.readouterr().err == f"{prog}: interrupted; no output was written\n"
    assert leftovers(tmp_path) == []


def test_torch_that_cannot_be_loaded_is_one_line(tmp_path, made):
    """Round seven: torch whose libraries cannot be mapped (most often under ulimit -v) failed as
    "check the path and the device"; the line now names torch and what to do."""
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise OSError("libtorch_cpu.so: failed to map segment from shared object")\n')
    out = tmp_path / "c.mrs"
    r = run_cli("sender", "compress", str(made / "in.txt"), str(out), "--preset", "tiny",
                env={"PYTHONPATH": f"{fake.parent}{os.pathsep}{ROOT}"})
    expect_error(r, "alice: error: cannot load torch (libtorch_cpu.so: failed to map segment from shared object); "
                    "if a memory limit is set (ulimit -v), raise it, else reinstall with 'make setup'",
                 tmp_path, ["fake"])


def test_a_name_that_is_not_text_is_shown_as_its_bytes(tmp_path, made):
    """Round eight: a file name that is not valid text (here not UTF-8; under LANG=C, any byte
    above 127) was shown as Python holds it, 'x\\udcff.mrs', which names no file a user can type or
    find. Its bytes are shown instead, as \\xff, in errors and in the lines of a run that worked."""
    src, out = os.fsencode(tmp_path) + b"/\xff\xfe.txt", os.fsencode(tmp_path) + b"/\xff\xfe.mrs"
    with open(src, "wb") as f:
        f.write((made / "in.txt").read_bytes())
    assert run_cli("sender", "compress", src, out, "--preset", "tiny", "-q").returncode == 0
    r = run_cli("sender", "compress", src, out, "--preset", "tiny")
    expect_error(r, f"alice: error: output '{tmp_path}/\\xff\\xfe.mrs' already exists; add --force to replace it, "
                    f"or choose another name")
    r = run_cli("sender", "keygen", os.fsencode(tmp_path) + b"/k\xff", timeout=60)
    assert r.returncode == 0 and r.stderr.decode().startswith(f"alice: wrote {tmp_path}/k\\xff/earth.key ")
