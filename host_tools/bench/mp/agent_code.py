# The agent's code footprint (docs/MQTT.md 6): importing this module loads every module
# the agent loads in a unix run with the simulated appliance, so their bytecode is measured as
# code and not as working set. Run as a script it prints the heap in use after a collection
# (the interpreter's own share included), which tests/test_forward.py uses to size the heap.

import asyncio
import gc

import edge.batchv2  # noqa: F401  (the forwarder's writer for batch.format 2, the default)
import edge.board  # noqa: F401  (watchdog.timeout_ms reads the board file)
import edge.config
import edge.hal.unix.flashdev  # noqa: F401  (the unix HAL mounts the emulated flash)
import edge.hal.unix.hal  # noqa: F401
import edge.main  # noqa: F401  (config, agent and everything the agent imports)
import edge.sensors.simfridge  # noqa: F401
import edge.store.rawlog  # noqa: F401  (the unix board's store backend, imported when chosen)

# A config check imports the schema and unloads it (edge/config.py), as every boot does; the
# names it interned stay for the whole run (MicroPython never frees interned strings, and their
# pools grow by doubling: the pool it added was 15 KB here), so they count as code.
edge.config.load(None, {"sim": {"enabled": True}})

# asyncio loads these parts on first use of their names
_LAZY = (asyncio.StreamWriter, asyncio.Event, asyncio.wait_for_ms)

if __name__ == "__main__":
    gc.collect()
    print(gc.mem_alloc())
