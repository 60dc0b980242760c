# Runs the deploy self-test (host_tools/board/mp/deploy_selftest.py) the way an ESP32 runs it,
# with the ESP32 HAL over the fake radio of tests/mp/fake_radio.py: its Wi-Fi and broker checks
# (tests/test_deploy_selftest.py).
#   selftest_esp32.py SCRIPT CONFIG REFUSE   (REFUSE: associations the AP ignores)
import sys

import fake_radio

fake_radio.install()
fake_radio.WLAN.refuse = int(sys.argv[3])

import edge.hal  # noqa: E402
from edge.hal import esp32  # noqa: E402

edge.hal.load = esp32.Hal  # what edge.hal.load() returns on an ESP32
with open(sys.argv[1]) as f:
    src = f.read()
exec(src, {"CONFIG": sys.argv[2], "ENTRY": "edge.main", "NETWORK": True, "LISTEN_MS": 200})
