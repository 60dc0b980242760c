"""Host-side tools for the edge telemetry agent (CPython only)."""

try:  # Make `replay://FILE?speed=X` available to every pyserial user (issue 8).
    import serial as _serial
except ImportError:  # pragma: no cover - pyserial is a dependency; keep import of host_tools safe
    _serial = None
if _serial is not None and "host_tools" not in _serial.protocol_handler_packages:
    _serial.protocol_handler_packages.append("host_tools")
