# Runs the real agent (edge.main) with one fault injected, for tests/test_health.py:
#   faulty_agent.py MODE CONFIG.json
# MODE: "hung_forwarder" / "hung_commands" (that task stops making progress while the loop
# runs), "blocked_loop" (the sampler blocks the event loop), "crash" (the sampler raises).
import asyncio
import sys
import time

from edge import agent, commands, forwarder, main

mode = sys.argv[1]
sys.argv.pop(1)  # edge.main reads the config path from argv[1]


async def _hung_forwarder(self, hb=None):
    await asyncio.Event().wait()  # never set: no heartbeat, no forwarding


async def _faulty_sampler(self):
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < 1000:
        await asyncio.sleep_ms(10)
    print("@log fault: " + mode)
    if mode == "crash":
        raise RuntimeError("injected")
    while True:  # blocks the event loop: only the watchdog's thread still runs
        pass


async def _hung_commands(self, hb=None):
    await asyncio.Event().wait()  # never set: the command task stops, connected, no beat


if mode == "hung_forwarder":
    forwarder.Forwarder.run = _hung_forwarder
elif mode == "hung_commands":
    commands.Commands.run = _hung_commands
elif mode in ("blocked_loop", "crash"):
    agent.Agent.sampler = _faulty_sampler
else:
    raise SystemExit("unknown mode " + mode)
main._cli()
