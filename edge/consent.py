# Consent state and gate (issue 5, DESIGN.md 3): version, grant/deny per category, when and
# from where it was set; persisted atomically; default deny except `essential`.
# Signed updates: HMAC-SHA256 over the canonical bytes of docs/CONSENT.md 4.

import binascii
import hashlib
import json
import os

_STATE = "/consent.json"
_TMP = "/consent.tmp"
_FORMAT = 1


class ConsentError(ValueError):
    pass


def hmac_sha256(key, msg):
    """HMAC-SHA256 (RFC 2104) from hashlib.sha256: MicroPython has no hmac module."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    ipad = bytearray(64)
    opad = bytearray(64)
    for i in range(64):
        k = key[i] if i < len(key) else 0
        ipad[i] = k ^ 0x36
        opad[i] = k ^ 0x5C
    inner = hashlib.sha256(ipad)
    inner.update(msg)
    outer = hashlib.sha256(opad)
    outer.update(inner.digest())
    return outer.digest()


def signed_bytes(device, doc):
    """The canonical bytes an update's signature covers (docs/CONSENT.md 4): one line each for
    the scheme, device, version, sorted grants, sorted denies and the issue time."""
    return "\n".join(
        (
            "edge-consent/1",
            device,
            str(doc.get("version")),
            ",".join(sorted(doc.get("grant", []))),
            ",".join(sorted(doc.get("deny", []))),
            str(doc.get("ts", 0)),
        )
    ).encode()


def consent_key(cfg):
    """The per-device update key from config `consent.key` (hex) or `consent.key_file` (a file
    holding the hex), or None: then unsigned updates are accepted. Raises ConfigError."""
    from edge.config import ConfigError

    c = cfg.get("consent") or {}
    if not isinstance(c, dict):
        raise ConfigError("config key 'consent' must be an object")
    text = c.get("key")
    if c.get("key_file"):
        try:
            with open(c["key_file"]) as f:
                text = f.read().strip()
        except OSError as e:
            raise ConfigError("config key 'consent.key_file': cannot read it: %s" % e) from None
    if text is None:
        return None
    try:
        key = binascii.unhexlify(text)
    except (ValueError, TypeError):
        key = b""
    if len(key) < 16:
        raise ConfigError("config key 'consent.key' must be at least 32 hex digits (16 bytes)")
    return key


def _equal(a, b):
    # compare every byte so the time does not tell how many leading bytes matched
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


class Consent:
    """`ingest[i]`: category i may be stored (the gate). `allowed[i]`: it may be forwarded.
    A revocation clears both at once; a grant opens forwarding only after its receipt is
    published (release()), so the collector never sees data the receipts do not cover."""

    def __init__(self, root, categories, device, key=None, rand=None):
        self.path = root + _STATE
        self.tmp = root + _TMP
        self.categories = categories
        self.device = device
        self.key = key
        self._rand = rand or os.urandom
        self.version = 0
        self.ts = None
        self.issued = None
        self.source = "default"
        self.ingest = [name == "essential" for name in categories]
        self.salt = b""
        self.receipt = None  # the last receipt, persisted so it is republished after a boot
        self.purged_total = {}
        self.stats = {"dropped": [0] * len(categories), "updates": 0, "rejected": 0}  # type: dict
        self._load()
        if not self.salt:
            self.salt = self._rand(16)
        # at boot only `essential` is forwarded until the broker has acknowledged the boot
        # receipt (release()): the collector refuses what no receipt it holds grants
        self.allowed = [name == "essential" for name in categories]

    # --- persistence: temp file + rename, atomic on littlefs and POSIX (FORMAT.md 2.4) -----
    def _load(self):
        try:
            with open(self.path, "rb") as f:
                st = json.loads(f.read())
            if st.get("format") != _FORMAT:
                return
            grants = st["grants"]
            ingest = [name == "essential" or grants.get(name) is True for name in self.categories]
            self.version = st["version"]
            self.ts = st.get("ts")
            self.issued = st.get("issued")
            self.source = st.get("source", "?")
            self.salt = binascii.unhexlify(st.get("salt", ""))
            self.receipt = st.get("receipt")
            self.purged_total = st.get("purged_total") or {}
            self.ingest = ingest
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # no state yet (first boot): only `essential`, as the defaults say

    def save(self):
        st = {
            "format": _FORMAT,
            "version": self.version,
            "grants": self.grants(),
            "ts": self.ts,
            "issued": self.issued,
            "source": self.source,
            "salt": binascii.hexlify(self.salt).decode(),
            "receipt": self.receipt,
            "purged_total": self.purged_total,
        }
        with open(self.tmp, "wb") as f:
            f.write(json.dumps(st))
        os.rename(self.tmp, self.path)

    # --- gate (hot path) -------------------------------------------------------------------
    def gate(self, cat):
        """True when a reading of category index `cat` may be stored; counts the drops."""
        if self.ingest[cat]:
            return True
        self.stats["dropped"][cat] += 1
        return False

    def grants(self):
        g = {}
        for i, name in enumerate(self.categories):
            g[name] = self.ingest[i]
        return g

    def release(self, version):
        """The receipt of `version` is out: let the forwarder send what that version grants."""
        if version == self.version:
            self.allowed = list(self.ingest)

    # --- updates ---------------------------------------------------------------------------
    def check(self, doc):
        """Validate an update document; returns the new grant list. Raises ConsentError (or a
        StaleVersion) and changes nothing."""
        if not isinstance(doc, dict):
            raise ConsentError("consent document must be a JSON object")
        for k in doc:
            if k not in ("version", "grant", "deny", "ts", "sig", "id", "source"):
                raise ConsentError("unknown key %r in consent document" % k)
        v = doc.get("version")
        if not isinstance(v, int) or isinstance(v, bool) or not 0 < v < 0x7FFFFFFF:
            raise ConsentError("'version' must be an integer 1..2147483646")
        ts = doc.get("ts", 0)
        if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
            raise ConsentError("'ts' must be a non-negative integer (ms since the epoch)")
        new = list(self.ingest)
        seen = {}
        for key, value in (("grant", True), ("deny", False)):
            names = doc.get(key, [])
            if not isinstance(names, list):
                raise ConsentError("'%s' must be a list of category names" % key)
            for name in names:
                if name not in self.categories:
                    raise ConsentError("unknown category %r in '%s'" % (name, key))
                if name in seen:
                    raise ConsentError("category %r is named twice" % name)
                if name == "essential" and not value:
                    raise ConsentError("'essential' cannot be denied")
                seen[name] = True
                new[self.categories.index(name)] = value
        if self.key is not None:
            sig = doc.get("sig")
            if not isinstance(sig, str):
                raise ConsentError("unsigned update: this device requires an HMAC-SHA256 'sig'")
            try:
                got = binascii.unhexlify(sig)
            except ValueError:
                raise ConsentError("'sig' must be 64 hex digits") from None
            if not _equal(got, hmac_sha256(self.key, signed_bytes(self.device, doc))):
                raise ConsentError("bad signature")
        if v <= self.version:
            raise StaleVersion(v, self.version)
        return new

    def apply(self, doc, source, now):
        """Check and enforce an update, then persist it (before any purge). Returns the
        category indexes newly revoked. Raises ConsentError; then nothing changed."""
        new = self.check(doc)
        revoked = [i for i in range(len(new)) if self.ingest[i] and not new[i]]
        old = (self.version, self.ingest, self.ts, self.issued, self.source, self.salt)
        self.version = doc["version"]
        self.ingest = new
        self.ts = now
        self.issued = doc.get("ts")
        self.source = source
        self.salt = self._rand(16)  # pseudonyms change with every version (issue 5.4)
        try:
            self.save()
        except OSError as e:
            self.version, self.ingest, self.ts, self.issued, self.source, self.salt = old
            raise ConsentError("cannot persist consent state: %s" % e) from None
        for i in revoked:
            self.allowed[i] = False  # the forwarder stops at once; grants wait for release()
        self.stats["updates"] += 1
        return revoked


class StaleVersion(ConsentError):
    def __init__(self, version, enforced):
        super().__init__("stale version %d ignored: version %d is enforced" % (version, enforced))
        self.version = version
        self.enforced = enforced
