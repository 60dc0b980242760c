# What the device and its collector authenticate with the backend key (docs/MQTT.md 8): the
# collector's end-to-end acks (checked here) and the device's consent receipts (signed here).
# The host side is host_tools/backend/e2e.py; tests/vectors/auth.json holds what both accept.

from micropython import const

from edge.consent import config_key, equal
from edge.wire import hmac_sha256

_MAGIC0 = const(0x45)  # "E"
_MAGIC1 = const(0x41)  # "A"
_VERSION = const(1)
_TAG = const(16)  # HMAC-SHA256 truncated to 128 bits (RFC 2104 section 5)
_PAIR = const(16)  # first u64, last u64, big-endian
MAX_PAIRS = const(32)


def backend_key(cfg):
    """The key from config `backend.key` / `backend.key_file`, or None (then acks are taken
    unauthenticated and receipts go unsigned). Raises ConfigError."""
    return config_key(cfg, "backend")


class AckCheck:
    """Checks signed acks for one device: `EA`, version 1, n, n x (first u64, last u64), tag =
    HMAC-SHA256(key, "edge-ack/1\\n" + device + "\\n" + the bytes before the tag)[:16]."""

    def __init__(self, key, device):
        self.key = key
        self.prefix = b"edge-ack/1\n" + device.encode() + b"\n"

    def pairs(self, payload):
        """The number of (first, last) pairs when the ack is well formed and its tag is right,
        else -1. last(payload, i) reads pair i."""
        n = len(payload)
        if n < 4 + _PAIR + _TAG or payload[0] != _MAGIC0 or payload[1] != _MAGIC1:
            return -1
        count = payload[3]
        if payload[2] != _VERSION or not 0 < count <= MAX_PAIRS or n != 4 + count * _PAIR + _TAG:
            return -1
        mac = hmac_sha256(self.key, self.prefix + bytes(payload[: n - _TAG]))
        if not equal(mac[:_TAG], payload[n - _TAG :]):
            return -1
        return count


def ack_last_low(payload, i):
    """The low 32 bits of pair i's last seq (the forwarder's ring keeps low bits, FORMAT.md 1)."""
    p = 4 + i * _PAIR + 12
    return (payload[p] << 24) | (payload[p + 1] << 16) | (payload[p + 2] << 8) | payload[p + 3]


def sign_receipt(key, device, body):
    """body: a receipt's JSON object as bytes. Returns it with `"sig"` (hex HMAC-SHA256 over
    "edge-receipt/1\\n" + device + "\\n" + body) added as its last member (docs/CONSENT.md 6)."""
    mac = hmac_sha256(key, b"edge-receipt/1\n" + device.encode() + b"\n" + body)
    hexsig = "".join(["%02x" % b for b in mac])
    return body[:-1] + b',"sig":"' + hexsig.encode() + b'"}'
