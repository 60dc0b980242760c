# The embedded example device: the simulated fridge's categories and channels, the defaults of
# config keys `categories` and `channels` (edge/schema.py, docs/CONFIG.md). Shared contract
# module; kept resident on the device, so a config that uses these defaults shares the objects.

DEVICE = {
    "categories": {
        # essential: 1 MiB = 37,449 readings of 28 bytes, about 1 hour at 10 readings/s
        "essential": {"quota": 1048576, "evict": "drop_oldest"},
        "diagnostics": {"quota": 262144, "evict": "drop_oldest"},
        "usage": {"quota": 262144, "evict": "drop_oldest"},
        "location": {"quota": 65536, "evict": "drop_oldest"},
        "marketing": {"quota": 65536, "evict": "drop_oldest"},
    },
    "channels": [
        {"id": 1, "name": "cabinet_temp_cC", "category": "essential"},
        {"id": 2, "name": "freezer_temp_cC", "category": "essential"},
        {"id": 3, "name": "compressor_power_W", "category": "diagnostics"},
        {"id": 4, "name": "defrost_cycles", "category": "diagnostics"},
        {"id": 5, "name": "door_opens", "category": "usage"},
        {"id": 6, "name": "ice_maker_uses", "category": "usage"},
    ],
}
