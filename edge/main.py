# Agent entry point. On a board, /main.py calls run("/config.json"); on unix the host runs
# `micropython -m edge.main CONFIG.json` (host_tools/agent/run.py).

import asyncio
import json
import sys

from edge import board, config
from edge.agent import Agent
from edge.hal import load as load_hal

_RESET_EXIT = 75  # a reset was asked for (cmd/reboot): the supervisor starts us again


# /main.py sets this to the boot selector's status summary when the boot has nothing to report
# or confirm (edge/ota/boot.py brief()); None: the agent loads edge/ota/trial.py for it
BOOT_OTA = None


def _import_early(text):
    """Import, before the config check and before the agent allocates its buffers, the modules
    the agent would import later (its store backend, its data source, asyncio's parts that load
    on first use of their names). An import may intern names into a new qstr pool, which
    MicroPython allocates in one piece, twice the size of the last one (1,280 entries here),
    and never frees: once the config check has loaded and dropped the schema and the buffers
    are in place, a code + 48 KiB heap may have no such block left, and the import fails for
    ever (a deployed agent did: the boot selector's names had moved the pool's turn). `text`
    is the config as read; a config the check will refuse imports nothing here."""
    try:
        cfg = json.loads(text) if text else {}
        store = cfg.get("store") or {}
        raw = store.get("backend", "auto") != "segments" and board.load(cfg).get("log_partition")
    except (ValueError, AttributeError, TypeError, OSError):
        return None
    if raw:
        import edge.store.rawlog  # noqa: F401
    else:
        import edge.store.store  # noqa: F401
    if cfg.get("inputs"):
        import edge.inputs  # noqa: F401
    else:
        import edge.sensors.simfridge  # noqa: F401
    return (asyncio.StreamWriter, asyncio.Event, asyncio.wait_for_ms)


def run(config_path=None, root=None):
    """Run the agent until its run ends; returns it. root: the filesystem root the boot selector
    (edge/ota/boot.py) started us from ("" on a board), None when started directly: then
    updates and remote config are off. agent.reboot says a reset was asked for."""
    text = None
    if config_path:
        try:
            with open(config_path) as f:
                # one byte past the limit is enough to know it is too large: a huge file is
                # refused with a message, not read into the heap (docs/SECURITY.md 2)
                text = f.read(config.CONFIG_MAX + 1)
        except OSError as e:
            raise config.ConfigError("cannot read config %s: %s" % (config_path, e))
    _import_early(text)
    cfg = config.load(text)
    hal = load_hal()
    agent = Agent(cfg, hal)
    agent.ota_root = root
    agent.ota = BOOT_OTA if root is not None else None
    # the console's first agent line: what booted and why (`edgectl logs` highlights it)
    agent.log(
        "boot: device %s on %s (%s), reset cause %s%s"
        % (
            cfg["device_id"],
            cfg["board"],
            hal.platform,
            hal.reset_cause,
            " (%s)" % hal.reset_detail if hal.reset_detail else "",
        )
    )
    try:
        asyncio.run(agent.main())
    except Exception as e:
        # the next boot reports reset_cause "crash" (docs/HEALTH.md 3, edge/health.py)
        hal.note_reset("crash", type(e).__name__)
        raise
    finally:
        asyncio.new_event_loop()  # reset the loop so a soft restart starts clean
    hal.note_reset("soft" if agent.reboot else "stopped")
    return agent


def _cli():
    try:
        agent = run(sys.argv[1] if len(sys.argv) > 1 else None)
    except config.ConfigError as e:
        sys.stderr.write("edge: config error: %s\n" % e)
        sys.exit(2)
    if agent.reboot:
        sys.exit(_RESET_EXIT)


if __name__ == "__main__":
    _cli()
