# Runs edge.inputs sources under unix MicroPython for the pty tests: builds the sources from a
# config file, polls them for N ms (real clock), prints "R <ch> <value>" per reading and a final
# "S <json stats>" line. Usage: micropython inputs_pty.py CONFIG.json MS
import json
import sys
import time

from edge import inputs
from edge.hal import load

cfg = json.load(open(sys.argv[1]))
ms = int(sys.argv[2])
hal = load()
sources = inputs.build(cfg, hal)


def emit(ch, v):
    print("R", ch, v)


t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < ms:
    n = 0
    for s in sources:
        n += s.poll(hal.ticks_ms(), emit)
    if not n:
        time.sleep_ms(2)
print("S", json.dumps(inputs.stats(sources)))
