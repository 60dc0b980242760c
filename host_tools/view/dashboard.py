"""`edgectl dashboard`: a local web page over the collector's database (docs/DASHBOARD.md).

The command checks its arguments and serves the app of `host_tools/view/server.py` (imported
only when the command runs: aiohttp is not loaded for every `edgectl` command).
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import sys

from host_tools.errors import ToolError
from host_tools.view.query import open_view


def check_host(host: str, allow_remote: bool) -> str:
    """A literal IP address to listen on; off loopback only with allow_remote."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ToolError(f"--host {host!r}: give an IP address (default 127.0.0.1)") from None
    if not ip.is_loopback and not allow_remote:
        raise ToolError(
            f"--host {host} is not a loopback address: the page has no login and shows personal "
            "data; add --allow-remote to serve it there anyway"
        )
    return str(ip)


# --- the command -------------------------------------------------------------------------------


def serve(
    db: str | None, host: str = "127.0.0.1", port: int = 8765, on_ready=None, pg: str | None = None
) -> None:
    """Serve the dashboard of a SQLite file or a PostgreSQL DSN until interrupted (Ctrl-C or
    SIGTERM)."""
    from host_tools.view.server import Server

    view = open_view(db, pg)
    srv = Server(view, host, port)

    async def main() -> None:
        await srv.start_async()
        if on_ready is not None:
            on_ready(srv.url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await srv.stop_async()

    try:
        asyncio.run(main())
    finally:
        view.close()


def cmd_dashboard(args) -> int:
    if not 0 <= args.port <= 65535:
        raise ToolError(f"--port {args.port}: give 0-65535 (0 picks a free port)")
    host = check_host(args.host, args.allow_remote)
    if args.db == "" or args.pg == "":
        raise ToolError(f"--{'db' if args.db == '' else 'pg'} '': give a database")
    view_name = "PostgreSQL" if args.pg else (args.db or "collector.sqlite")

    def ready(url: str) -> None:
        print(f"dashboard: {url}  ({view_name}; Ctrl-C stops)", flush=True)
        if args.open:
            import webbrowser

            webbrowser.open(url)

    serve(args.db, host, args.port, on_ready=ready, pg=args.pg)
    print("dashboard: stopped", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "dashboard",
        help="a local web page of the collector's data: fleet, devices, live charts, consent",
    )
    p.add_argument(
        "--db",
        help="the collector's SQLite database (default collector.sqlite; its NAME.docs.json "
        "beside it)",
    )
    p.add_argument("--pg", metavar="DSN", help="the cluster tier's PostgreSQL instead of --db")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0: any)")
    p.add_argument("--host", default="127.0.0.1", help="IP address to listen on (loopback)")
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host that is not loopback (the page has no login)",
    )
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.set_defaults(func=cmd_dashboard)
