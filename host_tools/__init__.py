"""Host-side tools for the edge telemetry agent (CPython only)."""
