# MicroPython side of the TLS figures of `edgectl bench memory` (host_tools/bench/tlsheap.py):
# the GC heap the agent's TLS client context (edge/mqtt/client.py tls_context) and one open
# session take, read with gc.mem_alloc() after collections. Mbed TLS allocates its own state
# with the C allocator, outside the GC heap (docs/MQTT.md 5): these figures are only what the
# interpreter holds. The host prepends CA (a DER file) and PORT (a TLS echo server on loopback).
# Prints one line `@tls {json}`.
# ruff: noqa: F821 - CA and PORT are set by the lines the host sends first
import gc
import json
import socket
import ssl  # noqa: F401  (imported by tls_context: its code is not the context's)

from edge.mqtt.client import tls_context

with open(CA, "rb") as f:
    ca = f.read()
gc.collect()
a0 = gc.mem_alloc()
ctx = tls_context(ca)
gc.collect()
a1 = gc.mem_alloc()
ai = socket.getaddrinfo("127.0.0.1", PORT, 0, socket.SOCK_STREAM)[0]
s = socket.socket(ai[0], ai[1], ai[2])
s.connect(ai[-1])
gc.collect()
a2 = gc.mem_alloc()
t = ctx.wrap_socket(s, server_hostname="127.0.0.1")
t.write(b"ping")
echo = t.read(4)
gc.collect()
a3 = gc.mem_alloc()
t.close()
print("@tls " + json.dumps({"context": a1 - a0, "session": a3 - a2, "echo": echo == b"ping"}))
