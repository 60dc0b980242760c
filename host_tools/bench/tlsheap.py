"""The GC heap a TLS session takes on the unix port, for `edgectl bench memory`: the agent's
own client context (edge/mqtt/client.py tls_context, CA verification and server_hostname)
against a TLS echo server on loopback with a certificate from a CA made as `edgectl provision`
makes them (host_tools/backend/provision.py). Mbed TLS's own buffers are outside the GC heap and
not in these figures (docs/MEMORY.md 3)."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import tempfile
import threading
from pathlib import Path

from host_tools.backend.provision import ensure_ca, make_server_cert
from host_tools.errors import ToolError
from host_tools.paths import micropython_path, mp_env

PROBE = Path(__file__).resolve().parent / "mp" / "tls_probe.py"
TIMEOUT = 60


def _echo_once(srv: socket.socket, ctx: ssl.SSLContext) -> None:
    """Serve one TLS client: echo what it sends until it closes."""
    srv.settimeout(TIMEOUT)
    try:
        conn, _ = srv.accept()
        with ctx.wrap_socket(conn, server_side=True) as t:
            while data := t.recv(64):
                t.sendall(data)
    except (OSError, ssl.SSLError):
        pass  # the probe reports what it saw


def measure() -> dict:
    """tls_context_heap_bytes and tls_session_heap_bytes (unix 64-bit)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    with tempfile.TemporaryDirectory(prefix="edge-tlsheap-") as t:
        out = Path(t)
        key, cert = ensure_ca(out)
        (out / "broker").mkdir()
        make_server_cert(out, "127.0.0.1", key, cert)
        (out / "ca.der").write_bytes(cert.public_bytes(Encoding.DER))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(out / "broker" / "server.crt", out / "broker" / "server.key")
        with socket.create_server(("127.0.0.1", 0)) as srv:
            server = threading.Thread(target=_echo_once, args=(srv, ctx), daemon=True)
            server.start()
            script = out / "tls_probe.py"
            head = f"CA = {str(out / 'ca.der')!r}\nPORT = {srv.getsockname()[1]}\n"
            script.write_text(head + PROBE.read_text())
            try:
                p = subprocess.run(
                    [micropython_path(), str(script)],
                    capture_output=True,
                    text=True,
                    env=mp_env(),
                    timeout=TIMEOUT,
                )
            except subprocess.TimeoutExpired:
                raise ToolError(f"TLS heap probe did not finish in {TIMEOUT} s") from None
            server.join(TIMEOUT)
    for line in p.stdout.splitlines():
        if line.startswith("@tls "):
            r = json.loads(line[5:])
            if r["echo"]:
                return {
                    "tls_context_heap_bytes": r["context"],
                    "tls_session_heap_bytes": r["session"],
                }
    tail = " | ".join(p.stdout.strip().splitlines()[-3:])
    raise ToolError(f"TLS heap probe failed (exit {p.returncode}): {tail}")
