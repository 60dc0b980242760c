"""`edgectl bench store`: both store backends side by side in one run, under unix MicroPython on
the emulated NOR flash (edge/hal/unix/flashdev.py, which counts every program and erase per
block): littlefs segments (docs/FORMAT.md 2) and the raw record log (docs/FORMAT.md 8).

Scenarios, each run for both backends: `burst` (readings as fast as they come, default commit
policy: appends/s, erases and programmed bytes per reading), `hz10` (10 readings/s on a virtual
clock for an hour with the default 1 s commit, forwarding and acknowledging each second as the
agent does: erases per second and per commit, flash life), `wear` (the 10 readings/s pattern on a
64-block partition, with a second category that trickles and is never acknowledged, until its
blocks have been erased 20 times on average: max/mean erases per block) and
`outage` (10 readings/s, nothing acknowledged: how long until the first reading is dropped).
Flash life is blocks x 100,000 cycles / erases per second, for the log partition of the board
(`--board`, default esp32-generic) and for 2 MiB."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile

from host_tools.errors import ToolError
from host_tools.paths import board_file, micropython_path, mp_env

NOR_CYCLES = 100_000  # erase cycles per block, typical SPI NOR datasheet figure
YEAR_S = 365 * 24 * 3600
BLOCK = 4096
DEFAULT_BOARD = "esp32-generic"

# Runs under unix MicroPython; prints one JSON line per scenario.
_MP_SCRIPT = r"""
import gc, json, sys, time, vfs
from edge import codec, config
from edge.hal.unix.flashdev import FlashDev
from edge.store.rawlog import RawStore
from edge.store.store import Store

class Clock:
    def __init__(self, virtual):
        self.virtual = virtual
        self.t = 0
    def ticks_ms(self):
        return self.t if self.virtual else time.ticks_ms()
    def ticks_diff(self, a, b):
        return a - b if self.virtual else time.ticks_diff(a, b)

def open_store(backend, blocks, cfg, ids, hal):
    if backend == "rawlog":
        dev = FlashDev(blocks, nor=True, wear=True)
        return dev, RawStore(dev, cfg, ids, hal)
    dev = FlashDev(blocks, wear=True)
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), "/b")
    return dev, Store("/b/store", cfg, ids, hal)

def scenario(backend, name, over, n, cats, hz, ack=False, blocks=512, laps=0, slow=None):
    cfg = config.load(None, over)
    ids = config.category_ids(cfg)
    use = [ids.index(c) for c in cats]
    hal = Clock(hz > 0)
    dev, st = open_store(backend, blocks, cfg, ids, hal)
    dev.reset_counters()
    gc.collect()
    first_drop = -1
    k = len(use)
    w = codec.BatchWriter("bench", 64 + 200 * codec.ENTRY_LEN)
    t0 = time.ticks_us()
    i = 0
    while i < n or (laps and dev.erases < laps * blocks):
        st.append(use[i % k], 1, 1700000000000 + i * 100, 0, i)
        i += 1
        if slow and i % 3000 == 0:  # a category that trickles and is never acknowledged
            st.append(ids.index(slow), 2, 1700000000000 + i * 100, 0, i)
        if hz:
            hal.t = i * 1000 // hz
            if first_drop < 0 and st.stats["dropped"]:
                first_drop = i
            if ack and i % hz == 0:  # once a second, as the agent: forward, ack, cursor
                st.tick(hal.ticks_ms())
                w.start("essential", st.boot, 0)
                got, seg, off = st.fill(use[0], w)
                if got:
                    st.ack(use[0], w.last_seq, seg, off)
                st.save_cursor()
        st.tick(hal.ticks_ms())
    st.commit()
    us = time.ticks_diff(time.ticks_us(), t0)
    counts = list(dev.erase_counts)
    out = {"backend": backend, "name": name, "readings": i, "us": us, "erases": dev.erases,
           "progs": dev.progs, "prog_bytes": dev.prog_bytes, "commits": st.stats["commits"],
           "first_drop": first_drop, "overwrites": dev.overwrites, "violations": dev.violations,
           "max_erases": max(counts), "mean_erases": sum(counts) / len(counts),
           "max_page_progs": dev.max_page_progs, "blocks": blocks}
    if backend != "rawlog":
        vfs.umount("/b")
    print(json.dumps(out))

n = int(sys.argv[1])
three = ["essential", "diagnostics", "usage"]
# bursts alternate between the backends (best of 3 each): both see the same machine load
for rep in range(3):
    for backend in ("segments", "rawlog"):
        scenario(backend, "burst", {}, n, three, 0)
for backend in ("segments", "rawlog"):
    # 10 readings/s, all in `essential` (the only category stored without consent)
    scenario(backend, "hz10", {}, 36000, ["essential"], 10, True)
    scenario(backend, "wear", {"store": {"total_bytes": 131072}}, 0, ["essential"], 10, True,
             64, 20, "location")
    # the segment store on its 2 MiB filesystem, the raw log on the board's log partition
    scenario(backend, "outage", {}, 120000, ["essential"], 10,
             blocks=int(sys.argv[2]) if backend == "rawlog" else 512)
scenario("segments", "flush_each", {"store": {"flush_n": 1}}, n // 10, three, 0)
scenario("segments", "hz10_10s", {"store": {"flush_ms": 10000, "flush_n": 100}}, 36000,
         ["essential"], 10, True)
"""


def _life(blocks: int, erases_per_s: float) -> float:
    return round(blocks * NOR_CYCLES / erases_per_s / YEAR_S, 1) if erases_per_s else float("inf")


def run_store_bench(readings: int = 30000, board: str = DEFAULT_BOARD) -> dict:
    """Run the scenarios for both backends; returns the figures (see the module docstring)."""
    part = (board_file(board).get("log_partition") or {}).get("size") or 1 << 20
    blocks = part // BLOCK
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as d:
        path = os.path.join(d, "bench_store.py")
        with open(path, "w") as f:
            f.write(_MP_SCRIPT)
        r = subprocess.run(
            [micropython_path(), "-X", "heapsize=16M", path, str(readings), str(blocks)],
            capture_output=True,
            text=True,
            timeout=1200,
            env=mp_env(),
        )
    if r.returncode != 0:
        raise ToolError(f"store benchmark failed: {(r.stdout + r.stderr)[-2000:]}")
    runs = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]

    def one(backend: str, name: str) -> dict:
        return next(x for x in runs if x["backend"] == backend and x["name"] == name)

    out: dict = {"board": board, "log_partition_bytes": part}
    for b in ("segments", "rawlog"):
        best = max(
            (x for x in runs if x["backend"] == b and x["name"] == "burst"),
            key=lambda x: x["readings"] / x["us"],
        )
        hz, wear, outage = one(b, "hz10"), one(b, "wear"), one(b, "outage")
        eps = hz["erases"] / (hz["readings"] / 10)  # erases per second at 10 readings/s
        out.update(
            {
                f"{b}_appends_per_s": round(best["readings"] * 1e6 / best["us"]),
                f"{b}_erases_per_reading": round(best["erases"] / best["readings"], 4),
                f"{b}_program_bytes_per_reading": round(best["prog_bytes"] / best["readings"], 1),
                f"{b}_erases_per_reading_at_10hz": round(hz["erases"] / hz["readings"], 5),
                f"{b}_erases_per_s_at_10hz_default_commit": round(eps, 4),
                f"{b}_erases_per_commit_at_10hz": round(hz["erases"] / hz["commits"], 4),
                f"{b}_programs_per_commit_at_10hz": round(hz["progs"] / hz["commits"], 2),
                f"{b}_flash_life_years_at_10hz": _life(blocks, eps),
                f"{b}_flash_life_years_at_10hz_2mib": _life(512, eps),
                f"{b}_wear_max_over_mean": round(wear["max_erases"] / wear["mean_erases"], 3),
                f"{b}_wear_erases": wear["erases"],
                f"{b}_max_page_programs": wear["max_page_progs"],
                f"{b}_outage_s_at_10hz": outage["first_drop"] // 10
                if outage["first_drop"] >= 0
                else None,
                f"{b}_rule_violations": sum(
                    x["overwrites"] + x["violations"] for x in runs if x["backend"] == b
                ),
            }
        )
    each = one("segments", "flush_each")
    slow = one("segments", "hz10_10s")
    seg_epc = out["segments_erases_per_commit_at_10hz"]
    raw_epc = out["rawlog_erases_per_commit_at_10hz"]
    out.update(
        {
            "rawlog_fewer_erases_per_commit": round(seg_epc / raw_epc, 1) if raw_epc else None,
            "rawlog_appends_ratio": round(
                out["rawlog_appends_per_s"] / out["segments_appends_per_s"], 2
            ),
            "segments_flush_each_erases_per_reading": round(each["erases"] / each["readings"], 4),
            "segments_flash_life_years_at_10hz_commit_10s": _life(
                blocks, slow["erases"] / (slow["readings"] / 10)
            ),
        }
    )
    return out


def bench_store(args) -> dict:
    """Benchmark entry for host_tools.bench.cli.BENCHES."""
    return run_store_bench(board=getattr(args, "board", None) or DEFAULT_BOARD)
