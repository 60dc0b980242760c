"""`edgectl replay FILE --agent BOARD`: the real agent under unix MicroPython reads the capture
through its UART HAL with a virtual clock (edge/hal/unix/replay.py, replay_main.py; Modbus
inputs are served per request, replay_serve.py), forwards to a loopback broker, and the
collector's readings are summarised, hashed and optionally compared with a golden file; the
summary says why a replay produced no readings (docs/REPLAY.md 3).
"""

from __future__ import annotations

import datetime as _dt
import difflib
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass

from edge import wire
from host_tools.agent.run import AgentProcess, agent_config
from host_tools.backend import broker as broker_mod
from host_tools.backend.collect import Collector
from host_tools.captures import capfile, modbus_capture
from host_tools.captures.frames import FrameCounter
from host_tools.captures.replay import ReplayResult, progress_bar
from host_tools.errors import ToolError

DIFF_LINES = 40
DEFAULT_DEVICE = "replay-0001"


class ReplayAgentProcess(AgentProcess):
    """The agent with the replay HAL and the virtual-clock driver."""

    module = "edge.hal.unix.replay_main"

    def replay_doc(self) -> dict:
        """The `@replay` line the driver prints at the end (edge/hal/unix/replay_main.py):
        virtual time, input counters and byte ledgers, the Modbus serve counters."""
        for line in reversed(self.output):
            if line.startswith("@replay "):
                return json.loads(line[8:])
        return {}


REPLAY_FLUSH_MS = 600000  # virtual ms


def write_feed(path: str, items: list[tuple[int, bytes]]) -> int:
    """Write the feed file the replay HAL reads (format in edge/hal/unix/replay.py); returns the
    timestamp of the last record in ms."""
    last = 0
    with open(path, "wb") as f:
        for due_us, data in items:
            last = due_us // 1000
            f.write(wire.feed_records(last, data))
    return last


def wall0_ms(meta: dict, t_from: float | None) -> int:
    """Unix ms of the replayed range's start: the capture's `started` plus --from."""
    started = meta.get("started")
    try:
        when = _dt.datetime.fromisoformat(str(started).replace("Z", "+00:00"))
    except ValueError:
        when = _dt.datetime(2000, 1, 1, tzinfo=_dt.timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return int(when.timestamp() * 1000) + int((t_from or 0) * 1000)


@dataclass
class AgentReplayOptions:
    """What `edgectl replay FILE --agent BOARD` asks of run(), one field per CLI flag."""

    board: str  # --agent: the board whose config defaults the device config goes over
    capture: str  # the (first) capture file: its sidecar NAME.agent.json is the default config
    config: str | None = None  # --config DEVICE.json
    framing: str = "auto"  # --framing: how frames are counted
    t_from_s: float | None = None  # --from, in capture seconds
    t_to_s: float | None = None  # --to
    grant: str = "all"  # --grant: consent before the run ("all", "none" or categories)
    heap: str | None = None  # --heap: MicroPython heap
    timeout: float = 600.0  # --timeout: give up after this many seconds
    collector_out: str | None = None  # --collector-out FILE
    expect: str | None = None  # --expect GOLDEN.json
    update_golden: bool = False  # --update-golden


def device_config(path: str | None, capture: str) -> dict:
    """The device config: `path` (--config), else the capture's sidecar `NAME.agent.json`."""
    if path is None:
        root = capture[: -len(".ecap")] if capture.endswith(".ecap") else capture
        path = root + ".agent.json"
        if not os.path.exists(path):
            raise ToolError(f"--agent needs --config DEVICE.json (no sidecar {path})")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ToolError(f"cannot read device config {path}: {e}") from None


def feed_inputs(cfg: dict, feed: str, serve: str | None = None) -> dict:
    """Point every UART input at the capture: line and Tuya inputs read the feed file (the rx
    bytes at their times), Modbus inputs the serve file (exchanges answered per request)."""
    inputs = cfg.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ToolError("device config has no 'inputs' to feed the capture into")
    out = []
    hit = False
    for spec in inputs:
        spec = dict(spec)
        if spec.get("type") in ("line", "tuya", "modbus"):
            ref = spec.get("uart")
            base = {"name": ref} if isinstance(ref, str) else dict(ref or {})
            if spec["type"] == "modbus" and serve is not None:
                spec["uart"] = {**base, "serve": serve}
            else:
                spec["uart"] = {**base, "feed": feed}
            hit = True
        out.append(spec)
    if not hit:
        raise ToolError("device config has no UART input (line, tuya or modbus)")
    return {**cfg, "inputs": out}


def has_modbus(cfg: dict) -> bool:
    return any(s.get("type") == "modbus" for s in cfg.get("inputs") or () if isinstance(s, dict))


def consent_state(cfg: dict, grant: str) -> dict:
    """The consent state the replay HAL writes before the agent boots (edge/consent.py
    format): `grant` is "all", "none" or a comma list of categories."""
    cats = sorted(
        (cfg.get("categories") or {}) or {c.get("category") for c in cfg.get("channels", [])}
    )
    if grant == "all":
        chosen = set(cats)
    elif grant == "none":
        chosen = set()
    else:
        chosen = {c.strip() for c in grant.split(",") if c.strip()}
        unknown = chosen - set(cats)
        if unknown:
            raise ToolError(f"--grant: unknown categories {', '.join(sorted(unknown))}")
    # a fixed salt keeps pseudonymised values equal across runs
    return wire.consent_state(1, {c: c in chosen for c in cats}, "replay", "00" * 16)


def _stamp(ts: int) -> str:
    when = _dt.datetime.fromtimestamp(ts / 1000, _dt.timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def reading_lines(readings: list[list]) -> list[str]:
    """One readable line per reading, in (channel, time) order: channel, ISO time, category,
    value, then the seq (shown, but not what a golden diff compares)."""
    return [f"{_key_line(r)}  seq {r[0]}" for r in _by_channel_time(readings)]


def _by_channel_time(readings: list[list]) -> list[list]:
    return sorted(readings, key=lambda r: (r[3], r[1], r[2], r[4], r[0]))


def _key_line(r: list) -> str:
    _seq, ts, cat, ch, val = r
    return f"ch{ch} {_stamp(ts)} {cat} = {val}"


def digest(readings: list[list]) -> str:
    """SHA-256 over the canonical JSON of the sorted readings."""
    blob = json.dumps(sorted(readings), separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def golden_doc(device: str, readings: list[list]) -> dict:
    """What `--expect` compares and `--update-golden` writes."""
    return {
        "device": device,
        "count": len(readings),
        "digest": digest(readings),
        "readings": readings,
    }


def compare_golden(path: str, doc: dict) -> list[str]:
    """Empty when equal; else a summary and a diff of the readings keyed on (channel, time),
    each line with its seq: one reading missing is one line of diff, however many later seqs
    moved (docs/REPLAY.md section 5)."""
    try:
        with open(path, encoding="utf-8") as f:
            want = json.load(f)
    except (OSError, ValueError) as e:
        raise ToolError(f"cannot read golden file {path}: {e}") from None
    if not isinstance(want, dict) or not isinstance(want.get("readings"), list):
        raise ToolError(f"golden file {path} has no `readings` list (write one: --update-golden)")
    if want.get("digest") == doc["digest"] and want.get("device") == doc["device"]:
        return []
    try:
        old = _by_channel_time(want["readings"])
        old_keys = [_key_line(r) for r in old]
    except (TypeError, ValueError) as e:
        raise ToolError(
            f"golden file {path}: a reading is not [seq, ts, category, ch, value]: {e}"
        ) from None
    new = _by_channel_time(doc["readings"])
    new_keys = [_key_line(r) for r in new]
    head = [
        f"collector output differs from {path}: golden {len(old)} readings, this run {len(new)}"
    ]
    if want.get("device") != doc["device"]:
        head.append(f"device: golden {want.get('device')!r}, this run {doc['device']!r}")
    diff = [f"--- {path} (golden)", "+++ collector (this run)"]
    matcher = difflib.SequenceMatcher(None, old_keys, new_keys, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        diff += [f"-{old_keys[i]}  seq {old[i][0]}" for i in range(i1, i2)]
        diff += [f"+{new_keys[j]}  seq {new[j][0]}" for j in range(j1, j2)]
    if len(diff) == 2:
        # the same readings at the same times: only their seq numbers differ
        moved = sum(1 for a, b in zip(old, new, strict=True) if a[0] != b[0])
        return head + [f"the same readings; {moved} of them have other seq numbers"]
    if len(diff) > DIFF_LINES:
        diff = diff[:DIFF_LINES] + [f"... {len(diff) - DIFF_LINES} more diff lines"]
    return head + diff


def run(
    opts: AgentReplayOptions,
    meta: dict,
    items: list[tuple[int, bytes]],
    chunks: list[capfile.Chunk] | None = None,
) -> tuple[ReplayResult, int]:
    """Replay `items` into the agent (Modbus inputs: the exchanges of `chunks`, both
    directions); returns the summary (frames, readings, digest, inputs, why none...) and the
    exit code (1: the collector output differs from the golden file)."""
    t_start = time.monotonic()
    exit_code = 0
    device = device_config(opts.config, opts.capture)
    device.setdefault("device_id", DEFAULT_DEVICE)
    # what can be refused is refused before a broker and an agent start
    consent_state(agent_config(opts.board, device), opts.grant)
    if opts.expect and not opts.update_golden:
        compare_golden(opts.expect, golden_doc(device["device_id"], []))
    counter = FrameCounter(opts.framing)
    for _, data in items:
        counter.feed(data)
    parsed = None
    if has_modbus(device):
        lo = int((opts.t_from_s or 0) * 1e6)
        hi = None if opts.t_to_s is None else int(opts.t_to_s * 1e6)
        parsed = modbus_capture.from_chunks(chunks or [], meta, lo, hi)
    with tempfile.TemporaryDirectory(prefix="edge-replay-") as tmp:
        feed = os.path.join(tmp, "feed.bin")
        span_ms = write_feed(feed, items)
        serve = None
        if parsed is not None:
            serve = os.path.join(tmp, "serve.bin")
            base = parsed.exchanges[0].t_ms if parsed.exchanges else 0
            modbus_capture.write_serve(serve, parsed, base)
        with broker_mod.start() as b:
            col = Collector(b.host, b.port, device.get("mqtt", {}).get("prefix", "edge")).start()
            try:
                cfg = agent_config(
                    opts.board,
                    feed_inputs(device, feed, serve),
                    mqtt={"host": b.host, "port": b.port},
                )
                # A replay has no power cuts, so the commit window only costs time: commit by
                # count (flush_n) rather than every virtual second, unless the device config
                # sets its own window. The readings, seqs and timestamps are the same either
                # way (the digest does not change); a 24 h capture replays ~2x faster.
                cfg.setdefault("store", {})
                if "flush_ms" not in device.get("store", {}):
                    cfg["store"]["flush_ms"] = REPLAY_FLUSH_MS
                # the summary shows health's per-input counters: they are in the full status
                # document only (docs/HEALTH.md 1.3), so a replay asks for it unless told not to
                if "status_detail" not in device:
                    cfg["status_detail"] = "full"
                cfg["replay"] = {
                    "wall0_ms": wall0_ms(meta, opts.t_from_s),
                    "max_step_ms": 1000,
                    "consent": consent_state(cfg, opts.grant),
                }
                agent = ReplayAgentProcess(cfg, heap=opts.heap, workdir=os.path.join(tmp, "agent"))
                os.makedirs(agent.workdir, exist_ok=True)
                agent.start()
                try:
                    wait_showing_progress(
                        agent, col, cfg["replay"]["wall0_ms"], span_ms, opts.timeout
                    )
                finally:
                    agent.stop()
                replay_doc = agent.replay_doc()
                acked = (agent.final or {}).get("acked", 0)
                if not col.wait_for(lambda c: c.stats()["unique"] >= acked, 10):
                    raise ToolError(f"collector got {col.stats()['unique']} of {acked} readings")
                # the agent's last status ("stopped"): what health showed about the inputs
                col.wait_for(
                    lambda c: (c.status.get(device["device_id"]) or {}).get("state") == "stopped",
                    5,
                )
                health = (col.status.get(device["device_id"]) or {}).get("inputs")
            finally:
                col.stop()
    readings = sorted(
        [seq, ts, cat, ch, val]
        for dev, seq, ts, cat, ch, val in col.readings
        if dev == device["device_id"]
    )
    doc = golden_doc(device["device_id"], readings)
    result = ReplayResult(
        frames=parsed.frames if parsed is not None else counter.frames,
        readings=len(readings),
        seconds=time.monotonic() - t_start,
        digest=doc["digest"],
        bytes=parsed.bytes if parsed is not None else sum(len(d) for _, d in items),
        chunks=len(items),
    )
    result.inputs = replay_doc.get("inputs") or {}
    result.health_inputs = health
    if parsed is not None:
        result.modbus = {**parsed.summary(), "served": replay_doc.get("serve") or {}}
    result.why = explain(len(readings), replay_doc, parsed, device, result.bytes)
    for line in result.why:
        print(f"edgectl: replay: {line}", file=sys.stderr)
    if opts.collector_out:
        _write_json(opts.collector_out, doc)
    if opts.expect and not readings:
        # an empty golden file would pass every later run that also yields nothing
        why = "; ".join(result.why) or "the agent produced none"
        if opts.update_golden:
            raise ToolError(f"no readings to write to the golden file {opts.expect}: {why}")
        print(f"golden file {opts.expect}: this run produced no readings: {why}")
        return result, 1
    if opts.expect:
        if opts.update_golden:
            _write_json(opts.expect, doc)
            print(f"golden file {opts.expect} updated: {len(readings)} readings")
        else:
            diff = compare_golden(opts.expect, doc)
            if diff:
                print("\n".join(diff))
                exit_code = 1
            else:
                print(f"golden file {opts.expect}: match ({len(readings)} readings)")
    return result, exit_code


def wait_showing_progress(
    agent: AgentProcess, col: Collector, wall0: int, span_ms: int, timeout: float
) -> None:
    """Wait for the replaying agent; on a terminal, a progress bar of the capture time its
    readings have reached (their timestamps are wall0 + capture time) with the time left."""
    deadline = time.monotonic() + timeout
    with progress_bar(span_ms) as show:
        while not agent.done.wait(0.25) and time.monotonic() < deadline:
            recent = col.readings[-64:]
            reached = max(0, min(max((r[2] for r in recent), default=wall0) - wall0, span_ms))
            show(reached, f"{reached / 1000:.0f} of {span_ms / 1000:.0f} s of capture")
    if not agent.done.is_set():
        agent.stop()
        raise ToolError(f"the agent did not finish the replay within {timeout:g} s (--timeout)")
    agent.wait()


def explain(
    readings: int, replay: dict, parsed: modbus_capture.Parsed | None, device: dict, fed: int
) -> list[str]:
    """Why a replay produced no readings (or fewer than the capture holds), in words."""
    out: list[str] = []
    inputs = replay.get("inputs") or {}
    counters = replay.get("counters") or {}
    if parsed is not None:
        served = replay.get("serve") or {}
        if not parsed.exchanges:
            out.append("the capture holds no Modbus frames (check the baud rate and the port)")
        elif served.get("unmatched"):
            asked = [
                f"slave {s.get('slave')} fn {r.get('fn', 3)} addr {r.get('addr', 0)} count "
                f"{r.get('count', 1)}"
                for s in device.get("inputs") or ()
                if isinstance(s, dict) and s.get("type") == "modbus"
                for r in s.get("reads") or ()
            ]
            recorded = ", ".join(f"{k} ({n}x)" for k, n in parsed.summary()["keys"].items())
            out.append(
                f"{served['unmatched']} Modbus requests had no recorded exchange; the config "
                f"asks {'; '.join(asked)}; the capture recorded {recorded}"
            )
        if served.get("unserved"):
            out.append(f"{served['unserved']} recorded exchanges were never asked for")
    elif not fed:
        out.append("the replayed range holds no rx bytes (check --from/--to and --direction)")
    for name, st in sorted(inputs.items()):
        b = st.get("bytes") or {}
        reasons = {
            k: v for k, v in st.items() if isinstance(v, int) and k not in ("accepted", "requests")
        }
        if b.get("fed") and not b.get("decoded"):
            detail = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "none"
            out.append(
                f"{name}: {b['fed']} bytes read, none decoded ({b.get('rejected', 0)} rejected, "
                f"{b.get('garbage', 0)} garbage, {b.get('unhandled', 0)} unhandled; counters: "
                f"{detail}): check the input's type, protocol and the capture's port"
            )
        elif b.get("unhandled") and not readings:
            out.append(
                f"{name}: {b['unhandled']} bytes of frames or lines nothing maps "
                f"(unmapped DPs {st.get('unmapped_dp', 0)}, unknown keys "
                f"{st.get('unknown_key', 0)}, unhandled commands {st.get('unhandled_cmd', 0)}): "
                "check the input's keys / dps"
            )
    if counters.get("unknown_channel"):
        out.append(
            f"{counters['unknown_channel']} readings went to channels the config does not declare"
        )
    if counters.get("sampled") and counters.get("dropped_by_consent") == counters.get("sampled"):
        out.append("every reading was dropped by consent (see --grant)")
    if not readings and not out:
        out.append("the agent produced no readings and no counter explains it (see --json)")
    return out


def _write_json(path: str, doc: dict) -> None:
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
