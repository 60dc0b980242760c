"""`edgectl bench store`: the flash store under unix MicroPython on the emulated 2 MiB NOR
flash (issue 3). Default policy against a flush-every-reading baseline in the same run, plus
the 10 readings/s regime on a virtual clock (erase rate, flash lifetime, outage ride-through)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile

from host_tools.errors import ToolError
from host_tools.paths import micropython_path, mp_env

NOR_CYCLES = 100_000  # erase cycles per block, typical SPI NOR datasheet figure
YEAR_S = 365 * 24 * 3600

# Runs under unix MicroPython; prints one JSON line per scenario.
_MP_SCRIPT = r"""
import gc, json, sys, time, vfs
from edge import codec, config
from edge.hal.unix.flashdev import FlashDev
from edge.store.store import Store

class Clock:
    def __init__(self, virtual):
        self.virtual = virtual
        self.t = 0
    def ticks_ms(self):
        return self.t if self.virtual else time.ticks_ms()
    def ticks_diff(self, a, b):
        return a - b if self.virtual else time.ticks_diff(a, b)

def scenario(name, over, n, cats, hz, ack=False):
    cfg = config.load(None, over)
    ids = config.category_ids(cfg)
    use = [ids.index(c) for c in cats]
    dev = FlashDev()
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), "/b")
    hal = Clock(hz > 0)
    st = Store("/b/store", cfg, ids, hal)
    dev.reset_counters()
    gc.collect()
    first_drop = -1
    k = len(use)
    w = codec.BatchWriter("bench", 64 + 200 * codec.ENTRY_LEN)
    t0 = time.ticks_us()
    for i in range(n):
        st.append(use[i % k], 1, 1700000000000 + i, 0, i)
        if hz:
            hal.t = (i + 1) * 1000 // hz
            if first_drop < 0 and st.stats["dropped"]:
                first_drop = i
            if ack and (i + 1) % hz == 0:  # once a second, as the agent: forward, ack, cursor
                st.tick(hal.ticks_ms())
                w.start("essential", st.boot, 0)
                got, seg, off = st.fill(use[0], w)
                if got:
                    st.ack(use[0], w.last_seq, seg, off)
                st.save_cursor()
        st.tick(hal.ticks_ms())
    st.commit()
    us = time.ticks_diff(time.ticks_us(), t0)
    out = {"name": name, "readings": n, "us": us, "erases": dev.erases, "progs": dev.progs,
           "prog_bytes": dev.prog_bytes, "record_bytes": n * 28, "commits": st.stats["commits"],
           "first_drop": first_drop, "overwrites": dev.overwrites}
    st.close()
    vfs.umount("/b")
    print(json.dumps(out))

n = int(sys.argv[1])
three = ["essential", "diagnostics", "usage"]
for rep in range(3):
    scenario("default", {}, n, three, 0)
scenario("baseline", {"store": {"flush_n": 1}}, n // 10, three, 0)
# 10 readings/s, all in `essential` (the only category stored without consent). "hz10": as
# the agent runs it (commit each second, forward + ack + cursor each second), one hour;
# "hz10_10s": the same with commits every 10 s / 100 readings; "outage": no acks, until past
# the first quota eviction.
scenario("hz10", {}, 36000, ["essential"], 10, True)
scenario("hz10_10s", {"store": {"flush_ms": 10000, "flush_n": 100}}, 36000, ["essential"], 10, True)
scenario("outage", {}, 45000, ["essential"], 10)
"""


def run_store_bench(readings: int = 30000) -> dict:
    """Run the scenarios; returns the figures (see module docstring)."""
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as d:
        path = os.path.join(d, "bench_store.py")
        with open(path, "w") as f:
            f.write(_MP_SCRIPT)
        r = subprocess.run(
            [micropython_path(), "-X", "heapsize=8M", path, str(readings)],
            capture_output=True,
            text=True,
            timeout=600,
            env=mp_env(),
        )
    if r.returncode != 0:
        raise ToolError(f"store benchmark failed: {(r.stdout + r.stderr)[-2000:]}")
    runs = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    best = max((x for x in runs if x["name"] == "default"), key=lambda x: x["readings"] / x["us"])
    base = next(x for x in runs if x["name"] == "baseline")
    slow = next(x for x in runs if x["name"] == "hz10")
    slow10 = next(x for x in runs if x["name"] == "hz10_10s")
    out = next(x for x in runs if x["name"] == "outage")
    epr = best["erases"] / best["readings"]
    base_epr = base["erases"] / base["readings"]
    hz_eps = slow["erases"] / (slow["readings"] / 10)  # erases per second at 10 readings/s
    hz_eps10 = slow10["erases"] / (slow10["readings"] / 10)
    blocks = 512
    return {
        "appends_per_s": round(best["readings"] * 1e6 / best["us"]),
        "erases_per_reading": round(epr, 4),
        "program_bytes_per_record_byte": round(best["prog_bytes"] / best["record_bytes"], 3),
        "commits": best["commits"],
        "baseline_appends_per_s": round(base["readings"] * 1e6 / base["us"]),
        "baseline_erases_per_reading": round(base_epr, 4),
        "baseline_program_bytes_per_record_byte": round(
            base["prog_bytes"] / base["record_bytes"], 3
        ),
        "erase_ratio": round(base_epr / epr, 1),
        "appends_ratio": round(best["readings"] / best["us"] / (base["readings"] / base["us"]), 1),
        "hz10_erases_per_reading": round(slow["erases"] / slow["readings"], 4),
        "hz10_erases_per_s": round(hz_eps, 3),
        "hz10_program_bytes_per_record_byte": round(slow["prog_bytes"] / slow["record_bytes"], 3),
        "hz10_lifetime_years": round(blocks * NOR_CYCLES / hz_eps / YEAR_S, 1),
        "hz10_commit10s_erases_per_s": round(hz_eps10, 3),
        "hz10_commit10s_lifetime_years": round(blocks * NOR_CYCLES / hz_eps10 / YEAR_S, 1),
        "hz10_outage_s": out["first_drop"] // 10 if out["first_drop"] >= 0 else None,
        "overwrites": sum(x["overwrites"] for x in runs),
    }


def bench_store(args) -> dict:
    """Benchmark entry for host_tools.bench.cli.BENCHES."""
    return run_store_bench()
