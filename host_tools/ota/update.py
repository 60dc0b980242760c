"""`edgectl update DEVICE BUNDLE` and `edgectl config DEVICE --set K=V`: publish, follow the
device's replies with a progress bar, report the outcome (docs/OTA.md sections 7-9).

An update publishes the bundle retained in chunks on `{prefix}/{device}/ota/{sha256[:16]}/{i}`,
sends `cmd/update`, then follows `reply/update`: accepted, downloading (offsets), installed,
and after the device's reboot confirmed or rolled_back (or refused, with the reason). The chunks
are cleared afterwards (empty retained publishes) unless `--keep`. `--devices` rolls one bundle
out to many devices in waves and stops when too many of a wave fail.
"""

from __future__ import annotations

import argparse
import json
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from host_tools.backend import connect as conn_mod
from host_tools.errors import ToolError
from host_tools.ota.release import read_bundle
from host_tools import argtypes

FINAL = ("confirmed", "rolled_back", "refused", "failed", "unchanged", "cancelled")


@dataclass
class Outcome:
    """How one device's update or config change ended."""

    device: str
    state: str
    error: str | None = None
    version: str | None = None
    config_hash: str | None = None
    seconds: float = 0.0
    bytes_published: int = 0
    replies: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.state in ("confirmed", "unchanged")


class Replies:
    """One connection that follows `reply/{name}` of one or more devices."""

    def __init__(self, opts: conn_mod.ConnectOptions, prefix: str, devices: list[str], name: str):
        self.prefix = prefix
        self.name = name
        self.queues: dict[str, queue.Queue] = {d: queue.Queue() for d in devices}

        def subscribe(c: conn_mod.Connection) -> None:
            for d in devices:
                c.client.subscribe(f"{prefix}/{d}/reply/{name}", qos=1)

        self.conn = conn_mod.connect(opts, name, on_connect=subscribe, on_message=self._on_message)

    def _on_message(self, client, userdata, msg) -> None:
        parts = msg.topic.split("/")
        if len(parts) < 2 or parts[1] not in self.queues:
            return
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(doc, dict):
            self.queues[parts[1]].put(doc)

    def next(self, device: str, want_id: str, timeout: float) -> dict | None:
        """The next reply of `device` carrying `want_id`, or None after `timeout`."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            try:
                doc = self.queues[device].get(timeout=left)
            except queue.Empty:
                return None
            if doc.get("id") == want_id:
                return doc

    def close(self) -> None:
        self.conn.close()


def follow(
    replies: Replies,
    device: str,
    cid: str,
    out: Outcome,
    end: float,
    timeout: float,
    on_reply=None,
) -> None:
    """Collect the device's replies to command `cid` into `out` until a final state, a
    refusal or the deadline `end` (time.monotonic()); on_reply(doc) sees each one."""
    while True:
        r = replies.next(device, cid, end - time.monotonic())
        if r is None:
            out.error = f"no outcome within {timeout:g} s (last state: {out.state})"
            out.state = "timeout"
            return
        out.replies.append(r)
        out.state = r.get("state") or ("refused" if not r.get("ok") else "?")
        out.config_hash = r.get("config_hash") or out.config_hash
        if on_reply:
            on_reply(r)
        if not r.get("ok"):
            out.error = r.get("error", "refused")
            if out.state not in FINAL:
                out.state = "refused"
            return
        if out.state in FINAL:
            return


def chunk_base(prefix: str, device: str, sha256: str) -> str:
    return f"{prefix}/{device}/ota/{sha256[:16]}"


def publish_chunks(
    conn: conn_mod.Connection, base: str, data: bytes, chunk: int, clear: bool = False
) -> int:
    """Publish the bundle retained, one chunk per topic (or clear them); returns bytes sent."""
    infos = []
    sent = 0
    for i in range(0, (len(data) + chunk - 1) // chunk):
        payload = b"" if clear else data[i * chunk : (i + 1) * chunk]
        infos.append(conn.publish(f"{base}/{i}", payload, qos=1, retain=True))
        sent += len(payload)
    for info in infos:
        info.wait_for_publish(30)
        if not info.is_published():
            raise ToolError(f"the broker at {conn.opts.where} did not take chunk {base}")
    return sent


def update_device(
    opts: conn_mod.ConnectOptions,
    device: str,
    bundle_path: Path,
    prefix: str = "edge",
    chunk: int = 1024,
    downgrade: bool = False,
    timeout: float = 300.0,
    keep: bool = False,
    progress=None,
) -> Outcome:
    """Update one device and wait for the outcome. progress(offset, size, state) is called on
    every reply."""
    m = read_bundle(bundle_path)
    data = bundle_path.read_bytes()
    t0 = time.monotonic()
    out = Outcome(device, "timeout", version=m["version"])
    replies = Replies(opts, prefix, [device], "update")
    base = chunk_base(prefix, device, m["sha256"])
    try:
        out.bytes_published = publish_chunks(replies.conn, base, data, chunk)
        cid = "u-" + secrets.token_hex(4)
        cmd = {
            "id": cid,
            "version": m["version"],
            "size": m["size"],
            "sha256": m["sha256"],
            "topic": base,
            "chunk": chunk,
        }
        if downgrade:
            cmd["downgrade"] = True
        replies.conn.publish_checked(f"{prefix}/{device}/cmd/update", json.dumps(cmd))
        on_reply = None
        if progress:

            def on_reply(doc: dict) -> None:
                progress(doc.get("offset", 0), doc.get("size", m["size"]), out.state)

        follow(replies, device, cid, out, t0 + timeout, timeout, on_reply)
    finally:
        if not keep:
            try:
                publish_chunks(replies.conn, base, data, chunk, clear=True)
            except ToolError:
                pass
        replies.close()
    out.seconds = time.monotonic() - t0
    return out


def _one(opts, device: str, bundle_path: Path, kw: dict, got: dict) -> None:
    try:
        got[device] = update_device(opts, device, bundle_path, **kw)
    except ToolError as e:
        got[device] = Outcome(device, "failed", error=str(e))


def rollout(
    opts: conn_mod.ConnectOptions,
    devices: list[str],
    bundle_path: Path,
    wave: int,
    max_failure_rate: float,
    log=print,
    **kw,
) -> list[Outcome]:
    """Update devices in waves (each wave in parallel); stop after a wave whose failure rate
    exceeds `max_failure_rate`. Devices not reached are reported as `skipped`."""
    results: list[Outcome] = []
    for start in range(0, len(devices), wave):
        group = devices[start : start + wave]
        got: dict[str, Outcome] = {}
        threads = [
            threading.Thread(target=_one, args=(opts, d, bundle_path, kw, got)) for d in group
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        batch = [got[d] for d in group]
        results += batch
        failed = sum(1 for o in batch if not o.ok)
        log(f"wave {start // wave + 1}: {len(batch) - failed} ok, {failed} failed")
        if failed / len(batch) > max_failure_rate:
            results += [Outcome(d, "skipped") for d in devices[start + wave :]]
            log(f"stopping the rollout: {failed} of {len(batch)} failed in this wave")
            break
    return results


def parse_sets(sets: list[str]) -> dict:
    """`a.b=V` pairs -> a nested partial config; V is JSON when it parses, else a string."""
    out: dict = {}
    for item in sets:
        key, eq, raw = item.partition("=")
        if not eq or not key or any(not p for p in key.split(".")):
            raise ToolError(f"--set wants KEY=VALUE with a dotted key, got {item!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ToolError(f"--set {item!r} conflicts with another --set")
            node = nxt
        node[parts[-1]] = value
    return out


def config_device(
    opts: conn_mod.ConnectOptions,
    device: str,
    partial: dict | None,
    prefix: str = "edge",
    keys: list[str] | None = None,
    timeout: float = 120.0,
) -> Outcome:
    """Send cmd/config (partial) or cmd/config/get (partial None) and wait for the outcome."""
    t0 = time.monotonic()
    out = Outcome(device, "timeout")
    replies = Replies(opts, prefix, [device], "config")
    get = Replies(opts, prefix, [device], "config/get") if partial is None else None
    try:
        cid = "c-" + secrets.token_hex(4)
        if partial is None:
            doc = {"id": cid, **({"keys": keys} if keys else {})}
            replies.conn.publish_checked(f"{prefix}/{device}/cmd/config/get", json.dumps(doc))
            assert get is not None
            r = get.next(device, cid, timeout)
            if r is None:
                out.error = f"no reply within {timeout:g} s"
                return out
            out.replies.append(r)
            out.state = "ok" if r.get("ok") else "refused"
            out.error = r.get("error")
            out.config_hash = r.get("config_hash")
            return out
        replies.conn.publish_checked(
            f"{prefix}/{device}/cmd/config", json.dumps({"id": cid, **partial})
        )
        follow(replies, device, cid, out, t0 + timeout, timeout)
    finally:
        replies.close()
        if get is not None:
            get.close()
        out.seconds = time.monotonic() - t0
    return out


def _report(o: Outcome) -> str:
    what = f"{o.device}: {o.state}"
    if o.version:
        what += f" ({o.version})"
    if o.config_hash:
        what += f", config hash {o.config_hash}"
    if o.error:
        what += f": {o.error}"
    return what + f" in {o.seconds:.1f} s"


def cmd_update(args: argparse.Namespace) -> int:
    """CLI handler: one device with a progress bar, or a rollout with --devices."""
    opts = conn_mod.options_from_args(args)
    path = Path(args.bundle)
    kw = dict(
        prefix=args.prefix,
        chunk=args.chunk,
        downgrade=args.downgrade,
        timeout=args.timeout,
        keep=args.keep,
    )
    if args.devices:
        devices = [d for d in args.devices.split(",") if d]
        if args.device:
            devices.insert(0, args.device)
        results = rollout(opts, devices, path, args.wave, args.max_failure_rate, **kw)
        for o in results:
            print(_report(o))
        return 0 if all(o.ok for o in results) else 1
    if not args.device:
        raise ToolError("update needs DEVICE (or --devices D1,D2,...)")
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), transient=True
    ) as bar:
        task = bar.add_task(f"{args.device}: publishing", total=path.stat().st_size)

        def progress(offset: int, size: int, state: str) -> None:
            done = size if state not in ("accepted", "downloading") else offset
            bar.update(task, completed=done, total=size, description=f"{args.device}: {state}")

        o = update_device(opts, args.device, path, progress=progress, **kw)
    print(_report(o))
    return 0 if o.ok else 1


def cmd_config(args: argparse.Namespace) -> int:
    """CLI handler: --set K=V (a config change, trial and confirm) or --get [KEY ...]."""
    opts = conn_mod.options_from_args(args)
    if args.get is not None:
        o = config_device(opts, args.device, None, args.prefix, args.get or None, args.timeout)
        if o.state != "ok":
            raise ToolError(f"{args.device}: {o.error or o.state}")
        r = o.replies[-1]
        print(json.dumps(r.get("config"), indent=1, sort_keys=True))
        print(f"config hash {r.get('config_hash')} ({r.get('file')})")
        return 0
    if not args.set:
        raise ToolError("config needs --set KEY=VALUE (one or more) or --get")
    o = config_device(opts, args.device, parse_sets(args.set), args.prefix, None, args.timeout)
    print(_report(o))
    return 0 if o.ok else 1


def _device_list(text: str) -> str:
    """`--devices a,b,c`: device ids, each one topic level (docs/MQTT.md section 1)."""
    for dev in text.split(","):
        argtypes.device_id(dev.strip())
    return text


def _chunk(text: str) -> int:
    """`--chunk`: bytes per retained chunk, 256..1536 (what the agent's buffer takes)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes") from None
    if not 256 <= n <= 1536:
        raise argparse.ArgumentTypeError(f"{n} is outside 256..1536")
    return n


_chunk.number = True  # type: ignore[attr-defined]


def register(sub: argparse._SubParsersAction) -> None:
    """Add `edgectl update` and `edgectl config`."""
    p = sub.add_parser("update", help="update a device's agent over MQTT with a signed bundle")
    p.add_argument("device", nargs="?", type=argtypes.device_id, help="device id")
    p.add_argument("bundle", type=argtypes.input_file, help="bundle from edgectl release")
    p.add_argument(
        "--devices", type=_device_list, help="comma-separated device ids: a rollout in waves"
    )
    p.add_argument(
        "--wave", type=argtypes.positive_int, default=5, help="devices updated at once (rollout)"
    )
    p.add_argument(
        "--max-failure-rate",
        type=argtypes.fraction,
        default=0.2,
        help="stop the rollout after a wave with more failures than this fraction",
    )
    p.add_argument(
        "--prefix", type=argtypes.name, default="edge", help="topic prefix (mqtt.prefix)"
    )
    p.add_argument("--chunk", type=_chunk, default=1024, help="bytes per chunk (256..1536)")
    p.add_argument("--downgrade", action="store_true", help="allow an older release")
    p.add_argument(
        "--timeout", type=argtypes.seconds, default=300, help="seconds to wait per device"
    )
    p.add_argument("--keep", action="store_true", help="leave the retained chunks published")
    conn_mod.add_arguments(p)
    p.set_defaults(func=cmd_update)
    c = sub.add_parser("config", help="change (--set) or read (--get) a device's config")
    c.add_argument("device", type=argtypes.device_id, help="device id")
    c.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        type=argtypes.key_value,
        help="dotted key, JSON value",
    )
    c.add_argument("--get", nargs="*", metavar="KEY", help="print the effective config")
    c.add_argument(
        "--prefix", type=argtypes.name, default="edge", help="topic prefix (mqtt.prefix)"
    )
    c.add_argument("--timeout", type=argtypes.seconds, default=120, help="seconds to wait")
    conn_mod.add_arguments(c)
    c.set_defaults(func=cmd_config)
