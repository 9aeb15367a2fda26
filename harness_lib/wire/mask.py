"""Account ids are masked before a recording reaches disk: a stable pseudonym per account.

The pseudonym keeps the account's letter prefix (``DU``/``DF`` paper, ``U`` live: the
paper-account guard must decide the same way on a replay) and replaces the digits by an
HMAC of the account id under a key kept on this machine (``data/wire/.mask-key``), so
one account always gets the same pseudonym in every recording made here, and nobody
without the key can recover the account by hashing candidate ids. The pseudonym has the
same length as the account id, so frames keep their length prefixes.

Accounts are learned from the gateway's ``managedAccounts`` message (msg 15) in each
session, plus any given up front. Masking works on the raw socket chunks (the tap
records reads, not messages); an account id split across two reads is caught by
holding each chunk back until the next one of the same direction arrives.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import struct
from collections.abc import Iterable
from pathlib import Path

from harness_lib.wire.format import Kind

_PREFIX = re.compile(rb"^[A-Za-z]*")
_MAX_SCAN_FRAMES = 200
"""Messages examined per session while looking for managedAccounts (it comes first)."""

Out = list[tuple[int, int, float, float, bytes]]


def load_key(directory: Path) -> bytes:
    """This machine's masking key, created on first use (readable by the owner only)."""
    path = directory / ".mask-key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        directory.mkdir(parents=True, exist_ok=True)
        key = os.urandom(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key


def pseudonym(account: str, key: bytes) -> str:
    """The stable, same-length pseudonym of one account id."""
    raw = account.encode()
    prefix = _PREFIX.match(raw).group(0)  # type: ignore[union-attr]
    n = len(raw) - len(prefix)
    digest = int.from_bytes(hmac.new(key, raw, hashlib.sha256).digest(), "big")
    digits = str(digest).zfill(n)[-n:] if n else ""
    out = prefix.decode() + digits
    if out == account:  # astronomically unlikely, but never write the real id
        out = prefix.decode() + str((int(digits) + 1) % 10**n).zfill(n)
    return out


class AccountMasker:
    """The recording writer's transform: learns account ids and replaces them everywhere."""

    def __init__(self, key: bytes, accounts: Iterable[str] = ()) -> None:
        self.key = key
        self.pairs: dict[bytes, bytes] = {}
        self._longest = 0
        for a in accounts:
            self.learn(a)
        self._held: dict[tuple[int, int], list] = {}
        self._scan: dict[int, bytearray] = {}
        self._scanned: dict[int, int] = {}

    def learn(self, account: str) -> None:
        """Mask this account id from now on."""
        account = account.strip()
        if not account or account.encode() in self.pairs:
            return
        self.pairs[account.encode()] = pseudonym(account, self.key).encode()
        # Longest first, so "U123" never masks part of "DU123" before "DU123" is replaced.
        self.pairs = dict(sorted(self.pairs.items(), key=lambda kv: -len(kv[0])))
        self._longest = max(len(k) for k in self.pairs)

    def mapping(self) -> dict[str, str]:
        """account -> pseudonym, for the user's own reference (never written to a recording)."""
        return {k.decode(): v.decode() for k, v in self.pairs.items()}

    def _mask(self, data: bytes) -> bytes:
        for real, fake in self.pairs.items():
            if real in data:
                data = data.replace(real, fake)
        return data

    def _learn_from(self, session: int, payload: bytes) -> None:
        """Parse the server's first messages of a session until managedAccounts arrives."""
        buf = self._scan.setdefault(session, bytearray())
        buf += payload
        while len(buf) >= 4:
            (n,) = struct.unpack_from(">I", buf, 0)
            if len(buf) < 4 + n:
                return
            fields = bytes(buf[4 : 4 + n]).split(b"\0")
            del buf[: 4 + n]
            self._scanned[session] = self._scanned.get(session, 0) + 1
            if fields[0] == b"15" and len(fields) >= 3:
                for acct in fields[2].decode("utf-8", "replace").split(","):
                    self.learn(acct)
                self._done(session)
                return
            if self._scanned[session] >= _MAX_SCAN_FRAMES:
                self._done(session)
                return

    def _done(self, session: int) -> None:
        self._scan.pop(session, None)
        self._scanned[session] = _MAX_SCAN_FRAMES

    def __call__(self, kind: int, session: int, payload: bytes, t_mono: float,
                 t_wall: float) -> Out:  # fmt: skip
        """Mask one queued event; returns the records ready to write (maybe none yet)."""
        if kind == Kind.TO_CLIENT and self._scanned.get(session, 0) < _MAX_SCAN_FRAMES:
            self._learn_from(session, payload)
        if kind not in (Kind.TO_SERVER, Kind.TO_CLIENT):
            out: Out = []
            if kind == Kind.CLOSE:  # the session's last bytes go out before its CLOSE
                out += self._release(session, Kind.TO_SERVER, force=True)
                out += self._release(session, Kind.TO_CLIENT, force=True)
            return [*out, (kind, session, t_mono, t_wall, payload)]
        if not self.pairs:
            return [(kind, session, t_mono, t_wall, payload)]
        data = self._mask(payload)
        out = []
        held = self._held.get((session, kind))
        if held is not None:
            prev = held[4]
            w = self._longest - 1
            tail, head = prev[-w:], data[:w]
            joined = tail + head
            fixed = self._mask(joined)
            if fixed != joined:  # an account id straddled the two reads
                prev = prev[: len(prev) - len(tail)] + fixed[: len(tail)]
                data = fixed[len(tail) :] + data[len(head) :]
            out.append((held[0], held[1], held[2], held[3], prev))
        self._held[(session, kind)] = [kind, session, t_mono, t_wall, data]
        return out

    def _release(self, session: int, kind: int, force: bool) -> Out:
        held = self._held.get((session, kind))
        if held is None:
            return []
        data = held[4]
        if not force and any(
            data.endswith(real[:k]) for real in self.pairs for k in range(1, len(real))
        ):
            return []  # the tail could begin an account id: wait for the next read
        del self._held[(session, kind)]
        return [tuple(held)]  # type: ignore[list-item]

    def drain_end(self) -> Out:
        """Release held chunks that cannot be the first half of an account id."""
        out: Out = []
        for session, kind in list(self._held):
            out += self._release(session, kind, force=False)
        return out

    def finish(self) -> Out:
        """Everything still held (the recording is closing)."""
        out: Out = []
        for session, kind in list(self._held):
            out += self._release(session, kind, force=True)
        return out
