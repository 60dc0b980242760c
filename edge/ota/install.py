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


def _hash_file(path, buf, h, h2=None):
    """Feed a file to one or two hash objects through buf."""
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                return
            h.update(memoryview(buf)[:n])
            if h2 is not None:
                h2.update(memoryview(buf)[:n])


def _exists(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


class Installer:
    """One bundle into `slot` under `root`. policy: dict with pub (release key), mpy,
    platform, current (running release or None), floor (None or version), downgrade (bool).

    On flash beside the slot: /ota/<slot>.manifest (the signed manifest, streamed there as it
    arrives: no manifest-sized block of RAM) and /ota/<slot>.head (the 12-byte header and the
    signature), written once the signature verified."""

    def __init__(self, root, slot, size, sha256, policy):
        self.dir = root + SLOTS[slot]
        self.head_path = root + "/ota/" + slot + ".head"
        self.man_path = root + "/ota/" + slot + ".manifest"
        self.size = size
        self.sha256 = sha256
        self.policy = policy
        # set before any use; None while there is nothing open/parsed
        self.f = None  # type: io.BufferedWriter  # type: ignore[assignment]
        self.mf = None  # type: io.BufferedWriter  # type: ignore[assignment]
        self._reset()

    def _reset(self):
        self.off = 0
        self.total = hashlib.sha256()
        self.hdr = bytearray(bundle.HEADER_LEN)
        self.sig = None  # type: bytearray  # type: ignore[assignment]
        self.mlen = 0
        self.slen = 0
        self.m = None  # type: dict  # type: ignore[assignment]
        self.fi = 0  # index of the file being written
        self.fpos = 0
        self.fh = None  # type: hashlib.sha256  # type: ignore[assignment]

    # --- begin / resume ------------------------------------------------------------------
    def start(self):
        """Begin from byte 0: the slot's old agent, head and manifest are removed."""
        self.close()
        rmtree(self.dir + "/edge")
        for p in (self.head_path, self.man_path, self.man_path + ".part"):
            try:
                os.remove(p)
            except OSError:
                pass
        self._reset()
        return 0

    def resume(self):
        """Continue a download whose bytes are on flash; returns the offset to fetch next."""
        try:
            with open(self.head_path, "rb") as f:
                f.readinto(self.hdr)
                self.mlen, self.slen = bundle.parse_header(self.hdr)
                self.sig = bytearray(self.slen)
                if f.readinto(self.sig) != self.slen:
                    raise InstallError("head truncated")
            self._accept()
        except (OSError, InstallError, bundle.BundleError):
            return self.start()
        buf = bytearray(_READ)
        self.total.update(self.hdr)
        _hash_file(self.man_path, buf, self.total)
        self.total.update(self.sig)
        self.off = bundle.HEADER_LEN + self.mlen + self.slen
        files = self.m["files"]
        while self.fi < len(files):
            path, size, digest = files[self.fi]
            name = self.dir + "/" + path
            have = _exists(name)
            if have <= 0 or have > size:
                break
            h = hashlib.sha256()
            _hash_file(name, buf, h, self.total)
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
            pos = self.off + i  # offset in the bundle of mv[i]
            if pos < bundle.HEADER_LEN:
                take = min(bundle.HEADER_LEN - pos, n - i)
                self.hdr[pos : pos + take] = mv[i : i + take]
                i += take
                if pos + take == bundle.HEADER_LEN:
                    self.mlen, self.slen = bundle.parse_header(self.hdr)
                    makedirs(self.man_path.rsplit("/", 1)[0])
                    self.mf = open(self.man_path + ".part", "wb")
                continue
            end_m = bundle.HEADER_LEN + self.mlen
            if pos < end_m:  # the manifest goes straight to flash
                take = min(end_m - pos, n - i)
                self.mf.write(mv[i : i + take])
                i += take
                if pos + take == end_m:
                    self.mf.close()
                    self.mf = None
                    self.sig = bytearray(self.slen)
                continue
            end_s = end_m + self.slen
            if pos < end_s:
                take = min(end_s - pos, n - i)
                self.sig[pos - end_m : pos - end_m + take] = mv[i : i + take]
                i += take
                if pos + take == end_s:
                    self._accept(True)
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
        for f in (self.f, self.mf):
            if f is not None:
                f.flush()  # the durability point of a chunk (littlefs syncs on flush)
        self.total.update(mv)
        self.off += n

    def _accept(self, fresh=False):
        """Verify the signature over the manifest on flash, parse it, check it against the
        policy; when fresh, keep the head (header + signature) for a resume."""
        man = self.man_path + (".part" if fresh else "")
        buf = bytearray(_READ)
        p = self.policy
        if not bundle.verify(p["pub"], lambda h: _hash_file(man, buf, h), self.sig):
            raise InstallError(
                "bad signature: the bundle is not signed by this device's release key"
            )
        with open(man) as f:
            m = bundle.parse_manifest(f)  # parsed from the file: no manifest-sized string
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
        need = bundle.HEADER_LEN + self.mlen + self.slen + bundle.payload_size(m)
        if need != self.size:
            raise InstallError(
                "truncated bundle: its manifest needs %d bytes, the update announced %d"
                % (need, self.size)
                if need > self.size
                else "size mismatch: its manifest needs %d bytes, the update announced %d"
                % (need, self.size)
            )
        self.m = m
        if fresh:
            os.rename(man, self.man_path)
            tmp = self.head_path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(self.hdr)
                f.write(self.sig)
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
        for f in (self.f, self.mf):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self.f = None
        self.mf = None
