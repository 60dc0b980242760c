"""The collector's small document store (TinyDB): device registry with the latest status, and the
latest consent receipt per device (docs/BACKEND.md 3).

TinyDB keeps its data in RAM and rewrites the whole file on a flush, which suits a few
documents per device and nothing that grows per reading. The file is replaced atomically
(temporary file, fsync, rename), so a crash leaves the old or the new version, never half of
one. What must be consistent with the readings (the consent ledger, status history) lives in
the SQLite database instead, in the same transaction as the rows it describes.
"""

from __future__ import annotations

import json
import os
import threading

from tinydb import Query, TinyDB
from tinydb.storages import MemoryStorage, Storage

from host_tools.errors import ToolError


class AtomicJSONStorage(Storage):
    """TinyDB storage that keeps the data in RAM and writes the file only on flush(), by
    temporary file + fsync + rename (POSIX rename is atomic)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.data: dict | None = None
        self.dirty = False
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        except OSError as e:
            raise ToolError(f"cannot read document store {path}: {e.strerror or e}") from e
        if text.strip():
            try:
                data = json.loads(text)
            except ValueError as e:
                raise ToolError(f"document store {path} is not JSON: {e}") from e
            if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
                raise ToolError(f"document store {path} is not a TinyDB file")
            self.data = data

    def read(self) -> dict | None:
        return self.data

    def write(self, data: dict) -> None:
        self.data = data
        self.dirty = True

    def flush(self) -> None:
        if not self.dirty or self.data is None:
            return
        tmp = f"{self.path}.{os.getpid()}.tmp"  # a second collector has its own
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.dirty = False

    def close(self) -> None:
        self.flush()


class DocStore:
    """Registry (`devices`: one document per device: first/last seen, latest status, channel
    metadata) and
    `receipts` (the latest accepted receipt per device). Thread-safe; flush() makes it durable."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.lock = threading.Lock()
        if path:
            self.db = TinyDB(path, storage=AtomicJSONStorage)
        else:
            self.db = TinyDB(storage=MemoryStorage)
        self.devices = self.db.table("devices")
        self.receipts = self.db.table("receipts")
        self.dirty_since: float | None = None

    def _upsert(self, table, device: str, fields: dict) -> None:
        q = Query().device == device
        if table.contains(q):
            table.update(fields, q)
        else:
            table.insert({"device": device, **fields})

    def seen(self, device: str, at_ms: int, status: dict | None = None) -> None:
        """Record that a device sent something (and its latest status, when it is one)."""
        with self.lock:
            doc = self.devices.get(Query().device == device)
            fields: dict = {"last_seen_ms": at_ms}
            if doc is None:
                fields["first_seen_ms"] = at_ms
            if status is not None:
                fields["status"] = status
                fields["status_ms"] = at_ms
            self._upsert(self.devices, device, fields)

    def set_receipt(self, device: str, receipt: dict, at_ms: int) -> None:
        with self.lock:
            self._upsert(self.receipts, device, {"receipt": receipt, "received_ms": at_ms})

    def set_meta(self, device: str, meta: dict) -> None:
        """The device's channel metadata (edge/meta.py), kept in its registry document."""
        with self.lock:
            self._upsert(self.devices, device, {"meta": meta})

    def all_meta(self) -> dict[str, dict]:
        with self.lock:
            return {d["device"]: d["meta"] for d in self.devices.all() if "meta" in d}

    def all_receipts(self) -> dict[str, dict]:
        with self.lock:
            return {d["device"]: d["receipt"] for d in self.receipts.all()}

    def all_status(self) -> dict[str, dict]:
        with self.lock:
            return {d["device"]: d["status"] for d in self.devices.all() if "status" in d}

    def device(self, device: str) -> dict:
        with self.lock:
            q = Query().device == device
            receipt = self.receipts.get(q)
            return {
                "registry": self.devices.get(q),
                "receipt": receipt["receipt"] if receipt else None,
            }

    def forget(self, device: str) -> int:
        with self.lock:
            q = Query().device == device
            return len(self.devices.remove(q)) + len(self.receipts.remove(q))

    def flush(self) -> None:
        with self.lock:
            storage = self.db.storage
            if isinstance(storage, AtomicJSONStorage):
                storage.flush()

    def close(self) -> None:
        self.flush()
        self.db.close()
