# Runs the ESP32 HAL's Wi-Fi calls and edge/net.py under unix MicroPython with fakes at the
# hardware edge only (`machine`, `network` put into sys.modules): tests/test_wifi.py.
#   wifi_driver.py SECRETS_DIR
import asyncio
import json
import sys
import time


import fake_radio  # noqa: E402

fake_radio.install()
_WLAN = fake_radio.WLAN
_Network = fake_radio.Network

from edge import net  # noqa: E402
from edge.hal import esp32  # noqa: E402

out = {}
secrets = sys.argv[1]
with open(secrets + "/good.json", "w") as f:
    f.write(json.dumps({"ssid": "lab", "password": "pw1"}))
with open(secrets + "/bad.json", "w") as f:
    f.write("{ssid")
out["from_config"] = net.credentials(
    {"device_id": "d1", "wifi": {"ssid": "home", "password": "x", "timeout_ms": 600}}
)
out["from_secrets"] = net.credentials({"device_id": "d1"}, secrets + "/good.json")
out["none"] = net.credentials({"device_id": "d1"}, secrets + "/missing.json")
try:
    net.credentials({"device_id": "d1"}, secrets + "/bad.json")
except net.WifiError as e:
    out["bad"] = str(e)

hal = esp32.Hal()
logs = []
st = net.Station(hal, out["from_config"], logs.append)
ticks = [0, 0]  # sampler loops, longest gap between two loops (ms)


async def sampler():
    last = time.ticks_ms()
    while True:
        ticks[0] += 1
        now = time.ticks_ms()
        ticks[1] = max(ticks[1], time.ticks_diff(now, last))
        last = now
        await asyncio.sleep_ms(10)


async def main():
    sam = asyncio.create_task(sampler())
    task = asyncio.create_task(st.run())
    t0 = time.ticks_ms()
    await asyncio.wait_for_ms(st.up.wait(), 5000)
    out["first_up_ms"] = time.ticks_diff(time.ticks_ms(), t0)
    out["status_up"] = st.status()
    _WLAN.drop = True
    await asyncio.sleep_ms(1200)
    out["after_drop_down"] = not st.up.is_set() or st.drops == 1
    await asyncio.wait_for_ms(st.up.wait(), 5000)
    out["status_again"] = st.status()
    out["elapsed_ms"] = time.ticks_diff(time.ticks_ms(), t0)
    out["sampler_ticks"] = ticks[0]
    out["sampler_max_gap_ms"] = ticks[1]
    task.cancel()
    sam.cancel()


asyncio.run(main())
out["wlan_log"] = _WLAN.log
out["hostnames"] = _Network.names
out["logs"] = logs
print(json.dumps(out))
