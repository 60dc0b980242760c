"""A replay's collector output read like a collector database, so `edgectl plot` and `edgectl
export` take a capture replay too (docs/DASHBOARD.md 5).

`edgectl replay CAPTURE --agent unix-sim --collector-out OUT.json` writes the readings the
collector received ({"device", "readings": [[seq, ts, category, channel, value], ...]}, values
as the device sent them, docs/REPLAY.md); the device config the replay ran with gives the channel
names, units and decimals (docs/CONFIG.md `channels`).
"""

from __future__ import annotations

from typing import Iterator

from host_tools.backend.connect import read_json
from host_tools.errors import ToolError
from host_tools.view.query import DEVICE_ID, Channels


def config_meta(path: str) -> dict:
    """A device config's `channels` as the agent's retained meta document (full form)."""
    cfg = read_json(path, "--config")
    chans = cfg.get("channels") if isinstance(cfg, dict) else None
    if not isinstance(chans, list):
        raise ToolError(f"--config {path}: no `channels` list (docs/CONFIG.md)")
    rows = []
    for c in chans:
        if isinstance(c, dict) and isinstance(c.get("id"), int):
            rows.append(
                [c["id"], c.get("name"), c.get("category"), c.get("unit"), c.get("decimals", 0)]
            )
    return {"format": 1, "form": "full", "channels": rows}


class ReplayFileView:
    """The few ViewStore questions export and plot ask, over one replay output file."""

    def __init__(self, path: str, config: str | None) -> None:
        self.path = path
        doc = read_json(path, "--replay")
        rows = doc.get("readings") if isinstance(doc, dict) else None
        dev = doc.get("device") if isinstance(doc, dict) else None
        if not isinstance(rows, list) or not isinstance(dev, str) or not DEVICE_ID.match(dev):
            raise ToolError(
                f"--replay {path}: not a replay's collector output (edgectl replay "
                "--collector-out): needs a device id and a readings list"
            )
        self.dev = dev
        self.rows: list[tuple] = []
        for r in rows:
            if not (isinstance(r, list) and len(r) == 5):
                raise ToolError(
                    f"--replay {path}: a reading is not [seq, ts, category, channel, value]"
                )
            seq, ts, cat, ch, val = r
            if not all(isinstance(x, int) for x in (seq, ts, ch, val)) or not isinstance(cat, str):
                raise ToolError(f"--replay {path}: reading {r!r} is not [int, int, str, int, int]")
            self.rows.append((dev, seq, ts, None, cat, ch, val, 0))
        self.rows.sort(key=lambda r: r[1])
        self.meta = config_meta(config) if config else None

    def devices(self) -> list[str]:
        return [self.dev]

    def device(self, device: str) -> dict | None:
        return {"device": device} if device == self.dev else None

    def channels(self, device: str) -> Channels:
        return Channels(self.meta, None)

    def readings_tail(self, device: str, limit: int) -> list[tuple]:
        return [r[1:] for r in self.rows[-limit:]] if device == self.dev else []

    def iter_readings(self, device: str | None, batch: int = 5000) -> Iterator[tuple]:
        if device in (None, self.dev):
            yield from self.rows

    def close(self) -> None:
        pass
