"""Release signing keys: HSS/LMS (RFC 8554) key generation and signing on the host.

The device verifies with edge/lms.py (SHA-256 only); this module holds the private side. LMS is
stateful: every signature uses a fresh one-time key (a leaf), and signing one twice with the same
leaf would let an attacker forge. The key file therefore records the next free leaf, and the leaf
is reserved on disk (written, fsynced, renamed) before a signature is made (NIST SP 800-208
section 8.1: "the state must be updated before the signature is released").
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import struct
from pathlib import Path

from edge import lms
from host_tools.errors import ToolError

DEFAULT_LMS = 6  # LMS_SHA256_M32_H10: 1,024 releases per key
DEFAULT_OTS = 3  # LMOTS_SHA256_N32_W4: 2.5 KB signatures, ~1,000 hashes to verify
KIND = "edge-release-key"


def _h(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


class ReleaseKey:
    """A single-level HSS key: one LMS tree of LM-OTS leaves, derived from a 32-byte seed
    (RFC 8554 Appendix A), so the file stays small."""

    def __init__(
        self, path: Path, lms_type: int, ots_type: int, ident: bytes, seed: bytes, nxt: int
    ):
        if lms_type not in lms.LMS_TYPES or ots_type not in lms.OTS_TYPES:
            raise ToolError(f"release key {path}: unknown LMS/LM-OTS type {lms_type}/{ots_type}")
        self.path, self.lms_type, self.ots_type = path, lms_type, ots_type
        self.ident, self.seed, self.next = ident, seed, nxt
        self.height = lms.LMS_TYPES[lms_type]
        self._tree: list[bytes] | None = None

    # --- files ---------------------------------------------------------------------------
    @classmethod
    def generate(
        cls, path: Path, lms_type: int = DEFAULT_LMS, ots_type: int = DEFAULT_OTS
    ) -> ReleaseKey:
        """A new key written to `path` (0600, refuses to overwrite) and its public key beside it
        as `path.pub` (60 bytes: the HSS public key of RFC 8554 section 6.1)."""
        if path.exists():
            raise ToolError(
                f"{path} exists: a release key is never overwritten (pick another path)"
            )
        key = cls(path, lms_type, ots_type, secrets.token_bytes(16), secrets.token_bytes(32), 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        key._save(create=True)
        pub = Path(str(path) + ".pub")
        pub.write_bytes(key.public())
        return key

    @classmethod
    def load(cls, path: Path) -> ReleaseKey:
        try:
            d = json.loads(path.read_text())
            if d.get("kind") != KIND:
                raise ValueError("not a release key")
            return cls(
                path,
                int(d["lms_type"]),
                int(d["ots_type"]),
                bytes.fromhex(d["I"]),
                bytes.fromhex(d["seed"]),
                int(d["next"]),
            )
        except OSError as e:
            raise ToolError(f"cannot read release key {path}: {e.strerror}") from None
        except (ValueError, KeyError, TypeError) as e:
            raise ToolError(f"{path} is not a release key file: {e}") from None

    def _save(self, create: bool = False) -> None:
        doc = {
            "kind": KIND,
            "lms_type": self.lms_type,
            "ots_type": self.ots_type,
            "I": self.ident.hex(),
            "seed": self.seed.hex(),
            "next": self.next,
            "public": self.public().hex(),
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if create and self.path.exists():
            tmp.unlink()
            raise ToolError(f"{self.path} appeared while it was being created")
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    # --- LMS -----------------------------------------------------------------------------
    def _ots_x(self, q: int, i: int) -> bytes:
        return _h(self.ident, struct.pack(">IHB", q, i, 0xFF), self.seed)

    def _chain(self, q: int, i: int, tmp: bytes, start: int, stop: int) -> bytes:
        pre = self.ident + struct.pack(">IH", q, i)
        for j in range(start, stop):
            tmp = hashlib.sha256(pre + bytes((j,)) + tmp).digest()
        return tmp

    def _leaf_pub(self, q: int) -> bytes:
        w, p, _ls = lms.OTS_TYPES[self.ots_type]
        top = (1 << w) - 1
        ys = [self._chain(q, i, self._ots_x(q, i), 0, top) for i in range(p)]
        return _h(self.ident, struct.pack(">IH", q, lms.D_PBLC), *ys)

    def tree(self) -> list[bytes]:
        """T[1..2^(h+1)-1] (index 0 unused), section 5.3."""
        if self._tree is None:
            n = 1 << self.height
            t = [b""] * (2 * n)
            for q in range(n):
                r = n + q
                t[r] = _h(self.ident, struct.pack(">IH", r, lms.D_LEAF), self._leaf_pub(q))
            for r in range(n - 1, 0, -1):
                t[r] = _h(self.ident, struct.pack(">IH", r, lms.D_INTR), t[2 * r], t[2 * r + 1])
            self._tree = t
        return self._tree

    def public(self) -> bytes:
        """HSS public key: u32 levels (1) || u32 lms type || u32 ots type || I || T[1]."""
        return struct.pack(">III", 1, self.lms_type, self.ots_type) + self.ident + self.tree()[1]

    @property
    def remaining(self) -> int:
        return (1 << self.height) - self.next

    def _reserve(self) -> int:
        """Take the next leaf and persist the advanced counter before any signature exists."""
        lock = open(str(self.path) + ".lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            fresh = ReleaseKey.load(self.path)
            q = fresh.next
            if q >= 1 << self.height:
                raise ToolError(
                    f"release key {self.path} is used up ({q} signatures): make a new one"
                )
            self.next = q + 1
            self._save()
            return q
        finally:
            lock.close()

    def sign(self, msg: bytes) -> bytes:
        """HSS signature (one level: u32 0 || LMS signature, section 6.2) of msg."""
        q = self._reserve()
        w, p, ls = lms.OTS_TYPES[self.ots_type]
        c = secrets.token_bytes(lms.N)
        qd = _h(self.ident, struct.pack(">IH", q, lms.D_MESG), c, msg)
        qc = qd + lms.checksum(qd, w, ls)
        ys = [self._chain(q, i, self._ots_x(q, i), 0, lms.coef(qc, i, w)) for i in range(p)]
        t = self.tree()
        node = (1 << self.height) + q
        path = []
        while node > 1:
            path.append(t[node ^ 1])
            node >>= 1
        ots_sig = struct.pack(">I", self.ots_type) + c + b"".join(ys)
        lms_sig = (
            struct.pack(">I", q) + ots_sig + struct.pack(">I", self.lms_type) + b"".join(path)
        )
        return struct.pack(">I", 0) + lms_sig


def load_public(path: Path) -> bytes:
    """A release public key: the 60-byte .pub file, or its hex, or a key file's public key."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ToolError(f"cannot read public key {path}: {e.strerror}") from None
    if len(data) == 4 + lms.LMS_PUB_LEN:
        return data
    try:
        text = data.decode().strip()
        if text.startswith("{"):
            return bytes.fromhex(json.loads(text)["public"])
        pub = bytes.fromhex(text)
    except (ValueError, KeyError, UnicodeDecodeError):
        pub = b""
    if len(pub) != 4 + lms.LMS_PUB_LEN:
        raise ToolError(f"{path} is not a release public key (60 bytes or their hex)")
    return pub
