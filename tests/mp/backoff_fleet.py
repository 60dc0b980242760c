# A fleet's reconnects under edge/mqtt/link.py backoff_ms (docs/MQTT.md 3), in virtual time:
# N devices lose the broker at t=0, it returns at OUTAGE_MS; each device retries after the
# backoff the link task would sleep (one broker: every attempt ends a round). Prints, as JSON,
# the first and last moment a device reconnects, measured from the broker's return.
#   backoff_fleet.py DEVICES OUTAGE_MS [CAP_MS]
import json
import random
import sys

from edge.mqtt.link import BACKOFF_CAP_MS, backoff_ms

n = int(sys.argv[1])
outage = int(sys.argv[2])
cap = int(sys.argv[3]) if len(sys.argv) > 3 else BACKOFF_CAP_MS
random.seed(7)
first = None
last = 0
for _ in range(n):
    t = 0  # the device's first failed attempt is at the outage's start
    attempt = 0
    while t < outage:
        t += backoff_ms(attempt, 0, cap, t)
        attempt += 1
    late = t - outage
    first = late if first is None or late < first else first
    last = max(last, late)
print(json.dumps({"first_ms": first, "last_ms": last, "cap_ms": cap}))
