"""Files as gzip and zstd treat them: read whole (to a limit), write all-or-nothing, never clobber.

An output appears under its name only when it is complete (temp file beside it, fsync,
rename), gets the mode the umask gives a new file (never more open than the input file's, so a
private file stays private), and replaces an existing file only when the user said --force.
Every OS error becomes one StorageError line that names the path and what to do; a failed
write leaves no temporary file behind. Torch-free.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import stat
import sys
from contextlib import contextmanager
from typing import IO, Callable

from ..core.errors import MarslinkError, UsageError

STDIO = "-"                      # the path that means stdin / stdout
NOT_TO_A_TERMINAL = ("compressed data not written to a terminal; redirect it (> FILE), give an output file name, "
                     "or add --force")
NEW_FILE_MODE = 0o666            # before the umask, as open(2) and gzip create files

# errno -> (what went wrong, what to do about it), for every write a user may hit (and cli.run_main's net)
WHY = {
    errno.ENOSPC: ("no space left on device", "free some space or choose another folder"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or choose another folder"),
    errno.EROFS: ("read-only file system", "choose a writable folder"),
    errno.EACCES: ("permission denied", "choose a folder you can write to"),
    errno.EPERM: ("operation not permitted", "choose a folder you can write to"),
    errno.EFBIG: ("file too large for this file system, or for the shell's file-size limit (ulimit -f)",
                  "choose another folder or raise the limit"),
    errno.ENOMEM: ("out of memory", "close other programs, choose a smaller preset or fewer --jobs, or raise the "
                                    "memory limit (ulimit -v)"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) or use fewer --jobs"),
    errno.ENFILE: ("too many open files on this system", "close other programs"),
    errno.ENAMETOOLONG: ("file name too long for this file system", "choose a shorter name or a shorter path"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENOTDIR: ("a part of the path is not a folder", "check the path"),
    errno.EIO: ("input/output error", "check the device"),
    errno.EEXIST: ("a file of that name is in the way of a folder", "choose another path, or move the file"),
}


def absolute(path: str) -> str:
    """`path` from the root, `..` left for the kernel to resolve: os.path.abspath removes
    `link/..` as text, which names another folder than the kernel's when `link` is a symbolic link."""
    return path if os.path.isabs(path) else os.path.join(os.getcwd(), path)


class StorageError(MarslinkError):
    """The operating system refused a write (full disk, read-only, permissions, /proc)."""


def storage_error(what: str, path: str, e: OSError, then: str = "run again") -> StorageError:
    """One line: `cannot write <what> '<path>': <reason>; <advice>, then <then>`."""
    reason, advice = WHY.get(e.errno, (e.strerror or e.__class__.__name__, "check the path"))
    return StorageError(f"cannot write {what}{path!r}: {reason}; {advice}, then {then}")


READ_BLOCK = 1 << 20             # bytes per read: memory grows only with what really arrives


def read_input(path: str, limit: int, magic: bytes | None = None) -> bytes:
    """The whole input, but never more than `limit` bytes: a bigger regular file is refused by
    its size, an endless device (/dev/zero) at once, and anything else (stdin, a pipe) after
    `limit` + 1 bytes. With `magic`, reading stops after the first block if the input does not
    start with it (its parser refuses it)."""
    name = "standard input" if path == STDIO else repr(path)
    if path != STDIO and _socket(path):
        raise UsageError(f"input {path!r} is a socket, not a file; give a file, or pipe the data in ('-')")
    try:
        f = getattr(sys.stdin, "buffer", None) if path == STDIO else open(path, "rb")
    except FileNotFoundError:
        raise UsageError(f"input file {path!r} not found; check the path") from None
    except IsADirectoryError:
        raise UsageError(f"input {path!r} is a folder, not a file") from None
    except PermissionError:
        raise UsageError(f"input file {path!r} is not readable (permission denied)") from None
    except OSError as e:
        raise UsageError(f"cannot read {path!r}: {e.strerror}") from None
    if f is None:                                                # python started with stdin closed
        raise UsageError("standard input is closed; give an input file, or pipe data in")
    if path == STDIO and magic is not None and f.isatty():      # as gzip -d: nobody types compressed data
        raise UsageError("compressed data not read from a terminal; pipe a file in (< FILE) or give its name")
    too_big = UsageError(f"input {name} is larger than {limit:,} bytes, the most marslink takes in one "
                         f"file; split it into smaller files")
    try:
        endless = endless_device(f.fileno()) if magic is None else None   # with magic: its first block is refused
        if endless:
            what = "never ends" if path == endless else f"is {endless}, which never ends"
            raise UsageError(f"input {name} {what}; give a file, or pipe a finite part of it in "
                             f"(e.g. head -c 1M {endless} | ...)")
        if path != STDIO and os.path.isfile(path) and os.fstat(f.fileno()).st_size > limit:
            raise too_big
        blocks, size = [], 0
        while size <= limit:
            block = f.read(min(READ_BLOCK, limit + 1 - size))
            if not block:
                break
            blocks.append(block)
            size += len(block)
            if magic is not None and len(blocks) == 1 and not block.startswith(magic[:len(block)]):
                break
        if size > limit:
            raise too_big
        return b"".join(blocks)
    except OSError as e:
        raise UsageError(f"cannot read {name}: {e.strerror or e}") from None
    finally:
        if path != STDIO:
            f.close()


def read_head(path: str, n: int) -> bytes:
    """The first `n` bytes of `path`, never more: a big file or an endless pipe costs only what
    is used (the demo's and the lecture's --bytes); an endless device is refused, as read_input
    refuses it."""
    try:
        with open(path, "rb") as f:
            endless = endless_device(f.fileno())
            if endless:
                what = "never ends" if path == endless else f"is {endless}, which never ends"
                raise UsageError(f"input {path!r} {what}; give a file, or a finite part of it "
                                 f"(e.g. head -c 1M {endless} > part.bin)")
            blocks, size = [], 0
            while size < n:
                block = f.read(min(n - size, READ_BLOCK))
                if not block:
                    break
                blocks.append(block)
                size += len(block)
            return b"".join(blocks)
    except OSError as e:
        raise UsageError(f"cannot read {path!r}: {e.strerror or e}") from None


def drop_stdout() -> None:
    """Point stdout at /dev/null once its reader has gone (`| head`), so that the rest of the run
    and Python's final flush write nowhere instead of raising BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, AttributeError, ValueError):
        pass


_UNDECODED = re.compile(r"(?<!\\)\\udc([89a-f][0-9a-f])|([\udc80-\udcff])")   # a byte Python could not decode


def _as_bytes(match: re.Match) -> str:
    return "\\x" + (match.group(1) or f"{ord(match.group(2)) - 0xDC00:02x}")


def shown(text: str) -> str:
    """`text` with every byte Python could not decode (a file name that is not text in the
    locale's encoding: Python holds each such byte as a surrogate, and repr() writes it as
    '\\udcNN') written as \\xNN: a name a user can find, and text any library can draw."""
    return _UNDECODED.sub(_as_bytes, text)


def escape_what_cannot_be_shown() -> None:
    """Where standard output's encoding cannot show a character (PYTHONIOENCODING=ascii, a C
    locale), write it as \\xNN rather than fail with UnicodeEncodeError, say at the last line of
    a run that worked. Python's stdout is 'strict' by default; its stderr already escapes."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):      # closed, replaced, or not a text stream
            pass


ENDLESS_DEVICES = ("/dev/zero", "/dev/urandom", "/dev/random", "/dev/full")   # read: bytes forever


def endless_device(fd: int) -> str | None:
    """The name of the endless device `fd` reads (by device number, so /dev/stdin and any alias
    count too), or None: it would otherwise fill the input limit, a GiB of memory, to be refused."""
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode):
        return None
    for name in ENDLESS_DEVICES:
        try:
            if os.stat(name).st_rdev == st.st_rdev:
                return name
        except OSError:
            continue
    return None


def _device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


_DESCRIPTORS = re.compile(r"/proc/(self|thread-self|\d+)(/task/\d+)?/fd")   # a process's open files


def _descriptor_entry(path: str) -> tuple[str, str] | None:
    """(the /proc/PID/fd folder, the entry's name) that `path` leads to, or None."""
    name = os.path.abspath(path)
    for _ in range(8):                    # links to links: /dev/stdout -> /proc/self/fd/1
        folder = os.path.realpath(os.path.dirname(name))
        if _DESCRIPTORS.fullmatch(folder):
            return folder, os.path.basename(name)
        if not os.path.islink(name):
            return None
        name = os.path.join(os.path.dirname(name), os.readlink(name))
    return None


def _descriptor(path: str) -> bool:
    """`path` names a file this process already has open (/dev/stdout, /dev/fd/1, /proc/self/fd/1),
    whatever that file is. It is a link in /dev or /proc: replacing it would replace the link,
    the system's /dev/stdout, not write the file; so it is written through, as a shell writes
    `> /dev/stdout`."""
    return _descriptor_entry(path) is not None


def _descriptor_fd(path: str) -> int | None:
    """The number of this process's open file that `path` names (/dev/stdout: 1), or None."""
    entry = _descriptor_entry(path)
    if entry is None:
        return None
    folder, fd = entry
    mine = folder.split("/")[2] in ("self", "thread-self", str(os.getpid()))
    return int(fd) if fd.isdigit() and mine else None


def _socket(path: str) -> bool:
    """`path` is a Unix socket (open(2) cannot read one: ENXIO)."""
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _check_open_file(fd: int, subject: str, input_path: str | None, binary: bool, force: bool) -> None:
    """An output that is a file this process already holds open (stdout, /dev/fd/N): open for
    writing, not the input, and (binary, without --force) not a terminal. Checked now, not
    after the work that would fail to land there."""
    try:
        writable = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY
        held = os.fstat(fd)
    except OSError:
        raise UsageError(f"{subject} is not open; give a file name") from None
    if not writable:
        raise UsageError(f"{subject} is open for reading only; redirect it to a file (> FILE) or give a file name")
    if stat.S_ISREG(held.st_mode) and _is_input(held, input_path):
        raise UsageError(f"{subject} is the input file; writing it would overwrite the input, so choose "
                         f"another output")
    if _same_file_or_pipe(held, 2):
        raise UsageError(f"{subject} is also standard error (2>&1, or /dev/stderr), where the messages go, so they "
                         f"would be written into it; send the messages elsewhere (2> FILE) or give a file name")
    if binary and not force and os.isatty(fd):
        raise UsageError(NOT_TO_A_TERMINAL)


def _is_input(held: os.stat_result, input_path: str | None) -> bool:
    """The file `held` is the input: the named input file, or the file standard input reads
    (`< notes.txt`, `<> notes.txt`)."""
    try:
        mine = os.fstat(0) if input_path == STDIO else os.stat(input_path) if input_path is not None else None
    except OSError:
        return False
    return mine is not None and stat.S_ISREG(mine.st_mode) and (mine.st_dev, mine.st_ino) == (held.st_dev, held.st_ino)


def _same_file_or_pipe(held: os.stat_result, fd: int) -> bool:
    """`held` is the regular file or pipe open as descriptor `fd`: what is written to either lands
    in the other's bytes. (A device such as /dev/null may take both: `> /dev/null 2>&1`.)"""
    try:
        other = os.fstat(fd)
    except OSError:
        return False
    return ((stat.S_ISREG(held.st_mode) or stat.S_ISFIFO(held.st_mode))
            and (other.st_dev, other.st_ino) == (held.st_dev, held.st_ino))


def _check_device(path: str, label: str, binary: bool, force: bool) -> None:
    """A character device as output (/dev/null, /dev/tty): it must open for writing now, and
    (binary, without --force) not be a terminal."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        raise UsageError(f"cannot write {label} {path!r}: {e.strerror}; give a file name") from None
    try:
        if binary and not force and os.isatty(fd):
            raise UsageError(NOT_TO_A_TERMINAL)
    finally:
        os.close(fd)


def _stream_target(path: str) -> bool:
    """`path` is a character device, a FIFO (/dev/null, a named pipe) or an open file's name
    (`_descriptor`): written in place, as a shell redirection would, never replaced by a regular file."""
    if _descriptor(path):
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def check_output(path: str, input_path: str | None = None, force: bool = False, binary: bool = False,
                 stream_ok: bool = True, label: str = "output") -> None:
    """Fail before any work if the output cannot be written, rather than after an hour of it:
    the folder must exist and take a new file (probed for real: /proc, read-only mounts and
    permissions all answer only when asked), and an existing file needs --force. Standard
    output, or a file this process holds open (/dev/stdout, /dev/fd/N), must be open for
    writing, not the input, and (`binary`, as gzip) not a terminal unless --force. A device or
    FIFO is written in place (`stream_ok`) or refused, never replaced. `label` names the
    output in the messages (--stats-json)."""
    if path == STDIO:
        if sys.stdout is None:                                   # python started with stdout closed
            raise UsageError("standard output is closed; give an output file name instead of '-'")
        try:
            fd = sys.stdout.fileno()
        except (OSError, ValueError, AttributeError):                # replaced by an object in memory
            fd = None
        if fd is not None:
            _check_open_file(fd, "standard output", input_path, binary, force)
        elif binary and not force and sys.stdout.isatty():
            raise UsageError(NOT_TO_A_TERMINAL)
        return
    if not path or path.endswith(os.sep):
        raise UsageError(f"{label} {path!r} is not a file name; give one" + (", not only a folder" if path else ""))
    if _descriptor(path):
        if not stream_ok:
            raise UsageError(f"{label} {path!r} is an open file's name (standard output?), not a file; "
                             f"give a file name")
        fd = _descriptor_fd(path)
        if fd is None or not os.path.exists(path):
            raise UsageError(f"{label} {path!r} names no file this process holds open (was it closed?); "
                             f"give a file name")
        _check_open_file(fd, f"{label} {path!r}", input_path, binary, force)
        return
    folder = os.path.dirname(absolute(path))
    if not os.path.isdir(folder):
        try:
            os.stat(folder)
            why = "is not a folder"
        except OSError as e:
            why = "does not exist; create it first" if e.errno == errno.ENOENT else f"cannot be used: {e.strerror}"
        raise UsageError(f"{label} folder {folder!r} {why}")
    if os.path.isdir(path):
        raise UsageError(f"{label} {path!r} is a folder; give a file name")
    if _mount_point(path):                  # a file bind-mounted there: rename(2) over it fails with EBUSY
        raise UsageError(f"{label} {path!r} is a mount point (a file is mounted on it), so it cannot be replaced; "
                         f"choose another name")
    if os.path.lexists(path) and os.path.exists(path) and not os.path.isfile(path):
        if stream_ok and _stream_target(path):
            if _device(path):
                _check_device(path, label, binary, force)
            return
        raise UsageError(f"{label} {path!r} is not a regular file (a device, FIFO or socket); give a file name")
    if ((input_path not in (None, STDIO) and os.path.exists(path) and os.path.samefile(path, input_path))
            or (input_path == STDIO and _same_as_fd(path, 0))):          # `- notes.txt < notes.txt`
        raise UsageError("output would overwrite the input; choose another output name")
    if os.path.lexists(path) and not force:
        raise _exists(path)
    fd, tmp = _create_temp(path, f"{label} " if label != "output" else "")
    os.close(fd)
    _remove_probe(tmp, folder)


def _remove_probe(tmp: str, folder: str) -> None:
    """Remove a probe file; a folder that takes files but never lets them go (append-only,
    chattr +a) would keep every temporary file and refuse every rename: say so."""
    try:
        os.unlink(tmp)
    except OSError as e:
        raise UsageError(f"folder {folder!r} takes new files but does not let them be removed or renamed "
                         f"({e.strerror}: append-only?), so no output can be put in place there; choose another "
                         f"folder (and remove {os.path.basename(tmp)!r} from it)") from None


def _mount_point(path: str) -> bool:
    """Something is mounted on `path`: a file bind-mounted from the same file system shows in no
    stat(2) field, only in the mount table (/proc/self/mountinfo, where there is one)."""
    if os.path.ismount(path):
        return True
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as table:
            points = [line.split()[4] for line in table]
    except (OSError, IndexError):
        return False
    real = os.path.realpath(path)
    return any(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), p) == real for p in points)


def _create_temp(path: str, what: str = "", then: str = "run again",
                 mode: int = NEW_FILE_MODE) -> tuple[int, str]:
    """A new, exclusive temporary file beside `path` (same file system, so the rename is atomic),
    created with `mode` so that the umask decides the final mode."""
    folder, name = os.path.split(absolute(path))
    tmp = os.path.join(folder, _beside(folder, name, f".{secrets.token_hex(4)}.partial"))
    try:
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), tmp
    except OSError as e:
        if e.errno == errno.ENOENT and os.path.isdir(folder):     # /proc, /sys: no new files, ever
            raise StorageError(f"cannot write {what}{path!r}: its folder takes no new files (a virtual file system "
                               f"such as /proc?); choose a folder on a disk, then {then}") from None
        raise storage_error(what, path, e, then) from None


def _beside(folder: str, name: str, suffix: str, hidden: bool = True) -> str:
    """The name of a file beside `name` (a temporary file, a lock, a spool): `.NAME` + suffix, or
    where that passes the file system's longest name (any name the user may give an output),
    a hash of NAME in its place, the same for the same name."""
    try:
        longest = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        longest = 255
    dot = "." if hidden else ""
    if len(os.fsencode(dot + name + suffix)) <= longest:
        return dot + name + suffix
    return f".marslink-{hashlib.sha256(os.fsencode(name)).hexdigest()[:16]}{suffix}"


def write_atomic(path: str, data: bytes | Callable[[IO[bytes]], None], force: bool = False, what: str = "",
                 then: str = "run again", before: Callable[[], None] | None = None, mode: int = NEW_FILE_MODE) -> None:
    """Write `data` (or whatever `data(file)` writes) to a temporary file beside `path`, fsync,
    then move it into place: never a half-written output, whatever kills us. Without `force`,
    an output that appeared meanwhile is not replaced. Outputs and checkpoints both use it.
    `before` runs once the file is safely written and before it appears (its failures are its
    own, and leave no file): an output stream before its report. A stream (`_streamed`) cannot
    wait unseen: no `before`."""
    if before is not None and _streamed(path):
        raise ValueError("a stream cannot wait for what goes before it: write_with_stats orders them")
    if path == STDIO:
        if sys.stdout is None:
            raise UsageError("standard output is closed; give an output file name instead of '-'")
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise storage_error(what, "<standard output>", e) from None
        return
    if _stream_target(path):
        try:       # an open file's name is appended to, after what this run wrote to it already
            with open(path, "ab") if _descriptor(path) else _open_in_place(path, what) as f:
                data(f) if callable(data) else f.write(data)
        except OSError as e:
            raise storage_error(what, path, e) from None
        return
    with staged(path, data, what, then, mode) as put:
        if before is not None:
            before()
        put(force)


@contextmanager
def staged(path: str, data: bytes | Callable[[IO[bytes]], None], what: str = "", then: str = "run again",
           mode: int = NEW_FILE_MODE):
    """`data` written and fsynced to a temporary file beside `path`, unseen; the block gets
    `put(force)`, which moves it into place. Not put, it is removed on the way out. Two files
    that must appear together are both staged before either is put."""
    fd, tmp = _create_temp(path, what, then, mode)
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                data(f) if callable(data) else f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except (OSError, RuntimeError) as e:
            cause = _os_error(e)
            if cause is None:
                raise
            raise storage_error(what, path, cause, then) from None

        def put(force: bool) -> None:
            try:
                _move_into_place(tmp, path, force)
            except OSError as e:
                raise storage_error(what, path, e, then) from None
        yield put
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


SPEAKER = "marslink"            # who says so on stderr: cli.run_main sets the command's name


def _open_in_place(path: str, what: str) -> IO[bytes]:
    """A device or FIFO, opened to be written. A FIFO that nobody reads yet waits for a reader,
    as `> fifo` does in a shell, but after the work, when a silent wait looks like a hang: say
    what it waits for. One that has a reader keeps the descriptor that found it (closing it would
    end that reader's input)."""
    try:
        fifo = stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        fifo = False                    # open() names the problem
    if fifo:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno != errno.ENXIO:  # ENXIO: no reader yet, so a blocking open would wait for one
                raise
            print(f"{SPEAKER}: waiting for a reader of {what or 'output '}{path!r}, a FIFO (Ctrl-C to stop)",
                  file=sys.stderr, flush=True)
        else:
            os.set_blocking(fd, True)
            return os.fdopen(fd, "wb")
    return open(path, "wb")


def _os_error(e: BaseException) -> OSError | None:
    """The OSError behind `e`: torch.save reports a failed write as a RuntimeError from its zip
    writer, raised while handling the OSError."""
    while e is not None and not isinstance(e, OSError):
        e = e.__cause__ or e.__context__
    return e


def publish(tmp: str, path: str, force: bool) -> None:
    """Put the finished file `tmp` in place as `path` (same folder). Without `force` a file that
    appeared at `path` meanwhile is never replaced: UsageError, and `tmp` stays."""
    _move_into_place(tmp, path, force)
    if os.path.lexists(tmp) and os.path.lexists(path) and os.path.samefile(tmp, path):
        os.unlink(tmp)          # the hard link is in place: the temporary name goes


def _move_into_place(tmp: str, path: str, force: bool) -> None:
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)          # atomic and never clobbers: fails if `path` exists
    except FileExistsError:
        raise _exists(path) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if os.path.lexists(path):   # a file system without hard links: check, then rename
            raise _exists(path) from None
        os.replace(tmp, path)


@contextmanager
def locked(path: str, busy: str, what: str = "lock file "):
    """Hold an exclusive lock on the file `path` (created, and removed on the way out) for the
    block: one process at a time per output or per stream. Another holder means UsageError(busy)
    at once, never a wait. Removing a lock file races with a process that opened it just before:
    so the lock counts only if `path` still names the file we locked. A symbolic link planted
    there is refused, never followed (it would create or lock a file elsewhere)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UsageError(f"{what}{path!r} is a symbolic link, which marslink never follows; remove it "
                                 f"(nothing else has such a name), then run again") from None
            raise storage_error(what, path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(busy) from None
        try:
            if os.lstat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)             # its holder removed it as we locked it: take the new one
    try:
        yield
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)


def output_lock(path: str):
    """One receiver per output: `with output_lock(out):` around everything that writes it."""
    folder, name = os.path.split(absolute(path))
    return locked(os.path.join(folder, _beside(folder, name, ".lock")), f"another bob is receiving into {path!r}; "
                  f"give this one another --out")


def spool_folder(out_path: str) -> str:
    """Where Bob keeps a stream's partial state while it arrives: beside the output, named after it."""
    folder, name = os.path.split(absolute(out_path))
    return os.path.join(folder, _beside(folder, name, ".partial", hidden=False))


def check_folder(folder: str, what: str) -> None:
    """Fail before any work if `folder` (created if missing) cannot take a new file: probed for
    real, as check_output does, since /proc, read-only mounts and permissions answer only when asked."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise storage_error(what, folder, e) from None
    tmp = os.path.join(folder, f".probe.{secrets.token_hex(4)}.partial")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        if e.errno == errno.ENOENT:      # /proc, /sys: the folder is there and takes no new file
            raise StorageError(f"cannot write {what}{folder!r}: it takes no new files; choose a folder on a disk, "
                               f"then run again") from None
        raise storage_error(what, folder, e) from None
    os.close(fd)
    _remove_probe(tmp, folder)


def _exists(path: str) -> UsageError:
    return UsageError(f"output {path!r} already exists; add --force to replace it, or choose another name")


def same_file(a: str, b: str) -> bool:
    """`a` and `b` name one file: one path once links are resolved, or one inode ('-' is stdout,
    and /dev/stdout or a file redirected to it is the same file)."""
    if STDIO in (a, b):
        other = b if a == STDIO else a
        try:
            mine, out = os.stat(other), os.fstat(sys.stdout.fileno())
        except (OSError, AttributeError, ValueError):      # no such file, or stdout closed
            return other == STDIO
        return other == STDIO or (mine.st_dev, mine.st_ino) == (out.st_dev, out.st_ino)
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_stats(path: str | None, input_path: str | None = None, output_path: str | None = None) -> None:
    """--stats-json: writable, and neither the input nor the output (replaced on every run, so
    naming either would silently turn it into JSON)? Checked before the work, like the output."""
    if not path:
        return
    for what, other in (("input", None if input_path == STDIO else input_path), ("output", output_path)):
        if other is not None and same_file(path, other) and not _device(path):   # /dev/null twice is fine
            raise UsageError(f"--stats-json would overwrite the {what}; choose another name for the statistics")
    if input_path == STDIO and _same_as_fd(path, 0):                # the file piped in: `< notes.txt`
        raise UsageError("--stats-json would overwrite the input; choose another name for the statistics")
    check_output(path, force=True, label="--stats-json")


def _same_as_fd(path: str, fd: int) -> bool:
    """`path` is the regular file open as descriptor `fd` (stdin redirected from it)."""
    try:
        mine, held = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return stat.S_ISREG(held.st_mode) and (mine.st_dev, mine.st_ino) == (held.st_dev, held.st_ino)


def _report(stats: dict) -> bytes:
    return (json.dumps(stats, indent=2, sort_keys=True) + "\n").encode()


def write_stats(path: str | None, stats: dict, before: Callable[[], None] | None = None) -> None:
    """--stats-json: a report of the run, replaced on every run (like a log, not an output)."""
    if path:
        write_atomic(path, _report(stats), force=True, what="statistics ", before=before)


def output_mode(input_path: str) -> int:
    """The mode an output of `input_path` is created with (before the umask): never more open
    than the input file's, as gzip and xz keep a private file private; stdin's is NEW_FILE_MODE."""
    try:
        held = os.stat(input_path) if input_path != STDIO else None
    except OSError:
        held = None
    return NEW_FILE_MODE & held.st_mode if held is not None and stat.S_ISREG(held.st_mode) else NEW_FILE_MODE


def _streamed(path: str) -> bool:
    """Written as it goes, seen at once: standard output, a device, a FIFO, an open file's name."""
    return path == STDIO or _stream_target(path)


def write_with_stats(path: str, data: bytes, force: bool, stats_path: str | None, stats: dict,
                     mode: int = NEW_FILE_MODE) -> None:
    """The output and its report, both or neither, as far as streams allow. Two files are both
    written unseen, then the output is put in place (the step that may find its name taken) and
    the report after it. A report to a stream goes first, while the output file waits unseen. An
    output stream cannot wait: the report waits for it instead, so a failed stream leaves the
    previous report, not one of a run that failed. Two streams go output first."""
    if not stats_path:
        write_atomic(path, data, force, mode=mode)
    elif not _streamed(path) and not _streamed(stats_path):
        with staged(stats_path, _report(stats), "statistics ") as put_report:
            write_atomic(path, data, force, mode=mode)
            put_report(True)
    elif not _streamed(path):
        write_atomic(path, data, force, before=lambda: write_stats(stats_path, stats), mode=mode)
    elif not _streamed(stats_path):
        write_stats(stats_path, stats, before=lambda: write_atomic(path, data))
    else:
        write_atomic(path, data, force)
        write_stats(stats_path, stats)
