"""`edgectl bench NAME [--json]`: every benchmark runs its baseline in the same run and
reports ratios (CONTRIBUTING.md). Each entry maps a name to "module:function"; the function takes
the parsed args and returns a dict of figures (printed as a table, and as JSON on the last
stdout line with --json)."""

from __future__ import annotations

import importlib
import json

from host_tools.errors import ToolError
from host_tools import argtypes

BENCHES: dict[str, str] = {
    "forward": "host_tools.bench.forward:bench_forward",
    "memory": "host_tools.bench.forward:bench_memory",
    "store": "host_tools.bench.store:bench_store",
    "deploy": "host_tools.board.deploy:bench_deploy",
    "replay": "host_tools.bench.replay:bench_replay",
    "day": "host_tools.bench.day:bench_day",
    "update": "host_tools.bench.update:bench_update",
    "inputs": "host_tools.bench.inputs:bench_inputs",
    "collector": "host_tools.bench.collector:bench_collector",
    "cluster": "host_tools.bench.cluster:bench_cluster",
}


def run_bench(name: str, args) -> dict:
    if name not in BENCHES:
        raise ToolError(f"unknown benchmark {name!r}; choose from: {', '.join(sorted(BENCHES))}")
    mod, func = BENCHES[name].split(":")
    return getattr(importlib.import_module(mod), func)(args)


def cmd_bench(args) -> int:
    figures = run_bench(args.name, args)
    if not args.json:
        width = max(len(k) for k in figures)
        for k, v in figures.items():
            print(f"{k:<{width}}  {v:,.3f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    else:
        print(json.dumps(figures))
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark against its in-run baseline")
    p.add_argument(
        "name",
        help="benchmark name: " + ", ".join(sorted(BENCHES)) if BENCHES else "benchmark name",
    )
    p.add_argument("--json", action="store_true", help="last stdout line is one JSON object")
    p.add_argument("--profile", help="day: one appliance profile (default: all)")
    p.add_argument(
        "--hours", type=argtypes.positive_float, help="day: virtual hours per profile (default 24)"
    )
    p.add_argument(
        "--no-before",
        action="store_true",
        help="day: skip the run with the agent's earlier settings (format 1, 200 ms linger, "
        "full status every 5 s)",
    )
    p.add_argument(
        "--board",
        type=argtypes.board,
        help="store: the board whose log partition sizes flash life",
    )
    p.set_defaults(func=cmd_bench)
