# The edge telemetry agent (MicroPython). Kept empty so importing edge.codec on the host pulls
# in nothing else.
