"""`edgectl consent DEVICE --grant usage --deny marketing [--key FILE]`: publish the next
consent version (retained), wait for the device's receipt, print what it now enforces
(docs/CONSENT.md).

The signed bytes follow docs/CONSENT.md section 4 and come from edge/wire.py, the module the
device verifies with (golden vectors: tests/vectors/wire.json).
"""

from __future__ import annotations

import binascii
import json
import threading
import time

from edge import wire
from host_tools.backend import connect as conn_mod
from host_tools.backend.connect import ConnectOptions
from host_tools.errors import ToolError
from host_tools import argtypes

_RETAINED_WAIT_S = 0.5


def load_key(path: str) -> bytes:
    """Read a per-device key file: hex digits (at least 32), whitespace ignored."""
    try:
        with open(path, "rb") as f:
            raw = f.read(4096)
    except OSError as e:
        raise ToolError(f"cannot read key file {path}: {e}") from e
    try:
        key = binascii.unhexlify(b"".join(raw.split()))
    except (binascii.Error, ValueError) as e:
        raise ToolError(f"key file {path} must hold hex digits: {e}") from e
    if len(key) < 16:
        raise ToolError(f"key file {path}: the key must be at least 16 bytes (32 hex digits)")
    return key


def sign(device: str, doc: dict, key: bytes) -> dict:
    """Return doc with its `sig`: hex HMAC-SHA256 over the canonical bytes (edge/wire.py, the
    same code the device verifies with)."""
    out = dict(doc)
    out["sig"] = wire.consent_sig(key, device, doc)
    return out


def make_update(
    device: str,
    version: int,
    grant: list[str],
    deny: list[str],
    key: bytes | None = None,
    ts: int | None = None,
    rebase: bool = False,
) -> dict:
    """A consent update document (signed when a key is given). rebase: a recovery update that
    sets `version` even when the device holds a higher one (docs/CONSENT.md 4)."""
    doc: dict = {
        "version": version,
        "grant": sorted(grant),
        "deny": sorted(deny),
        "ts": int(time.time() * 1000) if ts is None else ts,
    }
    if rebase:
        doc["rebase"] = True
    return sign(device, doc, key) if key else doc


class _Session:
    """A connection that watches one device's receipt, consent replies and retained update."""

    def __init__(self, opts: ConnectOptions, prefix: str, device: str) -> None:
        self.root = f"{prefix}/{device}/"
        self.lock = threading.Condition()
        self.receipt: dict | None = None
        self.retained_version = 0
        self.replies: list[dict] = []
        self.receipt_topic = self.root + wire.T_RECEIPT
        self.cmd_topic = f"{self.root}{wire.T_CMD}/consent"
        topics = (self.receipt_topic, f"{self.root}{wire.T_REPLY}/consent", self.cmd_topic)
        self.conn = conn_mod.connect(
            opts,
            "consent",
            on_message=self._on_message,
            subscriptions=[(t, 1) for t in topics],
        )
        self.client = self.conn.client

    def _on_message(self, client, userdata, msg) -> None:
        try:
            doc = json.loads(msg.payload) if msg.payload else None
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            return
        with self.lock:
            if msg.topic == self.receipt_topic:
                self.receipt = doc
            elif msg.topic == self.cmd_topic:
                v = doc.get("version")
                if isinstance(v, int):
                    self.retained_version = max(self.retained_version, v)
            else:
                self.replies.append(doc)
            self.lock.notify_all()

    def wait(self, predicate, timeout: float):
        with self.lock:
            self.lock.wait_for(predicate, timeout)
            return predicate()

    def close(self) -> None:
        self.conn.close()


def update(
    device: str,
    grant: list[str],
    deny: list[str],
    key: bytes | None = None,
    opts: ConnectOptions | None = None,
    prefix: str = "edge",
    version: int | None = None,
    timeout: float = 10.0,
    rebase: bool = False,
) -> dict:
    """Publish the next consent version for a device (retained) and return its receipt.
    Raises ToolError when the device rejects it or no receipt arrives in time."""
    if rebase and (version is None or key is None):
        raise ToolError("--rebase needs --version and --key (a recovery must be signed)")
    if set(grant) & set(deny):
        raise ToolError(
            f"a category cannot be granted and denied: {sorted(set(grant) & set(deny))}"
        )
    s = _Session(opts or ConnectOptions(), prefix, device)
    try:
        s.wait(lambda: False, _RETAINED_WAIT_S)  # retained receipt and update, if any
        if version is None:
            version = max(s.retained_version, (s.receipt or {}).get("version", 0)) + 1
        doc = make_update(device, version, grant, deny, key, rebase=rebase)
        # a refused publish (MQTT 5 reason code, e.g. the ACL) is a failure, not a wait
        s.conn.publish_checked(s.cmd_topic, json.dumps(doc), retain=True)

        def done() -> bool:
            bad = [
                r for r in s.replies if not r.get("ok") and r.get("version", version) == version
            ]
            return bool(bad) or (s.receipt or {}).get("version") == version

        if not s.wait(done, timeout):
            raise ToolError(
                f"no receipt from {device} within {timeout:g} s; the update is "
                f"retained and applies when the device connects"
            )
        bad = [r for r in s.replies if not r.get("ok")]
        if (s.receipt or {}).get("version") != version and bad:
            raise ToolError(f"{device} rejected consent v{version}: {bad[-1].get('error')}")
        return dict(s.receipt or {})
    finally:
        s.close()


def format_receipt(r: dict) -> str:
    """Human-readable lines of what a receipt says the device enforces."""
    lines = [
        f"device {r.get('device')} enforces consent v{r.get('version')} "
        f"(source {r.get('source')}, from seq {r.get('seq')})"
    ]
    purged = r.get("purged") or {}
    grants = r.get("grants") or {}
    for cat in sorted(grants, key=lambda c: (c != "essential", c)):
        on = grants[cat]
        extra = f", purged {purged[cat]} unsent readings" if cat in purged else ""
        lines.append(f"  {cat:<12} {'granted' if on else 'denied'}{extra}")
    return "\n".join(lines)


def cmd_consent(args) -> int:
    if not args.grant and not args.deny:
        raise ToolError("consent needs at least one --grant CATEGORY or --deny CATEGORY")
    key = load_key(args.key) if args.key else None
    r = update(
        args.device,
        args.grant,
        args.deny,
        key,
        conn_mod.options_from_args(args),
        args.prefix,
        args.version,
        args.timeout,
        args.rebase,
    )
    print(json.dumps(r) if args.json else format_receipt(r))
    return 0


def register(sub) -> None:
    p = sub.add_parser("consent", help="publish a consent update and wait for the receipt")
    p.add_argument("device", type=argtypes.device_id)
    p.add_argument("--grant", action="append", default=[], type=argtypes.name, metavar="CATEGORY")
    p.add_argument("--deny", action="append", default=[], type=argtypes.name, metavar="CATEGORY")
    p.add_argument(
        "--key",
        type=argtypes.input_file,
        help="file with the device's update key (hex); signs the update",
    )
    p.add_argument(
        "--version", type=argtypes.positive_int, help="version to publish (default: the next one)"
    )
    p.add_argument(
        "--rebase",
        action="store_true",
        help="recovery: set --version even below the device's (signed only, docs/CONSENT.md 4)",
    )
    p.add_argument("--prefix", type=argtypes.name, default="edge")
    conn_mod.add_arguments(p)
    p.add_argument(
        "--timeout", type=argtypes.seconds, default=10.0, help="seconds to wait for the receipt"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_consent)
