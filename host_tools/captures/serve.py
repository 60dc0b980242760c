"""`edgectl simulate --serve modbus|tuya|line`: play an appliance live on a pty or a port.

The appliance models of `host_tools/captures/appliances` (the same ones the tests use), set up
from a file a user writes (docs/REPLAY.md section 6):

- modbus: a Modbus RTU slave; `--map` is JSON `{"slave": 1, "holding": {"0": 215, ...},
  "input": {"12": 7}, "illegal": [100]}` (register numbers as keys, u16 values; `input`
  defaults to the holding table). Edit the file while it runs: the registers follow.
- tuya: a Tuya MCU; `--map` is JSON `{"product": {...} or "text", "report_s": 5,
  "dps": {"1": {"type": "bool", "value": true}, "2": {"type": "value", "value": 215}}}`
  (types raw (hex), bool, value (s32), string, enum (u8), bitmap (u8/u16/u32)). It answers
  heartbeats, product info, working mode, Wi-Fi status and DP queries, and reports its DPs
  every `report_s` seconds.
- line: a line appliance; `--lines FILE` sends the file's lines in turn, one per `--interval`
  (cycling), or without it the simulated fridge of `edgectl simulate fridge`.

`--faults` injects bad CRCs, timeouts, garbage, truncated or busy replies (`bad_crc@3`,
`timeout:0.1`; host_tools/captures/appliances/faults.py).
"""

from __future__ import annotations

import itertools
import json
import os
import struct
import time
from pathlib import Path
from typing import Any, Callable

from host_tools.captures.appliances import (
    Faults,
    LineAppliance,
    ModbusSlave,
    Pty,
    SerialLink,
    TuyaMCU,
    fridge_lines,
    serve,
    tuya_dp,
    tuya_frame,
)
from host_tools.errors import ToolError, read_json_object

SERVE_KINDS = ("modbus", "tuya", "line")
TUYA_TYPES = {"raw": 0, "bool": 1, "value": 2, "string": 3, "enum": 4, "bitmap": 5}


def _unknown(path: Path, doc: dict, known: tuple[str, ...]) -> None:
    extra = sorted(set(doc) - set(known))
    if extra:
        raise ToolError(f"{path}: unknown key {extra[0]!r} (known: {', '.join(known)})")


def _registers(path: Path, doc: dict, key: str) -> dict[int, int]:
    table = doc.get(key, {})
    if not isinstance(table, dict):
        raise ToolError(f"{path}: {key!r} must map register numbers to values")
    out = {}
    for reg, value in table.items():
        if not reg.isdigit() or int(reg) > 0xFFFF:
            raise ToolError(f"{path}: {key}.{reg}: a register number must be 0..65535")
        if not isinstance(value, int) or isinstance(value, bool) or not -0x8000 <= value <= 0xFFFF:
            raise ToolError(f"{path}: {key}.{reg}: {value!r} is not a 16-bit value")
        out[int(reg)] = value & 0xFFFF
    return out


def modbus_map(path: Path) -> tuple[int, dict[int, int], dict[int, int] | None, tuple[int, ...]]:
    """(slave, holding, input or None, illegal addresses) from a register map file."""
    doc = read_json_object(path, "map file")
    _unknown(path, doc, ("slave", "holding", "input", "illegal"))
    slave = doc.get("slave", 1)
    if not isinstance(slave, int) or isinstance(slave, bool) or not 1 <= slave <= 247:
        raise ToolError(f"{path}: slave: {slave!r} is not a Modbus address 1..247")
    holding = _registers(path, doc, "holding")
    inputs = _registers(path, doc, "input") if "input" in doc else None
    illegal = doc.get("illegal", [])
    if not isinstance(illegal, list) or not all(isinstance(a, int) for a in illegal):
        raise ToolError(f"{path}: illegal: a list of register numbers")
    return slave, holding, inputs, tuple(illegal)


def _dp_value(path: Path, dpid: str, spec: Any) -> bytes:
    if not dpid.isdigit() or not 1 <= int(dpid) <= 255:
        raise ToolError(f"{path}: dps.{dpid}: a DP id must be 1..255")
    if not isinstance(spec, dict) or spec.get("type") not in TUYA_TYPES or "value" not in spec:
        raise ToolError(
            f'{path}: dps.{dpid}: needs {{"type": {"|".join(TUYA_TYPES)}, "value": ...}}'
        )
    kind, v = spec["type"], spec["value"]
    try:
        if kind == "bool":
            data = bytes((1 if v else 0,))
        elif kind == "value":
            data = struct.pack(">i", v)
        elif kind == "enum":
            data = struct.pack(">B", v)
        elif kind == "bitmap":
            data = struct.pack(">B" if v < 0x100 else ">H" if v < 0x10000 else ">I", v)
        elif kind == "string":
            data = str(v).encode()
        else:
            data = bytes.fromhex(v)
    except (struct.error, TypeError, ValueError) as e:
        raise ToolError(f"{path}: dps.{dpid}: {v!r} is not a {kind} value ({e})") from None
    return tuya_dp(int(dpid), TUYA_TYPES[kind], data)


def tuya_map(path: Path) -> tuple[bytes, float, bytes]:
    """(product info JSON, report period in s, one DP report frame) from a datapoints file."""
    doc = read_json_object(path, "map file")
    _unknown(path, doc, ("product", "report_s", "dps"))
    product = doc.get("product", {"p": "abcdefgh12345678", "v": "1.0.0", "m": 0})
    product_b = (product if isinstance(product, str) else json.dumps(product)).encode()
    report_s = doc.get("report_s", 5)
    if not isinstance(report_s, (int, float)) or report_s < 0:
        raise ToolError(f"{path}: report_s: seconds >= 0 (0: report only when asked)")
    dps = doc.get("dps")
    if not isinstance(dps, dict) or not dps:
        raise ToolError(f'{path}: dps: map DP ids to {{"type", "value"}}')
    body = b"".join(_dp_value(path, k, v) for k, v in dps.items())
    return product_b, float(report_s), tuya_frame(0x07, body)


def text_lines(path: Path, interval: float) -> Callable[[], Any]:
    """(ts_us, line) forever: the file's non-empty lines in turn, one per interval."""
    try:
        lines = [ln.rstrip("\r\n") for ln in path.read_text().splitlines() if ln.strip()]
    except OSError as e:
        raise ToolError(f"cannot read {path}: {e.strerror}") from None
    if not lines:
        raise ToolError(f"{path} has no lines to send")
    return lambda: (
        (round(i * interval * 1e6), (line + "\n").encode())
        for i, line in zip(itertools.count(), itertools.cycle(lines))
    )


class Watched:
    """A map file reloaded into the running model when it changes (mtime)."""

    def __init__(self, path: Path | None, apply: Callable[[Path], None]) -> None:
        self.path, self.apply = path, apply
        self.mtime = path.stat().st_mtime_ns if path else 0

    def poll(self) -> str | None:
        if self.path is None:
            return None
        try:
            m = self.path.stat().st_mtime_ns
        except OSError:
            return None
        if m == self.mtime:
            return None
        self.mtime = m
        try:
            self.apply(self.path)
        except ToolError as e:
            return f"kept the previous map: {e}"
        return f"reloaded {self.path}"


def build_model(
    kind: str,
    map_path: Path | None,
    lines_path: Path | None,
    interval: float,
    faults: Faults,
    seed: int,
) -> tuple[Any, str, Watched]:
    """The appliance model for `kind`, a one-line description, and its map-file watcher."""
    if kind == "modbus":
        if map_path is None:
            raise ToolError("--serve modbus needs --map REGS.json (the register map)")
        slave, holding, inputs, illegal = modbus_map(map_path)
        model: Any = ModbusSlave(slave, holding, inputs, illegal, faults)

        def reload_modbus(p: Path) -> None:
            s, h, i, ill = modbus_map(p)
            model.slave, model.illegal = s, ill
            model.regs.clear()
            model.regs.update(h)
            model.input_regs = i

        what = f"Modbus RTU slave {slave} ({len(holding)} holding registers)"
        return model, what, Watched(map_path, reload_modbus)
    if kind == "tuya":
        if map_path is None:
            raise ToolError("--serve tuya needs --map DPS.json (the datapoints)")
        product, report_s, report = tuya_map(map_path)
        model = TuyaMCU([report], product=product, faults=faults, report_s=report_s)

        def reload_tuya(p: Path) -> None:
            model.product, model.report_s, rep = tuya_map(p)
            model.reports = [rep]

        n = len(read_json_object(map_path, "map file")["dps"])
        what = f"Tuya MCU ({n} DPs, report every {report_s:g} s)"
        return model, what, Watched(map_path, reload_tuya)
    if kind == "line":
        if interval <= 0:
            raise ToolError("--interval must be > 0")
        if lines_path is not None:
            source = text_lines(lines_path, interval)()
            what = f"line appliance ({lines_path}, a line every {interval:g} s)"
        else:
            source = fridge_lines(10 * 365 * 86400, interval, seed)
            what = f"line appliance (the simulated fridge, a line every {interval:g} s)"
        return LineAppliance(source, faults), what, Watched(None, lambda p: None)
    raise ToolError(f"unknown appliance {kind!r} to serve (choose {', '.join(SERVE_KINDS)})")


def open_link(pty: str | None, port: str | None, baud: int) -> tuple[Any, str]:
    """A new pty (symlinked at `pty`) or an opened pyserial port, and where the agent attaches."""
    if bool(pty) == bool(port):
        raise ToolError("--serve needs exactly one of --pty LINK or --port URL")
    if pty:
        try:
            link = Pty(pty)
        except OSError as e:
            raise ToolError(f"cannot create the pty link {pty}: {e.strerror}") from None
        return link, f"{pty} -> {os.readlink(pty)}"
    import serial

    import host_tools  # noqa: F401  (registers the replay:// handler with pyserial)

    try:
        return SerialLink(serial.serial_for_url(port, baudrate=baud)), str(port)
    except (serial.SerialException, OSError, ValueError) as e:
        raise ToolError(f"cannot open {port}: {e}") from None


def run_server(model: Any, link: Any, seconds: float, watched: Watched, log=print) -> None:
    """Serve until `seconds` passed (0: until interrupted) or the link closed."""
    server = serve(model, link)
    end = time.monotonic() + seconds if seconds else None
    try:
        while server.is_alive() and (end is None or time.monotonic() < end):
            time.sleep(0.2)
            note = watched.poll()
            if note:
                log(f"simulate: {note}")
    finally:
        server.stop()
        server.join(2)


def summary(model: Any) -> str:
    """What the model did, for the line printed when it stops."""
    faults = getattr(model, "faults", None)
    injected = ", ".join(f"{k}@{i}" for i, k in faults.injected) if faults else ""
    if isinstance(model, ModbusSlave):
        done = f"{model.requests} requests, {model.answered} answered"
    elif isinstance(model, TuyaMCU):
        done = f"{len(model.cmds)} module frames, {model.heartbeats} heartbeats"
    else:
        done = f"{model.sent} lines sent"
    return done + (f"; faults injected: {injected}" if injected else "")
