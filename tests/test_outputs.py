"""Outputs the way gzip and zstd write them: an existing file is refused unless --force, a new
file gets the umask's mode, and every write the OS refuses (read-only, permissions, /proc) is
one line naming the path and what to do, with nothing half-written left behind."""
import errno
import json
import os
import select
import shutil
import stat
import subprocess
import sys
import threading

import pytest

from shared.app.files import StorageError, check_output, output_lock, write_atomic, write_with_stats
from shared.core.errors import UsageError
from tests.helpers import (ROOT, assert_verified, bind_mount, child_env, expect_error, finish, leftovers, listen,
                           made_once, run_as_a_user, run_cli, run_cli_with, run_pair, send_to, tmpfs, wait_for_line)

TEXT = b"Sol 7. Dust storm on the horizon; the rover waits.\n" * 20


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return made_once(tmp_path_factory, TEXT, "-q")


def exists_message(prog: str, path) -> str:
    return f"{prog}: error: output {str(path)!r} already exists; add --force to replace it, or choose another name"


def test_compress_refuses_an_existing_output_unless_force(cli, tmp_path, made):
    out = tmp_path / "c.mrs"
    out.write_bytes(b"precious")
    r = cli("sender", "compress", str(made / "in.txt"), str(out), "--preset", "tiny", "-q")
    expect_error(r, exists_message("alice", out), tmp_path, ["c.mrs"])
    assert out.read_bytes() == b"precious"
    r = cli("sender", "compress", str(made / "in.txt"), str(out), "--preset", "tiny", "-q", "--force")
    assert r.returncode == 0, r.stderr.decode()
    assert out.read_bytes() == (made / "c.mrs").read_bytes()
    assert leftovers(tmp_path) == ["c.mrs"]


def test_decompress_refuses_an_existing_output_unless_force(cli, tmp_path, made):
    out = tmp_path / "back.txt"
    out.write_bytes(b"precious")
    r = cli("receiver", "decompress", str(made / "c.mrs"), str(out), "-q")
    expect_error(r, exists_message("bob", out), tmp_path, ["back.txt"])
    assert out.read_bytes() == b"precious"
    r = cli("receiver", "decompress", str(made / "c.mrs"), str(out), "-q", "-f")
    assert r.returncode == 0, r.stderr.decode()
    assert out.read_bytes() == TEXT


def test_listen_refuses_an_existing_out_before_listening(cli, tmp_path):
    out = tmp_path / "got.txt"
    out.write_bytes(b"precious")
    r = cli("receiver", "listen", "--bind", "tcp://127.0.0.1:1", "--out", str(out), "--preset", "tiny")
    expect_error(r, exists_message("bob", out), tmp_path, ["got.txt"])
    assert out.read_bytes() == b"precious"


def test_listen_with_force_replaces_only_with_the_verified_stream(tmp_path):
    """A live stream onto an existing --out: refused without --force (above); with it, the old
    file stays until the stream is verified, then the new one takes its place, with no debris."""
    (tmp_path / "out.bin").write_bytes(b"precious")
    result = run_pair(tmp_path, TEXT, bob_args=("--force", "-q"), alice_args=("-q",))
    assert_verified(result, TEXT)
    assert leftovers(tmp_path) == ["alice.json", "bob.json", "in.bin", "out.bin"]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_new_files_get_the_umask_mode(tmp_path, made, umask, mode):
    r = run_cli_with("sender", "compress", str(made / "in.txt"), str(tmp_path / "c.mrs"), "--preset", "tiny", "-q",
                     "--stats-json", str(tmp_path / "c.json"), umask=umask)
    assert r.returncode == 0, r.stderr.decode()
    r = run_cli_with("receiver", "decompress", str(tmp_path / "c.mrs"), str(tmp_path / "back.txt"), "-q",
                     "--stats-json", str(tmp_path / "d.json"), umask=umask)
    assert r.returncode == 0, r.stderr.decode()
    for name in ("c.mrs", "c.json", "back.txt", "d.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert (tmp_path / "back.txt").read_bytes() == TEXT


def test_a_private_input_gives_a_private_output(tmp_path):
    """As gzip and xz: an output is never more open than its input file, so a 0600 file stays 0600
    under umask 022 (with --force over a 0644 file too); from a pipe, the umask alone decides."""
    src, packed, back = tmp_path / "secret.txt", tmp_path / "s.mrs", tmp_path / "back.txt"
    src.write_bytes(TEXT)
    src.chmod(0o600)
    packed.write_bytes(b"old")
    packed.chmod(0o644)
    r = run_cli_with("sender", "compress", str(src), str(packed), "--preset", "tiny", "-q", "--force", umask=0o022)
    assert r.returncode == 0, r.stderr.decode()
    r = run_cli_with("receiver", "decompress", str(packed), str(back), "-q", umask=0o022)
    assert r.returncode == 0, r.stderr.decode()
    assert back.read_bytes() == TEXT
    r = run_cli_with("receiver", "decompress", "-", str(tmp_path / "piped.txt"), "-q", umask=0o022,
                     input_bytes=packed.read_bytes())
    assert r.returncode == 0, r.stderr.decode()
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("s.mrs", "back.txt", "piped.txt")}
    assert modes == {"s.mrs": 0o600, "back.txt": 0o600, "piped.txt": 0o644}


def test_a_report_is_written_only_with_its_output(tmp_path):
    """An output file and its --stats-json are both written unseen, then the output is put in
    place, then the report: an output whose name was taken meanwhile, or became a folder, leaves
    the previous report as it was (a report of success once stayed for an output never written)."""
    out, report = tmp_path / "o", tmp_path / "r.json"
    out.write_bytes(b"someone else's")
    report.write_text("the previous run's\n")
    with pytest.raises(UsageError) as e:
        write_with_stats(str(out), b"ours", False, str(report), {"run": "this"})
    assert str(e.value) == f"output {str(out)!r} already exists; add --force to replace it, or choose another name"
    out.unlink()
    out.mkdir()
    with pytest.raises(StorageError):
        write_with_stats(str(out), b"ours", True, str(report), {"run": "this"})
    assert report.read_text() == "the previous run's\n" and leftovers(tmp_path) == ["o", "r.json"]
    out.rmdir()
    write_with_stats(str(out), b"ours", False, str(report), {"run": "this"})
    assert out.read_bytes() == b"ours" and json.loads(report.read_text()) == {"run": "this"}
    assert leftovers(tmp_path) == ["o", "r.json"]


def test_an_output_folder_is_the_one_the_kernel_finds(cli, tmp_path, made):
    """`missing/..` is no folder and `link/..` is the parent of the link's target, as for a shell's
    `>`: the textual clean-up of os.path.abspath checked another folder, and the error came only
    after all the work."""
    r = cli("sender", "compress", str(made / "in.txt"), str(tmp_path / "missing" / ".." / "o.mrs"), "--preset", "tiny")
    expect_error(r, f"alice: error: output folder {str(tmp_path / 'missing' / '..')!r} does not exist; create it "
                    f"first", tmp_path, [])
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a" / "b")
    r = cli("receiver", "decompress", str(made / "c.mrs"), str(tmp_path / "link" / ".." / "back.txt"), "-q")
    assert r.returncode == 0, r.stderr.decode()
    assert (tmp_path / "a" / "back.txt").read_bytes() == TEXT
    assert leftovers(tmp_path) == ["a", "link"] and leftovers(tmp_path / "a") == ["b", "back.txt"]


@pytest.mark.parametrize("args", [("sender", "compress", "-", "{taken}", "--preset", "tiny"),
                                  ("receiver", "decompress", "-", "{taken}")], ids=["compress", "decompress"])
def test_the_output_is_checked_before_a_pipe_is_read(tmp_path, args):
    """A pipe can be read once: a taken output name is said at once, not after the producer has
    finished and its data was thrown away (here the producer never finishes)."""
    taken = tmp_path / "taken"
    taken.write_bytes(b"precious")
    p = subprocess.Popen([sys.executable, "-m", *(a.format(taken=taken) for a in args)], cwd=ROOT, env=child_env(),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.wait(timeout=60) == 2
    finally:
        p.kill()
        p.wait()
        p.stdin.close()
    prog = "alice" if args[0] == "sender" else "bob"
    assert p.stderr.read().decode() == exists_message(prog, taken) + "\n"
    assert taken.read_bytes() == b"precious"


def test_a_folder_that_keeps_what_is_made_in_it_is_named_before_any_work(tmp_path, monkeypatch):
    """An append-only folder (chattr +a, root only) lets the probe be made but not removed, and
    would refuse the final rename too: one line that says so and names the probe left there."""
    def kept(path, *args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted", path)
    monkeypatch.setattr(os, "unlink", kept)
    with pytest.raises(UsageError) as e:
        check_output(str(tmp_path / "o.mrs"))
    monkeypatch.undo()
    [probe] = leftovers(tmp_path)
    assert probe.startswith(".o.mrs.") and probe.endswith(".partial")
    assert str(e.value) == (f"folder {str(tmp_path)!r} takes new files but does not let them be removed or renamed "
                            f"(Operation not permitted: append-only?), so no output can be put in place there; "
                            f"choose another folder (and remove {probe!r} from it)")


def test_a_link_planted_as_bobs_lock_file_is_refused_never_followed(tmp_path):
    """Round nine: Bob's `.OUT.lock` was opened through a planted symbolic link, creating (or
    locking) a file elsewhere, as keygen and the demo once wrote through one."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / ".out.txt.lock").symlink_to(tmp_path / "elsewhere" / "planted")
    with pytest.raises(UsageError) as e:
        with output_lock(str(tmp_path / "out.txt")):
            pass
    assert str(e.value) == (f"lock file {str(tmp_path / '.out.txt.lock')!r} is a symbolic link, which marslink never "
                            f"follows; remove it (nothing else has such a name), then run again")
    assert leftovers(tmp_path / "elsewhere") == [] and (tmp_path / ".out.txt.lock").is_symlink()


def test_stats_json_is_a_report_replaced_on_every_run(cli, tmp_path, made):
    """Documented in --help: a statistics file is replaced like a log; only outputs need --force."""
    (tmp_path / "s.json").write_text("old")
    r = cli("receiver", "decompress", str(made / "c.mrs"), str(tmp_path / "back.txt"), "-q",
            "--stats-json", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr.decode()
    assert '"final_digest"' in (tmp_path / "s.json").read_text()


def test_output_in_proc_is_one_line(cli, made):
    r = cli("sender", "compress", str(made / "in.txt"), "/proc/marslink.mrs", "--preset", "tiny")
    expect_error(r, "alice: error: cannot write '/proc/marslink.mrs': its folder takes no new files (a virtual "
                    "file system such as /proc?); choose a folder on a disk, then run again")
    r = cli("receiver", "listen", "--bind", "tcp://127.0.0.1:1", "--out", "/proc/got.txt", "--preset", "tiny")
    expect_error(r, "bob: error: cannot write '/proc/got.txt': its folder takes no new files (a virtual "
                    "file system such as /proc?); choose a folder on a disk, then run again")


def test_read_only_file_system_is_one_line(cli, tmp_path, made):
    with tmpfs(tmp_path / "ro", "64k", read_only=True) as ro:
        r = cli("receiver", "decompress", str(made / "c.mrs"), str(ro / "back.txt"))
        expect_error(r, f"bob: error: cannot write {str(ro / 'back.txt')!r}: read-only file system; "
                        "choose a writable folder, then run again", ro, [])


def test_permission_denied_is_one_line(tmp_path, made):
    """Root ignores permissions; setpriv takes that right away, as for an ordinary user."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    r = run_as_a_user("sender", "compress", str(made / "in.txt"), str(locked / "c.mrs"), "--preset", "tiny")
    expect_error(r, f"alice: error: cannot write {str(locked / 'c.mrs')!r}: permission denied; "
                    "choose a folder you can write to, then run again", locked, [])


def test_an_output_that_appears_during_the_run_is_not_replaced(tmp_path):
    """check_output ran before the work; a file created meanwhile still wins without --force."""
    out = tmp_path / "o"
    out.write_bytes(b"someone else's")
    with pytest.raises(UsageError) as e:
        write_atomic(str(out), b"ours")
    assert str(e.value) == f"output {str(out)!r} already exists; add --force to replace it, or choose another name"
    assert out.read_bytes() == b"someone else's"
    assert leftovers(tmp_path) == ["o"]
    write_atomic(str(out), b"ours", force=True)
    assert out.read_bytes() == b"ours" and leftovers(tmp_path) == ["o"]


def test_stats_json_naming_the_input_or_the_output_is_refused_before_any_work(cli, tmp_path, made):
    """Issue 25 A1: `--stats-json notes.txt` once replaced the original with JSON and exited 0."""
    src, mrs, back = tmp_path / "notes.txt", tmp_path / "notes.mrs", tmp_path / "back.txt"
    src.write_bytes(TEXT)
    r = cli("sender", "compress", str(src), str(mrs), "--preset", "tiny", "--stats-json", str(src))
    expect_error(r, "alice: error: --stats-json would overwrite the input; choose another name for the statistics",
                 tmp_path, ["notes.txt"])
    r = cli("sender", "compress", str(src), str(mrs), "--preset", "tiny", "--stats-json", str(tmp_path / "." / "notes.mrs"))
    expect_error(r, "alice: error: --stats-json would overwrite the output; choose another name for the statistics",
                 tmp_path, ["notes.txt"])
    assert src.read_bytes() == TEXT
    shutil.copy(made / "c.mrs", mrs)
    r = cli("receiver", "decompress", str(mrs), str(back), "--stats-json", str(back))
    expect_error(r, "bob: error: --stats-json would overwrite the output; choose another name for the statistics",
                 tmp_path, ["notes.mrs", "notes.txt"])
    r = cli("receiver", "decompress", str(mrs), str(back), "--stats-json", str(mrs))
    expect_error(r, "bob: error: --stats-json would overwrite the input; choose another name for the statistics",
                 tmp_path, ["notes.mrs", "notes.txt"])
    r = cli("receiver", "listen", "--bind", "tcp://127.0.0.1:1", "--out", str(back), "--stats-json", str(back))
    expect_error(r, "bob: error: --stats-json would overwrite the output; choose another name for the statistics",
                 tmp_path, ["notes.mrs", "notes.txt"])
    assert mrs.read_bytes() == (made / "c.mrs").read_bytes()


def test_listen_never_replaces_an_out_that_appears_while_bob_waits(tmp_path):
    """Issue 25 A2: Bob's last step was an unconditional rename. Now he publishes with a hard link,
    as file mode does: the stream is refused at the end, the other file stays, Alice hears why."""
    bob, ep, out = listen(tmp_path)
    try:
        wait_for_line(bob, "bob: listening on")
        out.write_bytes(b"someone else's")
        (rc, lines), (bob_rc, bob_lines) = send_to(bob, tmp_path, ep, TEXT, "--state-dir", str(tmp_path / "earth"))
    finally:
        if bob.poll() is None:
            bob.kill()
    assert bob_rc == 2 and bob_lines[-1] == exists_message("bob", out), bob_lines
    assert rc == 2 and lines[-1].startswith("alice: error: Mars stopped the stream"), lines
    assert lines[-1].endswith(exists_message("bob", out)[len("bob: error: "):]), lines
    assert out.read_bytes() == b"someone else's"


def test_two_bobs_given_the_same_out_do_not_break_each_other(tmp_path):
    """Issue 25 A2: the second Bob is refused at once; the first one delivers."""
    first, ep, out = listen(tmp_path)
    try:
        wait_for_line(first, "bob: listening on")
        second, _, _ = listen(tmp_path)
        rc2, lines2 = finish(second, 60)
        assert rc2 == 2 and lines2 == [f"bob: error: another bob is receiving into {str(out)!r}; "
                                       f"give this one another --out"], lines2
        (rc, lines), (bob_rc, bob_lines) = send_to(first, tmp_path, ep, TEXT, "--state-dir", str(tmp_path / "earth"))
    finally:
        if first.poll() is None:
            first.kill()
    assert rc == 0 and bob_rc == 0, (lines, bob_lines)
    assert out.read_bytes() == TEXT
    assert leftovers(tmp_path) == ["alice.json", "bob.json", "earth", "in.bin", "out.bin"]


def test_devices_and_fifos_are_written_in_place_or_refused_never_replaced(cli, tmp_path, made):
    """Issue 25 A11: `alice compress x /dev/null` advised --force, and --force replaced device
    nodes and FIFOs with regular files. Now a character device or a FIFO is written in place
    (as a shell redirection would); `bob listen`, who publishes by linking a file, refuses them."""
    for force in ((), ("--force",)):
        r = cli("sender", "compress", str(made / "in.txt"), "/dev/null", "--preset", "tiny", "-q", *force)
        assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()
        r = cli("receiver", "decompress", str(made / "c.mrs"), "/dev/null", "-q", "--stats-json", "/dev/null", *force)
        assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    r = cli("sender", "compress", str(made / "in.txt"), str(fifo), "--preset", "tiny", "-q", "--force")
    reader.join(60)
    assert r.returncode == 0, r.stderr.decode()
    assert got == [(made / "c.mrs").read_bytes()] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    for out in ("/dev/null", str(fifo)):
        r = cli("receiver", "listen", "--bind", "tcp://127.0.0.1:1", "--out", out, "--preset", "tiny", "--force")
        expect_error(r, f"bob: error: output {out!r} is not a regular file (a device, FIFO or socket); give a file name")
    assert leftovers(tmp_path) == ["pipe"] and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_an_open_files_name_is_written_through_never_replaced(tmp_path, made):
    """`bob decompress x.mrs - --stats-json /dev/stdout > out` once replaced the system's
    /dev/stdout link with a JSON file (an atomic rename onto the link itself). A name for a file
    already open (/dev/stdout, /dev/fd/N) is now written through, after what the run wrote there;
    `bob listen` refuses it. A link of our own to /proc/self/fd/1 stands in for /dev/stdout here."""
    alias = tmp_path / "stdout"
    alias.symlink_to("/proc/self/fd/1")
    out = tmp_path / "out"
    with open(out, "wb") as f:
        r = run_cli_with("receiver", "decompress", str(made / "c.mrs"), str(tmp_path / "back.txt"), "-q",
                         "--stats-json", str(alias), stdout=f)
    assert r.returncode == 0, r.stderr.decode()
    assert alias.is_symlink() and os.readlink(alias) == "/proc/self/fd/1"
    assert json.loads(out.read_bytes())["input_bytes"] == len(TEXT) and (tmp_path / "back.txt").read_bytes() == TEXT
    with open(out, "wb") as f:          # the output on stdout too: the statistics would overwrite it
        r = run_cli_with("receiver", "decompress", str(made / "c.mrs"), "-", "-q", "--stats-json", str(alias), stdout=f)
    assert r.returncode == 2 and r.stderr == (b"bob: error: --stats-json would overwrite the output; choose another "
                                              b"name for the statistics\n") and out.read_bytes() == b""
    with open(out, "wb") as f:          # an existing file behind the name: no --force needed, as for /dev/null
        r = run_cli_with("sender", "compress", str(made / "in.txt"), str(alias), "--preset", "tiny", "-q", stdout=f)
    assert r.returncode == 0, r.stderr.decode()
    assert out.read_bytes() == (made / "c.mrs").read_bytes() and alias.is_symlink()
    r = run_cli("receiver", "listen", "--bind", "tcp://127.0.0.1:1", "--out", str(alias), "--preset", "tiny")
    expect_error(r, f"bob: error: output {str(alias)!r} is an open file's name (standard output?), not a file; "
                    f"give a file name")


def test_an_empty_output_name_or_a_folder_is_refused_before_any_work(cli, tmp_path, made):
    """`alice compress x ""` once coded the whole input, then failed on the current folder."""
    before = leftovers(tmp_path)
    r = cli("sender", "compress", str(made / "in.txt"), "", "--preset", "tiny")
    expect_error(r, "alice: error: output '' is not a file name; give one", tmp_path, before)
    folder = str(tmp_path / "new") + os.sep
    r = cli("receiver", "decompress", str(made / "c.mrs"), folder)
    expect_error(r, f"bob: error: output {folder!r} is not a file name; give one, not only a folder", tmp_path, before)
    r = cli("receiver", "listen", "--bind", "tcp://127.0.0.1:1", "--out", "", "--preset", "tiny")
    expect_error(r, "bob: error: output '' is not a file name; give one", tmp_path, before)


def test_statistics_that_cannot_be_written_leave_no_output(cli, tmp_path, made):
    """The output was once written before the statistics: a failed --stats-json exited 2 while a
    complete output stood there, and a rerun was then told it already exists. The output now
    waits, written but unseen, until the report is (and a failed output writes no report:
    test_full_disk.py)."""
    before = leftovers(tmp_path)
    for argv, prog in ((("sender", "compress", str(made / "in.txt"), str(tmp_path / "c.mrs"), "--preset", "tiny"), "alice"),
                       (("receiver", "decompress", str(made / "c.mrs"), str(tmp_path / "back.txt")), "bob")):
        r = cli(*argv, "-q", "--stats-json", "/dev/full")
        expect_error(r, f"{prog}: error: cannot write statistics '/dev/full': no space left on device; free some "
                        f"space or choose another folder, then run again", tmp_path, before)


# -- round seven: outputs checked before any work, reports only for runs that wrote ----------------

STATS_OVER_INPUT = "--stats-json would overwrite the input; choose another name for the statistics"


def test_stats_json_naming_the_file_piped_in_is_refused_before_any_work(tmp_path, made):
    """Round seven: `alice compress - out --stats-json notes.txt < notes.txt` replaced the input with
    JSON and exited 0: a piped-in input was never compared with the statistics' name."""
    src, mrs = tmp_path / "notes.txt", tmp_path / "c.mrs"
    src.write_bytes(TEXT)
    with open(src, "rb") as stdin:
        r = run_cli_with("sender", "compress", "-", str(tmp_path / "out.mrs"), "--preset", "tiny",
                         "--stats-json", str(src), stdin=stdin)
    expect_error(r, f"alice: error: {STATS_OVER_INPUT}", tmp_path, ["notes.txt"])
    assert src.read_bytes() == TEXT
    shutil.copy(made / "c.mrs", mrs)
    with open(mrs, "rb") as stdin:
        r = run_cli_with("receiver", "decompress", "-", str(tmp_path / "out.txt"), "--stats-json", str(mrs),
                         stdin=stdin)
    expect_error(r, f"bob: error: {STATS_OVER_INPUT}", tmp_path, ["c.mrs", "notes.txt"])
    assert mrs.read_bytes() == (made / "c.mrs").read_bytes()


def test_an_open_files_name_that_cannot_be_written_is_refused_before_any_work(tmp_path, made):
    """Round seven: a closed /dev/fd/N, a stdout open for reading and /dev/tty without a terminal
    were all accepted, coded in full and then failed (the statistics written already). Now each
    is one line before any work, and no statistics appear."""
    stats_json = str(tmp_path / "s.json")
    compress = ("sender", "compress", str(made / "in.txt"))
    r = run_cli_with(*compress, "/dev/fd/5", "--preset", "tiny", "--stats-json", stats_json)
    expect_error(r, "alice: error: output '/dev/fd/5' names no file this process holds open (was it closed?); "
                    "give a file name", tmp_path, [])
    (tmp_path / "held").write_bytes(b"")
    with open(tmp_path / "held", "rb") as read_only:
        r = run_cli_with(*compress, "-", "--preset", "tiny", "--stats-json", stats_json, stdout=read_only)
    expect_error(r, "alice: error: standard output is open for reading only; redirect it to a file (> FILE) or "
                    "give a file name", tmp_path, ["held"])
    r = run_cli_with(*compress, "/dev/tty", "--preset", "tiny", "--stats-json", stats_json, start_new_session=True)
    expect_error(r, "alice: error: cannot write output '/dev/tty': No such device or address; give a file name",
                 tmp_path, ["held"])
    assert (tmp_path / "held").read_bytes() == b""


def test_stdout_appending_to_the_input_is_refused(tmp_path, made):
    """Round seven: `bob decompress c.mrs - >> c.mrs` decoded and appended the text to its own input;
    standard output is now compared with the input file before any work."""
    mrs = tmp_path / "c.mrs"
    shutil.copy(made / "c.mrs", mrs)
    with open(mrs, "ab") as stdout:
        r = run_cli_with("receiver", "decompress", str(mrs), "-", stdout=stdout)
    expect_error(r, "bob: error: standard output is the input file; writing it would overwrite the input, so "
                    "choose another output", tmp_path, ["c.mrs"])
    assert mrs.read_bytes() == (made / "c.mrs").read_bytes()


@pytest.mark.parametrize("args", [("sender", "compress", "IN", "OUT", "--preset", "tiny"),
                                  ("receiver", "decompress", "MRS", "OUT")])
def test_an_output_with_a_file_mounted_on_it_is_refused_before_any_work(tmp_path, made, args):
    """Round eight: a file bind-mounted on the output (same file system: no stat field shows it)
    was found only after the work, by rename(2)'s "Device or resource busy"."""
    out, source = tmp_path / "out", tmp_path / "source"
    out.write_bytes(b"old")
    source.write_bytes(b"mounted")
    names = {"IN": str(made / "in.txt"), "MRS": str(made / "c.mrs"), "OUT": str(out)}
    prog = "alice" if args[0] == "sender" else "bob"
    with bind_mount(source, out):
        for force in ((), ("--force",)):
            r = run_cli(*[names.get(a, a) for a in args], *force)
            expect_error(r, f"{prog}: error: output {str(out)!r} is a mount point (a file is mounted on it), so it "
                            f"cannot be replaced; choose another name", tmp_path, ["out", "source"])
    assert (out.read_bytes(), source.read_bytes()) == (b"old", b"mounted")


STDERR_TOO = ("is also standard error (2>&1, or /dev/stderr), where the messages go, so they would be written "
              "into it; send the messages elsewhere (2> FILE) or give a file name")


@pytest.mark.parametrize("args, subject", [
    (("sender", "compress", "IN", "/dev/stderr", "--preset", "tiny"), "alice: error: output '/dev/stderr'"),
    (("receiver", "decompress", "MRS", "/dev/stderr"), "bob: error: output '/dev/stderr'"),
    (("sender", "compress", "IN", "OUT", "--preset", "tiny", "--stats-json", "/dev/stderr"),
     "alice: error: --stats-json '/dev/stderr'"),
    (("sender", "compress", "IN", "-", "--preset", "tiny"), "alice: error: standard output"),      # > log 2>&1
    (("receiver", "decompress", "MRS", "-"), "bob: error: standard output"),
])
def test_an_output_that_is_also_standard_error_is_refused_before_any_work(tmp_path, made, args, subject):
    """Round eight: `alice compress in /dev/stderr 2> x.mrs` wrote the data through a second open of
    the file, then her closing line over its first bytes; `bob decompress c.mrs /dev/stderr 2> t.txt`
    said "verified" of a file that began with that line; --stats-json /dev/stderr was no JSON; and
    `- > log 2>&1` mixed the messages into the data."""
    names = {"IN": str(made / "in.txt"), "MRS": str(made / "c.mrs"), "OUT": str(tmp_path / "o.mrs")}
    log = tmp_path / "log"
    with open(log, "wb") as err:
        both = args[3] == "-"
        r = run_cli_with(*[names.get(a, a) for a in args], stderr=subprocess.STDOUT if both else err,
                         **({"stdout": err} if both else {}))
    assert r.returncode == 2
    assert log.read_text() == f"{subject} {STDERR_TOO}\n"
    assert leftovers(tmp_path) == ["log"]
    with open(os.devnull, "wb") as null:        # a device takes both: `> /dev/null 2>&1` still works
        r = run_cli_with(*[names.get(a, a) for a in args], stdout=null, stderr=subprocess.STDOUT)
    assert r.returncode == 0


@pytest.mark.parametrize("case", ["append", "append-decompress", "read-write", "named"])
def test_the_file_piped_in_is_never_the_output(tmp_path, made, case):
    """Round eight: with the input on standard input, round seven's check did not know the input's
    file: `alice compress - - < notes.txt >> notes.txt` and `bob decompress - - < x.mrs >> x.mrs`
    appended to their input, `alice compress - /dev/stdin <> notes.txt` wrote into it, and
    `alice compress - notes.txt -f < notes.txt` replaced it with the container."""
    source = made / ("c.mrs" if case == "append-decompress" else "in.txt")
    victim = tmp_path / source.name
    shutil.copy(source, victim)
    side = "receiver" if case == "append-decompress" else "sender"
    tiny = () if side == "receiver" else ("--preset", "tiny")
    command = "decompress" if side == "receiver" else "compress"
    with open(victim, "r+b" if case == "read-write" else "rb") as stdin, open(victim, "ab") as appended:
        out = {"read-write": "/dev/stdin", "named": str(victim)}.get(case, "-")
        streams = {"stdout": appended} if case.startswith("append") else {}
        r = run_cli_with(side, command, "-", out, *tiny, *(("-f",) if case == "named" else ()), stdin=stdin, **streams)
    subject = {"read-write": "output '/dev/stdin' is the input file", "named": None}.get(case, "standard output is the "
                                                                                            "input file")
    prog = "bob" if side == "receiver" else "alice"
    expect_error(r, f"{prog}: error: {subject}; writing it would overwrite the input, so choose another output"
                 if subject else f"{prog}: error: output would overwrite the input; choose another output name",
                 tmp_path, [source.name])
    assert victim.read_bytes() == source.read_bytes()


def test_a_failed_output_stream_leaves_no_statistics(tmp_path, made):
    """Round seven: for a stream (a device, stdout) the statistics were written first, so a run whose
    output failed (/dev/full, a reader that had gone) left the report of a run that wrote nothing."""
    stats_json = tmp_path / "s.json"
    r = run_cli_with("sender", "compress", str(made / "in.txt"), "/dev/full", "--preset", "tiny", "-q",
                     "--stats-json", str(stats_json))
    expect_error(r, "alice: error: cannot write '/dev/full': no space left on device; free some space or choose "
                    "another folder, then run again", tmp_path, [])
    read_end, write_end = os.pipe()
    os.close(read_end)                          # the reader has gone before a byte is written
    try:
        r = run_cli_with("sender", "compress", str(made / "in.txt"), "-", "--preset", "tiny", "-q",
                         "--stats-json", str(stats_json), stdout=write_end)
    finally:
        os.close(write_end)
    expect_error(r, "alice: error: standard output was closed by its reader (broken pipe); stopped", tmp_path, [])


@pytest.mark.parametrize("length", [255, 249])
def test_the_longest_names_the_file_system_takes_are_outputs(tmp_path, made, length):
    """Round seven: the temporary file beside an output, `.NAME.XXXXXXXX.partial`, is too long for a
    name near the file system's 255 bytes, so such outputs were refused ("File name too long"). The
    temporary name now falls back to a hash, and nothing of it is left behind."""
    mrs, back = tmp_path / ("c" * (length - 4) + ".mrs"), tmp_path / ("b" * (length - 4) + ".txt")
    r = run_cli("sender", "compress", str(made / "in.txt"), str(mrs), "--preset", "tiny", "-q")
    assert r.returncode == 0, r.stderr.decode()
    assert mrs.read_bytes() == (made / "c.mrs").read_bytes()
    r = run_cli("receiver", "decompress", str(mrs), str(back), "-q")
    assert r.returncode == 0, r.stderr.decode()
    assert back.read_bytes() == TEXT
    assert leftovers(tmp_path) == sorted([back.name, mrs.name])


def test_stats_json_problems_name_stats_json_and_a_link_loop_is_named(cli, tmp_path, made):
    """Round seven: a --stats-json folder, or one in a missing folder, was called the "output", and
    an output folder in a loop of symbolic links was said not to exist (create it first)."""
    compress = ("sender", "compress", str(made / "in.txt"), str(tmp_path / "c.mrs"), "--preset", "tiny")
    (tmp_path / "d").mkdir()
    r = cli(*compress, "--stats-json", str(tmp_path / "d"))
    expect_error(r, f"alice: error: --stats-json {str(tmp_path / 'd')!r} is a folder; give a file name",
                 tmp_path, ["d"])
    r = cli(*compress, "--stats-json", str(tmp_path / "no" / "s.json"))
    expect_error(r, f"alice: error: --stats-json folder {str(tmp_path / 'no')!r} does not exist; create it first",
                 tmp_path, ["d"])
    (tmp_path / "loopd").symlink_to("loopd")
    r = cli("sender", "compress", str(made / "in.txt"), str(tmp_path / "loopd" / "out.mrs"), "--preset", "tiny")
    expect_error(r, f"alice: error: output folder {str(tmp_path / 'loopd')!r} cannot be used: Too many levels of "
                    f"symbolic links", tmp_path, ["d", "loopd"])


def test_a_fifo_nobody_reads_yet_is_named_while_it_waits(tmp_path, made):
    """Round eight: with a FIFO as the output and no reader yet, the work finished and then the
    open waited for a reader without a word, which looks like a hang. It still waits (a reader
    may come, as with `> fifo` in a shell), and says so; the reader then gets the whole file."""
    fifo = tmp_path / "p"
    os.mkfifo(fifo)
    alice = subprocess.Popen([sys.executable, "-m", "sender", "compress", str(made / "in.txt"), str(fifo),
                              "--preset", "tiny", "-q"], cwd=ROOT, env=child_env(), stderr=subprocess.PIPE)
    ready, _, _ = select.select([alice.stderr], [], [], 120)     # never wait on a line that does not come
    if not ready:
        alice.kill()
        alice.wait()
        pytest.fail("alice said nothing while she waited for a reader of the FIFO")
    line = alice.stderr.readline().decode()
    assert line == f"alice: waiting for a reader of output {str(fifo)!r}, a FIFO (Ctrl-C to stop)\n"

    def release():                           # never read forever: an Alice who died or hangs is ended,
        alice.kill()                         # and a reader still opening the FIFO is let through
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    watchdog = threading.Timer(120, release)
    watchdog.start()
    try:
        with open(fifo, "rb") as reader:
            blob = reader.read()
    finally:
        watchdog.cancel()
    assert alice.wait(timeout=60) == 0 and alice.stderr.read() == b""
    # the whole file: byte for byte what the same command writes to a regular file, made's c.mrs,
    # which decodes to TEXT (test_decompress_refuses_an_existing_output_unless_force and others)
    assert blob == (made / "c.mrs").read_bytes()
