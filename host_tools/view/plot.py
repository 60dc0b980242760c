"""`edgectl plot`: chosen channels over time as a PNG or SVG file, from the collector's database
or a capture replay's output (docs/DASHBOARD.md 5).

One panel per channel, titled with its name, unit and category from the device's channel
metadata, values scaled by its decimals, one line per device; drawn with matplotlib's Agg
renderer (no display needed). Readings stamped before a clock sync that no clock mapping
places in time are counted and left out.
"""

from __future__ import annotations

import datetime as _dt
from array import array
import os
import sys

from host_tools.errors import ToolError
from host_tools.view.export import (
    Selection,
    add_selection_args,
    check_out,
    named_readings,
    open_source,
    output_path,
    selection_from,
)
from host_tools.view.query import ReadingSource

FORMATS = ("png", "svg")
PANEL_HEIGHT_IN = 2.3
WIDTH_IN = 11.0


def _text(s: str) -> str:
    """A device-supplied string as literal text: matplotlib reads `$...$` as math."""
    return s.replace("$", r"\$")


def collect_series(src: ReadingSource, sel: Selection) -> tuple[dict, int]:
    """{(channel, name, unit, category): {device: (times, values)}} and the unplaced count."""
    series: dict[tuple, dict[str, tuple[array, array]]] = {}
    unplaced = 0
    for r in named_readings(src, sel):
        if r["time_ms"] is None:
            unplaced += 1
            continue
        key = (r["channel"], r["name"], r["unit"], r["category"])
        # compact arrays (ms, value): 16 bytes a point, not two Python objects
        xs, ys = series.setdefault(key, {}).setdefault(r["device"], (array("q"), array("d")))
        xs.append(r["time_ms"])
        ys.append(r["value"])
    return series, unplaced


def plot(src: ReadingSource, sel: Selection, out_path: str, fmt: str | None = None) -> dict:
    """Draw the selected readings into out_path; returns {"panels", "points", "unplaced"}."""
    fmt = fmt or os.path.splitext(out_path)[1].lstrip(".").lower()
    if fmt not in FORMATS:
        raise ToolError(f"--out {out_path}: give a .png or .svg file (or --format png|svg)")
    check_out(out_path)
    series, unplaced = collect_series(src, sel)
    if not series:
        why = f" ({unplaced} readings have no wall-clock time)" if unplaced else ""
        raise ToolError(f"no readings match the selection{why}: nothing to plot")

    import matplotlib

    matplotlib.use("Agg")
    # SVG text as <text> elements (searchable, and escaped by matplotlib), not glyph paths
    matplotlib.rcParams["svg.fonttype"] = "none"
    matplotlib.rcParams["svg.hashsalt"] = "edgectl-plot"  # ids in the SVG: the same every run
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import numpy as np

    keys = sorted(series, key=lambda k: k[0])
    fig, axes = plt.subplots(
        len(keys), 1, sharex=True, squeeze=False,
        figsize=(WIDTH_IN, 0.8 + PANEL_HEIGHT_IN * len(keys)),
    )  # fmt: skip
    points = 0
    try:
        for ax, key in zip(axes[:, 0], keys, strict=True):
            channel, name, unit, category = key
            for dev, (xs, ys) in sorted(series[key].items()):
                when = np.frombuffer(xs, dtype=np.int64).astype("datetime64[ms]")
                ax.plot(when, np.frombuffer(ys, dtype=np.float64), linewidth=1.0, label=_text(dev))
                points += len(xs)
            title = f"{name} ({unit})" if unit else name
            ax.set_title(_text(title), loc="left", fontsize=10)
            ax.set_title(_text(f"{category or ''}  ch {channel}"), loc="right", fontsize=8)
            ax.set_ylabel(_text(unit) if unit else "value")
            ax.grid(True, alpha=0.3)
            if len(series[key]) > 1:
                ax.legend(fontsize=8, loc="upper right")
        axes[-1, 0].xaxis.set_major_formatter(mdates.ConciseDateFormatter(
            mdates.AutoDateLocator(), tz=_dt.timezone.utc))  # fmt: skip
        axes[-1, 0].set_xlabel("time (UTC)")
        fig.tight_layout()
        # no creation date in the file: the same data gives the same SVG
        meta = {"Date": None} if fmt == "svg" else {}
        with output_path(out_path) as path:
            fig.savefig(path, format=fmt, dpi=110, metadata=meta)
    finally:
        plt.close(fig)
    return {"panels": len(keys), "points": points, "unplaced": unplaced}


def cmd_plot(args) -> int:
    sel = selection_from(args)
    src = open_source(args)
    try:
        res = plot(src, sel, args.out, args.format)
    finally:
        src.close()
    note = (
        f", {res['unplaced']} readings without wall-clock time left out" if res["unplaced"] else ""
    )
    print(
        f"plot: {res['points']} readings in {res['panels']} panels to {args.out}{note}",
        file=sys.stderr,
    )
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "plot",
        help="chosen channels over time as a PNG or SVG (from the collector's database or a "
        "replay's --collector-out)",
    )
    add_selection_args(p)
    p.add_argument("--out", required=True, metavar="FILE", help="the .png or .svg to write")
    p.add_argument("--format", choices=FORMATS, help="png or svg (default: from --out)")
    p.set_defaults(func=cmd_plot)
