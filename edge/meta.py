# Channel metadata for the backend (docs/MQTT.md 2, docs/FORMAT.md "meta"): what each channel's
# integer means (name, category, unit, decimals), published retained on {prefix}/{device}/meta
# after every connect, so the collector can show 21.50 degC instead of 2150 without the batch
# format carrying units.

import json

FORMAT = 1


def payload(cfg, room):
    """The meta JSON as bytes, at most `room` bytes: channel names are left out when the full
    form does not fit, and None is returned when even [id, unit, decimals] rows do not."""
    full = []
    short = []
    for ch in cfg["channels"]:
        unit = ch.get("unit")
        dec = ch.get("decimals", 0)
        full.append([ch["id"], ch["name"], ch["category"], unit, dec])
        if unit is not None or dec:
            short.append([ch["id"], unit, dec])
    for rows, form in ((full, "full"), (short, "short")):
        b = json.dumps({"format": FORMAT, "form": form, "channels": rows}).encode()
        if len(b) <= room:
            return b
    return None
