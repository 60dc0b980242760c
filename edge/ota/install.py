# Streaming bundle installer (docs/OTA.md section 2): writes an update bundle into the inactive
# slot as its bytes arrive. The signature is checked before any file is written, each file's
# sha256 as it completes, size and whole-bundle sha256 at the end. What reached flash is the
# progress: resume() rebuilds the hashes from it after a reconnect or a reboot.

import hashlib
import io  # noqa: F401  (named in type comments only)
import os

from micropython import const

from edge import bundle
from edge.ota.boot import SLOTS

_READ = const(512)


class InstallError(ValueError):
    pass


def makedirs(path):
    cur = ""
    for part in path.split("/"):
        if not part:
            cur = "/" if not cur else cur
            continue
        cur = part if not cur else (cur + part if cur.endswith("/") else cur + "/" + part)
        try:
            os.mkdir(cur)
        except OSError:
            pass


def rmtree(path):
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for e in entries:
        p = path + "/" + e[0]
        if e[1] == 0x4000:  # directory (os.ilistdir type field)
            rmtree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def _exists(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


class Installer:
    """One bundle into `slot` under `root`. policy: dict with pub (release key), mpy,
    platform, current (running release or None), floor (None or version), downgrade (bool)."""

    def __init__(self, root, slot, size, sha256, policy):
        self.dir = root + SLOTS[slot]
        self.head_path = root + "/ota/" + slot + ".head"
        self.size = size
        self.sha256 = sha256
        self.policy = policy
        # set by _head()/_open_next() before any use; None while there is nothing open/parsed
        self.f = None  # type: io.BufferedWriter  # type: ignore[assignment]
        self._reset()

    def _reset(self):
        self.off = 0
        self.total = hashlib.sha256()
        self.head = bytearray()  # type: bytearray | None
        self.head_len = 0
        self.m = None  # type: dict  # type: ignore[assignment]
        self.fi = 0  # index of the file being written
        self.fpos = 0
        self.fh = None  # type: hashlib.sha256  # type: ignore[assignment]

    # --- begin / resume ------------------------------------------------------------------
    def start(self):
        """Begin from byte 0: the slot's old agent and head are removed."""
        self.close()
        rmtree(self.dir + "/edge")
        try:
            os.remove(self.head_path)
        except OSError:
            pass
        self._reset()
        return 0

    def resume(self):
        """Continue a download whose bytes are on flash; returns the offset to fetch next."""
        try:
            with open(self.head_path, "rb") as f:
                head = f.read()
        except OSError:
            return self.start()
        try:
            self._head(head, False)
        except (InstallError, bundle.BundleError):
            return self.start()
        buf = bytearray(_READ)
        files = self.m["files"]
        while self.fi < len(files):
            path, size, digest = files[self.fi]
            name = self.dir + "/" + path
            have = _exists(name)
            if have <= 0 or have > size:
                break
            h = hashlib.sha256()
            with open(name, "rb") as f:
                while True:
                    n = f.readinto(buf)
                    if not n:
                        break
                    h.update(memoryview(buf)[:n])
                    self.total.update(memoryview(buf)[:n])
            self.off += have
            if have < size:
                self.fpos = have
                self.fh = h
                self.f = open(name, "ab")
                return self.off
            if h.digest() != digest:
                raise InstallError("file %s on flash does not match its hash" % path)
            self.fi += 1
        self._open_next()
        return self.off

    # --- bytes in --------------------------------------------------------------------------
    def feed(self, data):
        """Consume the next bytes of the bundle (from offset self.off)."""
        if self.off + len(data) > self.size:
            raise InstallError(
                "bundle is longer than the %d bytes the update announced" % self.size
            )
        mv = memoryview(data)
        i = 0
        n = len(mv)
        while i < n:
            if self.m is None:
                want = self.head_len or bundle.HEADER_LEN
                take = min(want - len(self.head), n - i)  # type: ignore[arg-type]
                self.head.extend(mv[i : i + take])  # type: ignore[union-attr]
                i += take
                if not self.head_len and len(self.head) == bundle.HEADER_LEN:
                    mlen, slen = bundle.parse_header(self.head)
                    self.head_len = bundle.HEADER_LEN + mlen + slen
                elif self.head_len and len(self.head) == self.head_len:
                    self._head(self.head, True)
                    self.head = None
                    self._open_next()
                continue
            files = self.m["files"]
            if self.fi >= len(files):
                raise InstallError("bundle is longer than its manifest")
            size = files[self.fi][1]
            take = min(size - self.fpos, n - i)
            self.f.write(mv[i : i + take])
            self.fh.update(mv[i : i + take])
            self.fpos += take
            i += take
            if self.fpos == size:
                self._close_file()
                self._open_next()
        if self.f is not None:
            self.f.flush()  # the durability point of a chunk (littlefs syncs on flush)
        self.total.update(mv)
        self.off += n

    def _head(self, head, fresh):
        mlen, slen = bundle.parse_header(head)
        if len(head) != bundle.HEADER_LEN + mlen + slen:
            raise InstallError("bundle head is truncated")
        raw = memoryview(head)[bundle.HEADER_LEN : bundle.HEADER_LEN + mlen]
        m = bundle.parse_manifest(bytes(raw))
        p = self.policy
        if not bundle.verify(p["pub"], raw, memoryview(head)[bundle.HEADER_LEN + mlen :]):
            raise InstallError(
                "bad signature: the bundle is not signed by this device's release key"
            )
        why = bundle.compatible(m, p["mpy"], p["platform"])
        if why:
            raise InstallError("incompatible: " + why)
        v = bundle.parse_version(m["version"])
        if p.get("floor") and v < bundle.parse_version(p["floor"]):
            raise InstallError(
                "downgrade: bundle %s is below the minimum %s" % (m["version"], p["floor"])
            )
        cur = p.get("current")
        if cur and v <= bundle.parse_version(cur) and not p.get("downgrade"):
            raise InstallError(
                "downgrade: bundle %s is not newer than the running %s (send downgrade: true to "
                "allow it above the minimum)" % (m["version"], cur)
            )
        need = len(head) + bundle.payload_size(m)
        if need != self.size:
            raise InstallError(
                "truncated bundle: its manifest needs %d bytes, the update announced %d"
                % (need, self.size)
                if need > self.size
                else "size mismatch: its manifest needs %d bytes, the update announced %d"
                % (need, self.size)
            )
        self.m = m
        if not fresh:
            self.total.update(head)
            self.off = len(head)
            return
        makedirs(self.head_path.rsplit("/", 1)[0])
        tmp = self.head_path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(head)
        os.rename(tmp, self.head_path)

    def _open_next(self):
        files = self.m["files"]
        while self.fi < len(files):
            path, size, _d = files[self.fi]
            name = self.dir + "/" + path
            makedirs(name.rsplit("/", 1)[0])
            self.f = open(name, "wb")
            self.fh = hashlib.sha256()
            self.fpos = 0
            if size:
                return
            self._close_file()
        self.f = None

    def _close_file(self):
        self.f.close()
        self.f = None
        path, _s, digest = self.m["files"][self.fi]
        if self.fh.digest() != digest:
            raise InstallError("file %s does not match its manifest hash" % path)
        self.fi += 1

    # --- end -------------------------------------------------------------------------------
    def finish(self):
        """Every byte in, every file verified; returns the manifest. The whole-bundle hash
        must be the one the update announced."""
        if self.off != self.size or self.m is None or self.fi != len(self.m["files"]):
            raise InstallError("truncated bundle: %d of %d bytes" % (self.off, self.size))
        if self.total.digest() != self.sha256:
            raise InstallError("wrong hash: the bundle's sha256 differs from the update's")
        return self.m

    def close(self):
        if self.f is not None:
            try:
                self.f.close()
            except OSError:
                pass
            self.f = None
