# Consent state and gate (docs/CONSENT.md): version, grant/deny per category, when and
# from where it was set; persisted atomically; default deny except `essential`.
# Signed updates: HMAC-SHA256 over the canonical bytes of docs/CONSENT.md 4 (edge/wire.py).

import binascii
import json
import os

from micropython import const

from edge import wire
from edge.inbound import echo, json_depth
from edge.wire import hmac_sha256

_STATE = "/" + wire.CONSENT_STATE
_STATE_MAX = const(8192)  # a larger consent.json is corrupt (32 long category names: 5 KB)
_TMP = "/consent.tmp"
_VERSION_MAX = 0x7FFFFFFE
# An update nobody signed may raise the version by at most this much: one forged or mistaken
# unsigned update cannot park the version at the ceiling, where every later update is stale
# (docs/CONSENT.md 4). A signed or local update with "rebase" recovers a device that got there.
UNSIGNED_STEP = 1000
_KEYS = ("version", "grant", "deny", "ts", "sig", "id", "source", "rebase")


class ConsentError(ValueError):
    pass


def config_key(cfg, section):
    """A per-device key from config `SECTION.key` (hex) or `SECTION.key_file` (a file holding
    the hex), or None when neither is set. Raises ConfigError."""
    from edge.config import ConfigError

    c = cfg.get(section) or {}
    if not isinstance(c, dict):
        raise ConfigError("config key '%s' must be an object" % section)
    text = c.get("key")
    if c.get("key_file"):
        try:
            with open(c["key_file"]) as f:
                text = f.read().strip()
        except OSError as e:
            raise ConfigError(
                "config key '%s.key_file': cannot read it: %s" % (section, e)
            ) from None
    if text is None:
        return None
    try:
        key = binascii.unhexlify(text)
    except (ValueError, TypeError):
        key = b""
    if len(key) < 16:
        raise ConfigError(
            "config key '%s.key' must be at least 32 hex digits (16 bytes)" % section
        )
    return key


def consent_key(cfg):
    """The update key (`consent.key` / `consent.key_file`), or None: then unsigned updates
    are accepted (docs/CONSENT.md 4)."""
    return config_key(cfg, "consent")


def equal(a, b):
    """Constant-time comparison: every byte is compared, so the time does not tell how many
    leading bytes matched."""
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
        self.recovered = None  # why the persisted state was not usable, or None
        self._load()
        if not self.salt:
            self.salt = self._rand(16)
        # at boot only `essential` is forwarded until the broker has acknowledged the boot
        # receipt (release()): the collector refuses what no receipt it holds grants
        self.allowed = [name == "essential" for name in categories]

    # --- persistence: temp file + rename, atomic on littlefs and POSIX (FORMAT.md 2.4) -----
    def _load(self):
        """Read the persisted state. A missing file is a first boot. A file that is not this
        format's JSON object with every field of its type is a corrupt state: then nothing is
        granted but `essential` (the safe side of consent), the version is kept when it is
        readable, the event is counted (`state_recovered`) and the next update or the
        retained one restores the grants."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read(_STATE_MAX + 1)
        except OSError:
            return  # no state yet (first boot): only `essential`, as the defaults say
        st = None
        try:
            if len(raw) <= _STATE_MAX and json_depth(raw, 4) <= 4:
                st = json.loads(raw)
        except ValueError:
            pass
        if not isinstance(st, dict):
            self.recovered = "not a JSON object of at most %d bytes" % _STATE_MAX
            return
        bad = _bad_state(st)
        v = st.get("version")
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _VERSION_MAX:
            self.version = v
        if bad:
            self.recovered = bad
            return
        grants = st["grants"]
        self.ingest = [name == "essential" or grants.get(name) is True for name in self.categories]
        self.ts = st.get("ts")
        self.issued = st.get("issued")
        self.source = st.get("source", "?")
        self.salt = binascii.unhexlify(st.get("salt", ""))
        self.receipt = st.get("receipt")
        self.purged_total = st.get("purged_total") or {}

    def save(self):
        st = wire.consent_state(
            self.version,
            self.grants(),
            self.source,
            binascii.hexlify(self.salt).decode(),
            self.ts,
            self.issued,
            self.receipt,
            self.purged_total,
        )
        with open(self.tmp, "w") as f:
            json.dump(st, f)  # streamed: no state-sized string, which a fragmented heap lacks
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
    def check(self, doc, source="mqtt"):
        """Validate an update document; returns the new grant list. Raises ConsentError (or a
        StaleVersion) and changes nothing. source "local" is the appliance's own UI."""
        if not isinstance(doc, dict):
            raise ConsentError("consent document must be a JSON object")
        for k in doc:
            if k not in _KEYS:
                raise ConsentError("unknown key %s in consent document" % echo(k))
        v = doc.get("version")
        if not isinstance(v, int) or isinstance(v, bool) or not 0 < v <= _VERSION_MAX:
            raise ConsentError("'version' must be an integer 1..%d" % _VERSION_MAX)
        rebase = doc.get("rebase", False)
        if not isinstance(rebase, bool):
            raise ConsentError("'rebase' must be true or false")
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
                    raise ConsentError("unknown category %s in '%s'" % (echo(name), key))
                if name in seen:
                    raise ConsentError("category %s is named twice" % echo(name))
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
            if not equal(got, hmac_sha256(self.key, wire.consent_signed_bytes(self.device, doc))):
                raise ConsentError("bad signature")
        signed = self.key is not None
        if rebase:
            # Case 1: a recovery: any version, from the backend's key or the appliance itself;
            # a signed one must be newer than the last applied (a replay changes nothing)
            if not signed and source != "local":
                raise ConsentError("'rebase' needs a signed update or the local UI")
            if signed and source != "local" and ts <= (self.issued or 0):
                raise ConsentError("'rebase' update is not newer than the one applied")
        elif v <= self.version:
            raise StaleVersion(v, self.version)  # Case 2: not newer
        elif not signed and source != "local" and v - self.version > UNSIGNED_STEP:
            # Case 3: unsigned and too far ahead (Case 4, the rest: applied)
            raise ConsentError(
                "an unsigned update may raise the version by at most %d (%d -> %d refused)"
                % (UNSIGNED_STEP, self.version, v)
            )
        return new

    def apply(self, doc, source, now):
        """Check and enforce an update, then persist it (before any purge). Returns the
        category indexes newly revoked. Raises ConsentError; then nothing changed."""
        new = self.check(doc, source)
        revoked = [i for i in range(len(new)) if self.ingest[i] and not new[i]]
        old = (self.version, self.ingest, self.ts, self.issued, self.source, self.salt)
        self.version = doc["version"]
        self.ingest = new
        self.ts = now
        self.issued = doc.get("ts")
        self.source = source
        self.salt = self._rand(16)  # pseudonyms change with every version (docs/CONSENT.md 7)
        try:
            self.save()
        except OSError as e:
            self.version, self.ingest, self.ts, self.issued, self.source, self.salt = old
            raise ConsentError("cannot persist consent state: %s" % e) from None
        except MemoryError:
            # nothing changed: the caller retries the update once memory is free
            self.version, self.ingest, self.ts, self.issued, self.source, self.salt = old
            raise
        for i in revoked:
            self.allowed[i] = False  # the forwarder stops at once; grants wait for release()
        self.stats["updates"] += 1
        return revoked


def _bad_state(st):
    """Why a persisted state object cannot be used, or None (every field of its type)."""
    if st.get("format") != wire.CONSENT_STATE_FORMAT:
        return "format is not %d" % wire.CONSENT_STATE_FORMAT
    g = st.get("grants")
    if not isinstance(g, dict):
        return "grants is not an object"
    for k in ("ts", "issued"):
        x = st.get(k)
        if x is not None and (not isinstance(x, int) or isinstance(x, bool)):
            return "%s is not an integer" % k
    v = st.get("version")
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= _VERSION_MAX:
        return "version is not an integer 0..%d" % _VERSION_MAX
    if not isinstance(st.get("source", "?"), str) or not isinstance(st.get("salt", ""), str):
        return "source or salt is not a string"
    try:
        binascii.unhexlify(st.get("salt", ""))
    except ValueError:
        return "salt is not hex"
    r = st.get("receipt")
    if r is not None and not isinstance(r, dict):
        return "receipt is not an object"
    p = st.get("purged_total") or {}
    if not isinstance(p, dict):
        return "purged_total is not an object"
    for k in p:
        if not isinstance(p[k], int) or isinstance(p[k], bool):
            return "purged_total values are not integers"
    return None


class StaleVersion(ConsentError):
    def __init__(self, version, enforced):
        super().__init__("stale version %d ignored: version %d is enforced" % (version, enforced))
        self.version = version
        self.enforced = enforced
