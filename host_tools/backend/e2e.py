"""End-to-end acknowledgements for the collector (issue 4, docs/MQTT.md section 4).

A QoS 1 PUBACK only proves that the broker had a batch; a broker killed before it delivered
the batch to the collector loses it. A device configured with `mqtt.e2e_ack: true` therefore
keeps every batch until the collector acknowledges it on `{prefix}/{device}/ack`, and re-sends
what is not acknowledged after a reconnect or `mqtt.e2e_timeout_ms`. This collector sends those
acknowledgements once a batch is decoded and handed to its store.
"""

from __future__ import annotations

import struct

from edge import codec
from host_tools.backend.collect import Collector


def ack_payload(first_seq: int, last_seq: int) -> bytes:
    """One acknowledgement: the low 32 bits of the first and last seq of the batch, u32
    big-endian each (docs/FORMAT.md 1: the device matches them against its batches in flight,
    which never lie 2^32 seqs apart)."""
    return struct.pack(">II", first_seq & codec.SEQ_LOW, last_seq & codec.SEQ_LOW)


class AckingCollector(Collector):
    """A Collector that acknowledges every decoded batch to its device (QoS 0: an ack that is
    lost is made up by the device's re-send, which the collector de-duplicates and acks again)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.counts["acks_sent"] = 0

    def _on_batch(self, device: str, payload: bytes) -> None:
        super()._on_batch(device, payload)
        try:
            batch = codec.decode_batch(payload)
        except (codec.FormatError, ValueError):
            return
        r = batch["readings"]
        if not r:
            return
        self.client.publish(
            f"{self.prefix}/{batch['device']}/ack", ack_payload(r[0][0], r[-1][0]), qos=0
        )
        with self.lock:
            self.counts["acks_sent"] += 1
