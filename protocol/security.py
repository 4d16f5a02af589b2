"""CurveZMQ for the marslink link: key files, socket options, an allow-list, and clear refusals.

With `LinkSettings(curve=CurveKeys...)` the link is encrypted and both ends are authenticated:

  Alice (DEALER)  CURVE client: her key pair plus Mars's public key (`CurveKeys.client`).
  Bob (ROUTER)    CURVE server: his key pair plus an allow-list folder of senders' public keys
                  (`CurveKeys.server`). Without a ZAP handler libzmq's CURVE admits *any*
                  client that knows the server key, so Bob always runs `ZapHandler`: a REP
                  socket on inproc://zeromq.zap.01 in Bob's own context, answered from the
                  link's poll loop (no thread). Only keys found in the folder are admitted;
                  the folder is re-read on every request, so a key can be added while Bob runs.

Both sides also watch their own socket's handshake events (`HandshakeWatch`, a socket
monitor) so a refusal is named at once instead of surfacing as a handshake timeout:

  Alice  gets a reason, which the link raises as AuthFailed: key not in Mars's allow-list,
         Mars needs encryption, Mars speaks plain text, or Mars keeps dropping our handshake
         (wrong server key; or a mechanism mismatch that Mars noticed first every time).
  Bob    logs each kind of refusal once (with the sender's key and address where known)
         and keeps waiting for a sender he does admit.

Key files are ZeroMQ certificates (`zmq.auth.create_certificates`): NAME.key holds the
public key, NAME.key_secret the secret one (mode 0600; refused if others can read it).

One command on each laptop (`bob listen --lan`): Mars keeps his key pair in his state folder
and prints, for Earth, his public key as text and a one-time code. Earth's key pair is derived
from the code and Mars's public key (`code_keys`), on both sides; Mars admits exactly that
public key. So the link is CURVE as above, with no key files to copy: a sender without the
code is refused like any unknown key, and a new `listen --lan` prints a new code.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import zmq
import zmq.auth
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
REPEATED_FAILURES = 5    # NO_DETAIL handshake failures in a row before Alice gives up on them
_HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                     | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)

LogFn = Optional[Callable[[str], None]]


class KeyFileError(ValueError):
    """A key file or allow-list folder is missing, unreadable, malformed or too widely readable."""


# -- key files ------------------------------------------------------------------------------


def generate(folder: str, name: str) -> tuple[str, str]:
    """Write NAME.key (public, 0644) and NAME.key_secret (secret, 0600) into folder; never overwrite."""
    if not KEY_NAME.fullmatch(name):
        bad = next((c for i, c in enumerate(name)
                    if not (c.isascii() and (c.isalnum() or (i and c in "._-")))), None)
        what = f"has {bad!r}, which is not allowed there" if bad else "is empty" if not name else "is too long"
        raise KeyFileError(f"key name {name!r} {what}: a name begins with an ASCII letter or digit, then ASCII "
                           f"letters, digits, '.', '_' or '-' (at most 64 in all)")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    public, secret = (os.path.join(folder, name + ext) for ext in (".key", ".key_secret"))
    for path in (public, secret):
        if os.path.lexists(path):        # a link too, even one to nowhere: a key is never written through it
            what = " (a symbolic link, which keygen never writes through)" if os.path.islink(path) else ""
            raise KeyFileError(f"{path} already exists{what}; choose another name or remove the old pair first")
    draft = tempfile.mkdtemp(prefix=".keygen-", dir=folder)     # mode 0700: the secret is never exposed
    try:
        zmq.auth.create_certificates(draft, name)
        made = []
        try:
            for path, mode in ((public, 0o644), (secret, 0o600)):
                with open(os.path.join(draft, os.path.basename(path)), "rb") as f:
                    text = f.read()
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)   # never through a link
                made.append(path)
                with os.fdopen(fd, "wb") as f:
                    f.write(text)
                os.chmod(path, mode)     # whatever the umask
        except BaseException:            # both files or neither
            for path in made:
                os.unlink(path)
            raise
    finally:
        shutil.rmtree(draft, ignore_errors=True)
    return public, secret


def _read(path: str, what: str) -> tuple[bytes, Optional[bytes]]:
    if os.path.isdir(path):
        raise KeyFileError(f"{what} {path!r} is a folder; pass the key file in it that 'keygen' made "
                           f"(NAME.key_secret for a secret key, NAME.key for a public one)")
    if os.path.exists(path) and not os.path.isfile(path):   # a FIFO would block the open forever
        raise KeyFileError(f"{what} {path!r} is not a regular file (a FIFO or device?); "
                           f"keys are files made by 'keygen'")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError:
        raise KeyFileError(f"{what} {path!r} not found or unreadable") from None
    except ValueError:
        raise KeyFileError(f"{what} {path!r} holds no public key; is it a ZeroMQ certificate "
                           f"made by 'keygen'?") from None
    for key in (public, secret):
        if key is not None and not _valid(key):
            raise KeyFileError(f"{what} {path!r} holds a malformed key (expected 40 Z85 characters)")
    return public, secret


def _valid(key: bytes) -> bool:
    try:
        return len(key) == 40 and len(z85.decode(key)) == 32
    except Exception:
        return False


def load_secret(path: str) -> tuple[bytes, bytes]:
    """Our (public, secret) key pair from a NAME.key_secret file that only we can read."""
    public, secret = _read(path, "secret key file")
    if secret is None:
        raise KeyFileError(f"{path!r} holds no secret key; pass the NAME.key_secret file, not NAME.key")
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"secret key file {path!r} is accessible by other users "
                           f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}")
    return public, secret


def load_public(path: str) -> bytes:
    """A peer's public key from its NAME.key file; a secret key there is refused, loudly: a
    secret outside its owner's --curve-secret file has leaked, and only a new pair helps."""
    public, secret = _read(path, "public key file")
    if secret is not None:
        readable = " (readable by other users)" if os.stat(path).st_mode & (stat.S_IRGRP | stat.S_IROTH) else ""
        raise KeyFileError(f"{path!r} holds a secret key{readable} where only a public key belongs; treat that "
                           f"secret as leaked: make a new pair with 'keygen', then hand out only NAME.key")
    return public


def allowed_keys(folder: str, strict: bool = False) -> dict[bytes, str]:
    """Public keys (Z85) in folder/*.key -> file name. strict: a bad file is an error, not skipped."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise KeyFileError(f"allow-list folder {folder!r} is a file; --allow takes a folder of the senders' "
                           f"public keys (NAME.key)")
    if not os.path.isdir(folder):
        raise KeyFileError(f"allow-list folder {folder!r} does not exist")
    keys = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(folder), "*.key"))):
        try:
            keys[load_public(path)] = os.path.basename(path)
        except KeyFileError:
            if strict:
                raise
    return keys


@dataclass(frozen=True)
class CurveKeys:
    """CurveZMQ material for one end. Build with CurveKeys.client(...) or CurveKeys.server(...)."""

    public_key: bytes                            # ours, Z85
    secret_key: bytes = field(repr=False)        # ours, Z85
    server_key: Optional[bytes] = None           # Alice: Mars's public key
    allow_dir: Optional[str] = None              # Bob: folder of admitted senders' public keys
    public_file: Optional[str] = None            # our public key file, named in messages
    allow_keys: frozenset = frozenset()          # Bob: admitted public keys beside the folder's (Z85)
    refused_hint: Optional[str] = None           # Alice: what to say when Mars refuses our key

    @classmethod
    def client(cls, secret_file: str, server_key_file: str) -> "CurveKeys":
        public, secret = load_secret(secret_file)
        base = secret_file[:-len("_secret")] if secret_file.endswith(".key_secret") else None
        return cls(public, secret, server_key=load_public(server_key_file), public_file=base)

    @classmethod
    def server(cls, secret_file: str, allow_dir: str) -> "CurveKeys":
        public, secret = load_secret(secret_file)
        if not allowed_keys(allow_dir, strict=True):
            raise KeyFileError(f"allow-list folder {allow_dir!r} holds no public keys (*.key); "
                               f"copy each sender's NAME.key there")
        return cls(public, secret, allow_dir=allow_dir)

    @classmethod
    def lan_server(cls, key_dir: str, code: str) -> "CurveKeys":
        """Mars for `listen --lan`: his key pair from key_dir (made there the first time), and
        admitting only the Earth whose key the one-time `code` gives."""
        public, secret = lan_key_pair(key_dir)
        earth, _ = code_keys(code, public)
        return cls(public, secret, allow_keys=frozenset({earth}))

    @classmethod
    def from_code(cls, server_key_text: str, code: str) -> "CurveKeys":
        """Earth for the line `listen --lan` printed: Mars's public key as text plus the code."""
        server = key_from_text(server_key_text)
        public, secret = code_keys(code, server)
        return cls(public, secret, server_key=server,
                   refused_hint="the --code is not the one Mars printed for this listen "
                                "(each 'bob listen --lan' prints a new one); type the line Mars prints now")

    def admitted(self) -> dict[bytes, str]:
        """Bob: every public key he admits -> a name for it (the allow-list folder is re-read)."""
        keys = dict.fromkeys(self.allow_keys, "the one-time code")
        if self.allow_dir is not None:
            keys.update(allowed_keys(self.allow_dir))
        return keys

    def apply(self, sock: zmq.Socket, server: bool) -> None:
        """Set the socket options; before bind/connect."""
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public_key)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret_key)
        if server:
            if self.allow_dir is None and not self.allow_keys:
                raise ValueError("a CURVE server needs an allow-list folder (allow_dir)")
            sock.setsockopt(zmq.CURVE_SERVER, 1)
        else:
            if self.server_key is None:
                raise ValueError("a CURVE client needs the server's public key (server_key)")
            sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_key)


# -- one command on each laptop: Mars's key pair in his state folder, a one-time code for Earth --

LAN_KEY_NAME = "mars"
CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"   # no i, l, o, 0, 1: nothing to misread
CODE_GROUPS, CODE_GROUP = 4, 4                      # 16 characters, about 79 bits


def lan_key_pair(key_dir: str) -> tuple[bytes, bytes]:
    """Mars's (public, secret) key pair in key_dir, created there the first time."""
    secret_file = os.path.join(key_dir, LAN_KEY_NAME + ".key_secret")
    public_file = os.path.join(key_dir, LAN_KEY_NAME + ".key")
    if not os.path.exists(secret_file):
        if os.path.exists(public_file):       # half a pair: a new one would need its name
            raise KeyFileError(f"{public_file} has no secret key beside it ({secret_file} is missing); "
                               f"remove {public_file}, and a new pair is made")
        generate(key_dir, LAN_KEY_NAME)
    return load_secret(secret_file)


def new_code() -> str:
    """A fresh one-time code, e.g. 'k7qm-x2pa-9fde-hw3t'."""
    return "-".join("".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_GROUP)) for _ in range(CODE_GROUPS))


def code_keys(code: str, server_key: bytes) -> tuple[bytes, bytes]:
    """Earth's (public, secret) CURVE key pair from a one-time code and Mars's public key: both
    sides compute it, so Mars can admit exactly this Earth. A guess costs one refused handshake,
    and there are 31**16 codes."""
    normal = code.replace("-", "").lower()
    if len(normal) != CODE_GROUPS * CODE_GROUP or normal.strip(CODE_ALPHABET):
        raise KeyFileError(f"--code {code[:40]!r} is not a code 'bob listen --lan' prints "
                           f"({CODE_GROUPS} groups of {CODE_GROUP} letters and digits, e.g. k7qm-x2pa-9fde-hw3t)")
    seed = hashlib.sha256(b"marslink lan code\0" + server_key + b"\0" + normal.encode()).digest()
    secret = z85.encode(seed)
    return zmq.curve_public(secret), secret


def key_from_text(text: str) -> bytes:
    """A public key given as text (40 Z85 characters, as in a NAME.key file)."""
    key = text.strip().encode("ascii", "replace")
    if not _valid(key):
        raise KeyFileError(f"--server-key-text {text[:60]!r} is not a public key (40 Z85 characters, "
                           f"as 'bob listen --lan' prints it)")
    return key


def _prefix(key: bytes) -> str:
    return key[:12].decode("ascii", "replace") + "..."


class Refusals:
    """Bob's record of connections turned away: counted, the latest kept, each kind logged once
    (a refused client reconnects every ~0.1 s, so saying it every time would flood the log).
    Past `kinds` kinds (a stranger trying a new random key each time), the rest are counted in
    one line at most every `quiet_s`."""

    def __init__(self, log: LogFn, kinds: int, quiet_s: float):
        self._log = log or (lambda msg: None)
        self.count = 0
        self.last: Optional[str] = None
        self._told: set = set()
        self._kinds, self._quiet_s = kinds, quiet_s
        self._more, self._more_since = 0, None

    def add(self, message: str, kind=None) -> None:
        self.count += 1
        self.last = message
        kind = message if kind is None else kind
        if kind in self._told:
            return
        if len(self._told) < self._kinds:
            self._told.add(kind)
            self._log(message)
            return
        self._more += 1
        now = time.monotonic()
        if self._more_since is None or now - self._more_since >= self._quiet_s:
            self._log(f"{message} ({self._more} refusal(s) of new kinds since the first {self._kinds}; "
                      f"said at most every {self._quiet_s:g} s)")
            self._more, self._more_since = 0, now

    def summary(self) -> str:
        """For a handshake timeout: '' or ' (refused N connection(s); latest: ...)'."""
        return f" (refused {self.count} connection(s); latest: {self.last})" if self.count else ""


# -- Bob: the allow-list, answered in the link's own poll loop --------------------------------


class ZapHandler:
    """ZAP (RFC 27) for CURVE: admit exactly the public keys in the allow-list folder."""

    def __init__(self, ctx: zmq.Context, keys: CurveKeys, refusals: "Refusals"):
        self.keys, self._refuse = keys, refusals.add
        self.socket = ctx.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(ZAP_ENDPOINT)       # before the ROUTER binds: no unchecked window

    def service(self) -> Optional[str]:
        for _ in range(1000):                # bounded, like the link's own drain
            try:
                request = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self.socket.send_multipart(self._answer(request))
        return None

    def _answer(self, msg: list) -> list:
        if len(msg) < 6:
            return [b"1.0", msg[1] if len(msg) > 1 else b"", b"400", b"malformed ZAP request", b"", b""]
        version, request_id, _domain, address, _identity, mechanism = msg[:6]
        if version != b"1.0":
            return [b"1.0", request_id, b"400", b"unsupported ZAP version", b"", b""]
        who = address.decode("utf-8", "replace") or "an unknown address"
        if mechanism != b"CURVE" or len(msg) != 7 or len(msg[6]) != 32:
            self._refuse(f"refused a sender from {who}: it did not offer a CURVE key", b"no-key")
            return [b"1.0", request_id, b"400", b"CURVE required", b"", b""]
        key = z85.encode(msg[6])
        try:
            allowed = self.keys.admitted()
        except KeyFileError as e:
            allowed = {}
            self._refuse(f"cannot read the allow-list: {e}", b"allow-dir")
        if key in allowed:
            return [b"1.0", request_id, b"200", b"OK", allowed[key].encode("utf-8", "replace"), b""]
        where = (f"allow-list {self.keys.allow_dir}" if self.keys.allow_dir is not None
                 else "the one-time code's key: a wrong or old --code")
        self._refuse(f"refused a sender with unknown key {_prefix(key)} from {who} (not in {where})", key)
        return [b"1.0", request_id, b"400", b"unknown key", b"", b""]

    def close(self) -> None:
        self.socket.close(0)


# -- both sides: the socket's handshake events ---------------------------------------------------


class HandshakeWatch:
    """A socket monitor for handshake results. Alice: service() returns why she must give up
    (or None); Bob: refusals are recorded (and logged once per kind), never fatal."""

    def __init__(self, sock: zmq.Socket, role: str, keys: Optional[CurveKeys],
                 refusals: Optional[Refusals] = None):
        self._sock, self.role, self.keys, self.refusals = sock, role, keys, refusals
        self.failures = 0                    # in a row, without detail
        self.socket = sock.get_monitor_socket(_HANDSHAKE_EVENTS)

    def service(self) -> Optional[str]:
        for _ in range(1000):
            try:
                event = parse_monitor_message(self.socket.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return None
            failure = self._on(event["event"], event["value"],
                               (event.get("endpoint") or b"").decode("utf-8", "replace"))
            if failure:
                return failure
        return None

    def _on(self, kind: int, value: int, endpoint: str) -> Optional[str]:
        if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.failures = 0
            return None
        mismatch = kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
        if self.role == "alice":
            return self._alice(kind, value, mismatch)
        self._bob(kind, value, mismatch, endpoint)
        return None

    def _alice(self, kind: int, value: int, mismatch: bool) -> Optional[str]:
        curve = self.keys is not None
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH and value != 300:   # 300 = temporary: retry
            if curve and self.keys.refused_hint:
                return f"Mars refused our key: {self.keys.refused_hint}"
            ours = (self.keys.public_file if curve else None) or "our public key"
            return f"Mars refused our key (not in its allow-list); ask Mars to add {ours}"
        if mismatch:
            if curve:
                return ("Mars does not use encryption (it listens in plain text); drop --server-key and "
                        "--curve-secret, or restart Mars with --curve-secret and --allow")
            return "Mars requires encryption (CURVE); pass --server-key and --curve-secret"
        # A mechanism mismatch is noticed by whichever side reads the other's greeting first;
        # when Mars wins that race every time we only ever see the connection drop.
        self.failures += 1
        if self.failures < REPEATED_FAILURES:
            return None
        if curve:
            return (f"Mars dropped our encrypted handshake {self.failures} times in a row: either --server-key "
                    f"is not Mars's public key (its NAME.key), or Mars listens in plain text")
        return "Mars requires encryption (CURVE); pass --server-key and --curve-secret"

    def _bob(self, kind: int, value: int, mismatch: bool, endpoint: str) -> None:
        curve, kind_of = self.keys is not None, "mechanism"
        if mismatch:
            message = (f"refused a plain-text sender on {endpoint}: this receiver requires CURVE encryption"
                       if curve else f"refused an encrypted (CURVE) sender on {endpoint}: this receiver "
                       f"listens in plain text (start it with --curve-secret and --allow)")
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            # A mechanism mismatch is noticed by whichever side reads the other's greeting first;
            # the other side only sees the connection drop. So this is most likely the same case.
            # A sender that gave up waiting (this receiver was paused, e.g. SIGSTOP) leaves the same
            # trace: a connection accepted by the kernel and closed before its handshake was read.
            message = (f"dropped a sender on {endpoint} mid-handshake (a plain-text sender? this receiver "
                       f"requires CURVE encryption; or one that gave up waiting for this receiver)" if curve else
                       f"dropped a sender on {endpoint} mid-handshake (one that gave up waiting for this "
                       f"receiver, or not a marslink sender, or an encrypted one: this receiver listens in plain text)")
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
            message, kind_of = (f"refused a sender on {endpoint} whose handshake did not decrypt: "
                                f"its --server-key is not this receiver's public key"), "crypto"
        else:
            return                           # auth refusals are logged by the ZAP handler, with the key
        if self.refusals is not None:
            self.refusals.add(message, kind_of)

    def close(self) -> None:
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.socket.close(0)
