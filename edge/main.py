# Agent entry point. On a board, /main.py calls run("/config.json"); on unix the host runs
# `micropython -m edge.main CONFIG.json` (host_tools/agent/run.py).

import asyncio
import sys

from edge import config
from edge.agent import Agent
from edge.hal import load as load_hal


def run(config_path=None):
    text = None
    if config_path:
        try:
            with open(config_path) as f:
                text = f.read()
        except OSError as e:
            raise config.ConfigError("cannot read config %s: %s" % (config_path, e))
    cfg = config.load(text)
    hal = load_hal()
    agent = Agent(cfg, hal)
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
        # the next boot reports reset_cause "crash" (issue 6 item 7, edge/health.py)
        hal.note_reset("crash", type(e).__name__)
        raise
    finally:
        asyncio.new_event_loop()  # reset the loop so a soft restart starts clean
    hal.note_reset("stopped")
    return agent


def _cli():
    try:
        run(sys.argv[1] if len(sys.argv) > 1 else None)
    except config.ConfigError as e:
        sys.stderr.write("edge: config error: %s\n" % e)
        sys.exit(2)


if __name__ == "__main__":
    _cli()
