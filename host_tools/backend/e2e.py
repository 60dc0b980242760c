"""End-to-end acknowledgements and signed receipts: the host side of docs/MQTT.md section 8.

A QoS 1 PUBACK only proves that the broker had a batch; a device configured with
`mqtt.e2e_ack: true` keeps every batch until the collector acknowledges it on
`{prefix}/{device}/ack` after the database commit (docs/MQTT.md section 4).

With a per-device backend key (device config `backend.key` / `backend.key_file`, collector
`--device-keys`), the acknowledgement carries an HMAC-SHA256 tag over the device id and its
bytes, so another login cannot forge one and make a device delete unsent readings; and the
device signs its consent receipts with the same key, so the collector can trust what a receipt
says (docs/CONSENT.md section 6).
"""

from __future__ import annotations

import hmac
import re
import struct

from edge import codec
from host_tools.backend.connect import read_json
from host_tools.errors import ToolError

ACK_MAGIC = b"EA"
ACK_VERSION = 1
ACK_TAG_LEN = 16  # HMAC-SHA256 truncated to its first 128 bits (RFC 2104 section 5)
ACK_MAX_PAIRS = 32
_ACK_DOMAIN = b"edge-ack/1\n"
_RECEIPT_DOMAIN = b"edge-receipt/1\n"
_SIG_TAIL = re.compile(rb',"sig":"([0-9a-f]{64})"\}\Z')
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def ack_payload(first_seq: int, last_seq: int) -> bytes:
    """An unauthenticated acknowledgement (device without a backend key): the low 32 bits of
    the first and last seq, u32 big-endian each (docs/FORMAT.md 1: the device matches them
    against its batches in flight, which never lie 2^32 seqs apart)."""
    return struct.pack(">II", first_seq & codec.SEQ_LOW, last_seq & codec.SEQ_LOW)


def signed_ack(device: str, pairs: list[tuple[int, int]], key: bytes) -> bytes:
    """`EA` | version | n | n x (first u64, last u64) big-endian, whole 48-bit seqs | 16-byte
    tag = HMAC-SHA256(key, "edge-ack/1\\n" + device + "\\n" + every byte before the tag)[:16]."""
    if not 0 < len(pairs) <= ACK_MAX_PAIRS:
        raise ValueError(f"an acknowledgement holds 1..{ACK_MAX_PAIRS} pairs")
    body = ACK_MAGIC + bytes((ACK_VERSION, len(pairs)))
    body += b"".join(struct.pack(">QQ", a, b) for a, b in pairs)
    tag = hmac.new(key, _ACK_DOMAIN + device.encode() + b"\n" + body, "sha256").digest()
    return body + tag[:ACK_TAG_LEN]


def verify_ack(device: str, payload: bytes, key: bytes) -> list[tuple[int, int]] | None:
    """The pairs of a signed acknowledgement, or None when it is malformed or its tag is
    wrong (the reference the device's check is tested against)."""
    if len(payload) < 4 + 16 + ACK_TAG_LEN or payload[:2] != ACK_MAGIC:
        return None
    n = payload[3]
    if payload[2] != ACK_VERSION or not 0 < n <= ACK_MAX_PAIRS:
        return None
    if len(payload) != 4 + 16 * n + ACK_TAG_LEN:
        return None
    body, tag = payload[:-ACK_TAG_LEN], payload[-ACK_TAG_LEN:]
    want = hmac.new(key, _ACK_DOMAIN + device.encode() + b"\n" + body, "sha256").digest()
    if not hmac.compare_digest(want[:ACK_TAG_LEN], tag):
        return None
    return [struct.unpack_from(">QQ", body, 4 + 16 * i) for i in range(n)]


def sign_receipt(device: str, receipt_json: bytes, key: bytes) -> bytes:
    """The device's signing rule (docs/CONSENT.md 6), for tests and simulated devices:
    `J` without its closing brace, then `,"sig":"<hex HMAC-SHA256(key, "edge-receipt/1\\n" +
    device + "\\n" + J)>"}`."""
    if not receipt_json.endswith(b"}"):
        raise ValueError("a receipt is a JSON object")
    mac = hmac.new(key, _RECEIPT_DOMAIN + device.encode() + b"\n" + receipt_json, "sha256")
    return receipt_json[:-1] + b',"sig":"' + mac.hexdigest().encode() + b'"}'


def verify_receipt(device: str, payload: bytes, key: bytes) -> str:
    """ "ok", "unsigned" or "bad_signature": the signature is over the exact bytes the device
    sent, so no canonical JSON is needed on either side."""
    m = _SIG_TAIL.search(payload)
    if m is None:
        return "unsigned"
    signed = payload[: m.start()] + b"}"
    want = hmac.new(key, _RECEIPT_DOMAIN + device.encode() + b"\n" + signed, "sha256")
    return "ok" if hmac.compare_digest(want.hexdigest().encode(), m.group(1)) else "bad_signature"


def load_device_keys(path: str) -> dict[str, bytes]:
    """`{"device id": "<hex key>", ...}` as `edgectl provision` writes
    `backend/device_keys.json`; each key at least 16 bytes."""
    doc = read_json(path, "device keys")
    if not isinstance(doc, dict):
        raise ToolError(f"device keys {path} must be a JSON object of device id -> hex key")
    keys = {}
    for dev, text in doc.items():
        if not _ID.match(dev):
            raise ToolError(f"device keys {path}: {dev[:70]!r} is not a device id")
        try:
            key = bytes.fromhex(text) if isinstance(text, str) else b""
        except ValueError:
            key = b""
        if len(key) < 16:
            raise ToolError(f"device keys {path}: the key of {dev} must be >= 32 hex digits")
        keys[dev] = key
    return keys
