"""MQTT 3.1.1 section 4.4 (MQTT-4.4.0-1): when the broker kept the session, the agent re-sends
the PUBLISH packets it has no PUBACK for under their original packet ids with DUP set, then
carries on after them. A scripted broker (paho harness style) checks the packets byte for byte."""

from __future__ import annotations

from edge import codec
from host_tools.agent.run import agent_config
from tests import mqtt_harness as mq

DEVICE = "dup-1"
WILL = (f"edge/{DEVICE}/status".encode(), b'{"state":"offline"}', True)


def session_script(drop_after: int, conns: list[list[mq.Packet]]):
    """Connection 1: CONNACK without session, takes telemetry without PUBACK, drops the link
    after `drop_after` of them. Connection 2: CONNACK with session present, PUBACKs all."""

    def script(conn: mq.Conn, n: int) -> None:
        # client id = device id, keepalive 30, clean session 0, the retained offline Will
        conn.expect(mq.connect(DEVICE, 30, clean=False, will=WILL))
        conn.send(mq.connack(session_present=n == 1))
        got: list[mq.Packet] = []
        conns.append(got)
        while (p := conn.read()) is not None:
            if p.kind == mq.SUBSCRIBE:
                conn.send(mq.suback(p.pid, 1))
            elif p.kind == mq.PINGREQ:
                conn.send(mq.pingresp())
            elif p.kind == mq.DISCONNECT:
                return
            elif p.kind == mq.PUBLISH:
                topic, pid, _ = p.publish_fields()
                if b"/t/" not in topic:  # status, meta, receipts
                    if pid:
                        conn.send(mq.puback(pid))
                    continue
                got.append(p)
                if n == 0 and len(got) == drop_after:
                    conn.drop()
                    return
                if n == 1:
                    conn.send(mq.puback(pid))

    return script


def test_unacknowledged_publishes_are_resent_with_their_ids_and_dup(agents):
    conns: list[list[mq.Packet]] = []
    with mq.FakeBroker(timeout=60) as broker:
        broker.serve(session_script(2, conns), connections=2)
        cfg = agent_config(
            "unix-sim",
            device_id=DEVICE,
            mqtt={"port": broker.port, "window": 8},
            sim={"count": 1500, "rate_hz": 3000},
        )
        final = agents.run(cfg, 90).final
        broker.join()
    first, second = conns
    assert len(first) == 2
    # the two publishes the broker never acknowledged come first, byte for byte the same but
    # for DUP (same packet ids, same payloads)
    for p1, p2 in zip(first, second[:2], strict=True):
        assert p1.first & 0x08 == 0 and p2.first == p1.first | 0x08
        assert p2.body == p1.body
    # then the agent carries on after them: no reading is sent twice on the second link
    seqs = [r[0] for p in second for r in codec.decode_batch(p.publish_fields()[2])["readings"]]
    assert len(seqs) == len(set(seqs)) == final["appended"] == 500
    assert all(p.first & 0x08 == 0 for p in second[2:])
