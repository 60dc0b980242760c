# Update bundle format (docs/FORMAT.md section 7): a 12-byte header, the manifest (JSON), its
# HSS signature (edge/lms.py), then the files in manifest order. Shared contract: `edgectl
# release` packs bundles with these functions and the device parses them with the same ones.

import binascii
import json
import struct

try:
    from micropython import const
except ImportError:  # CPython (the host imports this file): const() is a compiler hint only

    def const(x):  # type: ignore[misc]
        return x


MAGIC = b"EOTA"
FORMAT = const(1)
HEADER_LEN = const(12)
MAX_MANIFEST = const(16384)
MAX_SIG = const(16384)
MAX_FILES = const(256)
_MAX_PATH = const(96)
_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./"


class BundleError(ValueError):
    pass


def pack_header(manifest_len, sig_len):
    """magic, format u8, flags u8 (0), manifest length u16 BE, signature length u16 BE, 2 zero
    bytes (reserved)."""
    return MAGIC + struct.pack(">BBHHH", FORMAT, 0, manifest_len, sig_len, 0)


def parse_header(head):
    """(manifest length, signature length) from the first HEADER_LEN bytes."""
    if len(head) < HEADER_LEN or bytes(head[0:4]) != MAGIC:
        raise BundleError("not an update bundle (bad magic)")
    fmt, flags, mlen, slen, _r = struct.unpack_from(">BBHHH", head, 4)
    if fmt != FORMAT or flags:
        raise BundleError(
            "bundle format %d.%d is not supported (want %d.0)" % (fmt, flags, FORMAT)
        )
    if not 0 < mlen <= MAX_MANIFEST or not 0 < slen <= MAX_SIG:
        raise BundleError("bundle header has bad lengths")
    return mlen, slen


def parse_version(v):
    """'MAJOR.MINOR.PATCH' -> a tuple that compares in release order."""
    if not isinstance(v, str) or len(v) > 32:
        raise BundleError("version must be a string MAJOR.MINOR.PATCH")
    parts = v.split(".")
    if len(parts) != 3:
        raise BundleError("version %r is not MAJOR.MINOR.PATCH" % v)
    out = []
    for p in parts:
        if not p or not p.isdigit() or len(p) > 6:
            raise BundleError("version %r is not MAJOR.MINOR.PATCH" % v)
        out.append(int(p))
    return tuple(out)


def _path_ok(p):
    if not isinstance(p, str) or not 0 < len(p) <= _MAX_PATH or not p.startswith("edge/"):
        return False
    for c in p:
        if c not in _PATH_CHARS:
            return False
    for seg in p.split("/"):
        if seg in ("", ".", ".."):
            return False
    return True


def parse_manifest(raw):
    """Validate the manifest (bytes, or an open file holding exactly it); returns it with `files` as (path, size, sha256 bytes) tuples.
    Keys: bundle (=FORMAT), version, min_version (optional), next_key (optional: the release
    key devices trust once this release is confirmed, 120 hex digits; returned as 60 bytes),
    mpy (the target's sys.implementation._mpy), platform, files [[path, size, sha256 hex], ...]."""
    try:
        m = json.load(raw) if hasattr(raw, "read") else json.loads(raw)
    except ValueError:
        raise BundleError("manifest is not valid JSON")
    if not isinstance(m, dict) or m.get("bundle") != FORMAT:
        raise BundleError("manifest is not a format %d bundle manifest" % FORMAT)
    parse_version(m.get("version"))
    if m.get("min_version") is not None:
        parse_version(m["min_version"])
    if m.get("next_key") is not None:
        m["next_key"] = parse_public(m["next_key"])
    if not isinstance(m.get("mpy"), int) or not isinstance(m.get("platform"), str):
        raise BundleError("manifest needs integer 'mpy' and string 'platform'")
    files = m.get("files")
    if not isinstance(files, list) or not 0 < len(files) <= MAX_FILES:
        raise BundleError("manifest needs 1..%d files" % MAX_FILES)
    seen = {}
    for k, f in enumerate(files):
        if not isinstance(f, list) or len(f) != 3:
            raise BundleError("manifest file entries are [path, size, sha256]")
        path, size, digest = f
        if not _path_ok(path) or path in seen:
            raise BundleError("manifest has a bad or repeated path %r" % (path,))
        seen[path] = 1
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BundleError("manifest size of %s is not a size" % path)
        if not isinstance(digest, str) or len(digest) != 64:
            raise BundleError("manifest sha256 of %s is not 64 hex digits" % path)
        try:
            files[k] = (path, size, binascii.unhexlify(digest))  # in place: no second list
        except ValueError:
            raise BundleError("manifest sha256 of %s is not hex" % path)
    return m


def parse_public(text):
    """A release public key in hex (an HSS key of one level over a known LMS and LM-OTS type,
    RFC 8554 section 6.3) -> its 60 bytes. Checked whole before a device adopts it: a key it
    cannot use would leave it refusing every later update."""
    from edge import lms

    try:
        pub = binascii.unhexlify(text) if isinstance(text, str) else b""
    except ValueError:
        pub = b""
    if len(pub) != 4 + lms.LMS_PUB_LEN:
        raise BundleError(
            "next_key must be a release public key, %d hex digits" % (8 + 2 * lms.LMS_PUB_LEN)
        )
    levels, lms_type, ots_type = struct.unpack_from(">III", pub, 0)
    if levels != 1 or lms_type not in lms.LMS_TYPES or ots_type not in lms.OTS_TYPES:
        raise BundleError("next_key is not a one-level HSS key of known LMS/LM-OTS types")
    return pub


def payload_size(m):
    """Bytes of file data after the signature."""
    total = 0
    for f in m["files"]:
        total += f[1]
    return total


def compatible(m, mpy, platform):
    """None when the bundle runs on a board reporting `mpy` (sys.implementation._mpy) and
    `platform`, else why not. Bytecode needs the same .mpy version; native code (arch bits
    set) the same arch and sub-version too (MicroPython docs, mpyfiles)."""
    if m["platform"] != platform:
        return "bundle is for platform %s, this board is %s" % (m["platform"], platform)
    want = m["mpy"]
    if (want & 0xFF) != (mpy & 0xFF) or (want >> 8 and want >> 8 != mpy >> 8):
        return "bundle is for .mpy %d (arch %d), this board runs .mpy %d (arch %d)" % (
            want & 0xFF,
            want >> 10,
            mpy & 0xFF,
            mpy >> 10,
        )
    return None


def verify(pub, manifest_raw, sig):
    """True when sig is the release key's signature of the manifest bytes."""
    from edge import lms

    try:
        return lms.hss_verify(pub, manifest_raw, sig)
    except lms.SignatureError as e:
        raise BundleError("signature malformed: %s" % e)
