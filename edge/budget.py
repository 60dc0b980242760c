# Latency budgets (docs/MQTT.md 9): per category, how long its oldest unsent reading may wait
# on the device before it is published. The forwarder asks due() on every pass; this module
# keeps, per category, when its waiting readings were first seen and whether an urgent one waits.

from array import array

from micropython import const

_NAP_MS = const(1000)  # the longest nap: new readings are noticed within it (or half a budget)
WAIT = const(1)  # inside its latency budget: it waits for more readings
DUE = const(2)  # a batch goes now


class Budgets:
    def __init__(self, cfg, categories, hal):
        self.hal = hal
        default = cfg["batch"]["latency_ms"]
        budgets = [
            (cfg["categories"][name] or {}).get("latency_ms", default) for name in categories
        ]
        # the forwarder naps at most half the shortest budget, so a reading is first seen by
        # then, and a category goes that much before its budget runs out
        self.nap_ms = max(1, min(_NAP_MS, min(budgets) // 2))
        self.budget = array("i", budgets)
        self.since = array("i", [-1] * len(categories))  # ticks it was first seen waiting
        self.urgent = bytearray(len(categories))  # an urgent reading waits: send now
        self.next_ms = self.nap_ms  # the pass's shortest time to a category's deadline

    def due(self, cat, waiting, full, radio_on):
        """Case 1: nothing waits (`waiting` false): 0. Case 2: a full batch (`full`) or an
        urgent reading, or its oldest reading's budget runs out before the next pass could
        notice: DUE. Case 3: the radio is on for another batch and it has waited half its
        budget: DUE (one wake-up instead of two). Case 4: else WAIT, and `next_ms` learns when
        it will be due. Ages are in HAL ticks (virtual time in a replay or the day bench)."""
        if not waiting:
            self.since[cat] = -1
            self.urgent[cat] = 0
            return 0
        now = self.hal.ticks_ms()
        if self.since[cat] < 0:
            self.since[cat] = now
        if self.urgent[cat] or full:
            return DUE
        # due a nap (the most a reading can have waited unseen) and 2 % before the budget ends
        budget = self.budget[cat]
        left = budget - budget // 50 - self.nap_ms - self.hal.ticks_diff(now, self.since[cat])
        if left <= 0 or (radio_on and left + self.nap_ms <= budget // 2):
            return DUE
        if left < self.next_ms:
            self.next_ms = left
        return WAIT

    def sent_all(self, cat):
        """Everything of the category went: the next reading starts a new wait."""
        self.since[cat] = -1
        self.urgent[cat] = 0
