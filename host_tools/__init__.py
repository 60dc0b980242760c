"""Host-side tools for the edge telemetry agent (CPython only)."""

from types import ModuleType

_serial: ModuleType | None
try:  # Make `replay://FILE?speed=X` available to every pyserial user (docs/REPLAY.md).
    import serial as _serial
except ImportError:  # pragma: no cover - pyserial is a dependency; keep import of host_tools safe
    _serial = None
# pyserial looks up `<package>.protocol_<scheme>`: host_tools/captures/protocol_replay.py
if _serial is not None and "host_tools.captures" not in _serial.protocol_handler_packages:
    _serial.protocol_handler_packages.append("host_tools.captures")
