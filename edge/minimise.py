# Data minimisation before storage (docs/CONSENT.md): per category in config, drop a field, coarsen
# a value to a step, or pseudonymise an identifier with a keyed hash (docs/CONSENT.md 5).
#
#   "categories": {"usage": {"minimise": [{"op": "coarsen", "field": "ts", "step": 3600000},
# {"op": "pseudonymise", "field": "value", "channels": [6]}]}}
#
# Fields of a reading that a rule may touch: "ts" (ms) and "value" (i32). A dropped field is
# stored as 0. The pseudonym key is the consent state's salt, replaced at every version change,
# so pseudonyms cannot be linked across consent versions.

import struct

from edge.config import ConfigError
from edge.wire import hmac_sha256

_OPS = ("drop", "coarsen", "pseudonymise")
_FIELDS = ("ts", "value")


def _compile(rule, key, chan_ids):
    if not isinstance(rule, dict):
        raise ConfigError("config key '%s' must be an object" % key)
    op = rule.get("op")
    field = rule.get("field")
    if op not in _OPS:
        raise ConfigError("config key '%s.op' must be one of %s" % (key, ", ".join(_OPS)))
    if field not in _FIELDS:
        raise ConfigError("config key '%s.field' must be 'ts' or 'value'" % key)
    step = rule.get("step", 0)
    if op == "coarsen" and (not isinstance(step, int) or isinstance(step, bool) or step < 1):
        raise ConfigError("config key '%s.step' must be a positive integer" % key)
    if op == "pseudonymise" and field != "value":
        raise ConfigError("config key '%s': only 'value' can be pseudonymised" % key)
    chans = rule.get("channels", chan_ids)
    if not isinstance(chans, list) or [c for c in chans if c not in chan_ids]:
        raise ConfigError("config key '%s.channels' must list channels of this category" % key)
    return (_OPS.index(op), _FIELDS.index(field), step), chans


class Minimiser:
    """rules[channel] is a tuple of (op, field, step) for channels that have any rule."""

    def __init__(self, cfg, consent):
        self.consent = consent
        self.rules = {}  # type: dict
        for name, pol in cfg["categories"].items():
            spec = pol.get("minimise", [])
            if not isinstance(spec, list):
                raise ConfigError("config key 'categories.%s.minimise' must be a list" % name)
            chan_ids = [ch["id"] for ch in cfg["channels"] if ch["category"] == name]
            for i, rule in enumerate(spec):
                r, chans = _compile(rule, "categories.%s.minimise[%d]" % (name, i), chan_ids)
                for ch in chans:
                    self.rules[ch] = self.rules.get(ch, ()) + (r,)
        self.msg = bytearray(5)  # channel u8 + value i32: the pseudonymised identifier
        self.count = 0

    def apply(self, rules, channel, ts, value):
        """The minimised (ts, value) of one reading; called only for channels with rules."""
        self.count += 1
        for op, field, step in rules:
            x = ts if field == 0 else value
            if op == 0:
                x = 0
            elif op == 1:
                x = (x // step) * step  # floor, so a coarsened time never moves forward
            else:
                x = self.pseudonym(channel, x)
            if field == 0:
                ts = x
            else:
                value = x
        return ts, value

    def pseudonym(self, channel, ident):
        """31-bit keyed hash of an identifier: stable within a consent version, unlinkable
        across versions and devices (HMAC-SHA256 with the consent salt)."""
        struct.pack_into("<Bi", self.msg, 0, channel, ident)
        d = hmac_sha256(self.consent.salt, self.msg)
        return struct.unpack_from("<I", d, 0)[0] & 0x7FFFFFFF
