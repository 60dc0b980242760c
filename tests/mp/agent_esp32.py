# The whole agent with the ESP32 HAL under unix MicroPython, the fake radio of
# tests/mp/fake_radio.py at the hardware edge and a real broker: the composition root starts
# the Wi-Fi station (tests/test_wifi.py). Run in a scratch directory (the store is relative).
#   agent_esp32.py CONFIG REFUSE   (REFUSE: associations the AP ignores first)
import json
import sys

import fake_radio

fake_radio.install()
fake_radio.WLAN.refuse = int(sys.argv[2])

import edge.hal  # noqa: E402
from edge.hal import esp32  # noqa: E402

edge.hal.load = esp32.Hal  # what edge.hal.load() returns on an ESP32
from edge import main  # noqa: E402

agent = main.run(sys.argv[1])
wdt = fake_radio.WDT
print(
    "@wdt "
    + json.dumps({"timeout": wdt.timeout, "feeds": wdt.feeds, "max_gap_ms": wdt.max_gap_ms})
)
print("@wlan " + json.dumps(fake_radio.WLAN.log))
