# Drive edge.mqtt.client.Client against a test broker (tests/test_mqtt.py). Modes:
#   reconnect HOST PORT K         connect K times; the scripted fake broker breaks each session
#   tls HOST PORT CA.der HOSTNAME connect once over TLS, publish one QoS 1 message
#   auth HOST PORT USER PASS SECS run the Link supervisor with these credentials for SECS
#   pub HOST PORT USER PASS TOPIC publish one QoS 1 message as USER
#   blackhole HOST PORT KEEPALIVE connect, then report when the dead link is detected
# Prints one JSON line.
import asyncio
import json
import sys
import time

from edge import codec
from edge.mqtt.client import Client, MQTTError, tls_context

mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {}


async def reconnect(k):
    c = Client("fuzz-dev", 512, keepalive=5)
    errors = 0
    for _ in range(k):
        try:
            await c.connect(host, port, clean=True)
        except (OSError, MQTTError):
            errors += 1
            continue
        t0 = time.ticks_ms()
        while c.connected.is_set() and time.ticks_diff(time.ticks_ms(), t0) < 3000:
            await asyncio.sleep_ms(2)
        c._close()
    out.update(c.stats)
    out["connect_errors"] = errors
    out["reasons"] = c.parser.rejects


async def tls(ca, hostname):
    with open(ca, "rb") as f:
        ctx = tls_context(f.read())
    c = Client("tls-dev", 512, tls=(ctx, hostname))
    try:
        await c.connect(host, port)
        await c.publish(b"edge/tls-dev/t/essential", b"x", 1)
        t0 = time.ticks_ms()
        while c.stats["pubacks"] < 1 and time.ticks_diff(time.ticks_ms(), t0) < 3000:
            await asyncio.sleep_ms(5)
        out["ok"] = c.stats["pubacks"] == 1
        await c.disconnect()
    except (MQTTError, OSError) as e:
        out["ok"] = False
        out["error"] = str(e) or repr(e)
    out["connects"] = c.stats["connects"]


async def pub(user, password, topic):
    c = Client(user, 512, user=user, password=password)
    await c.connect(host, port, clean=True)
    await c.publish(topic.encode(), b"hello", 1)
    t0 = time.ticks_ms()
    while c.stats["pubacks"] < 1 and time.ticks_diff(time.ticks_ms(), t0) < 3000:
        await asyncio.sleep_ms(5)
    out["pubacks"] = c.stats["pubacks"]
    await c.disconnect()


async def auth(user, password, secs):
    from edge import config
    from edge.mqtt.link import Link, make_client

    cfg = config.load(
        None,
        {
            "device_id": user,
            "mqtt": {"host": host, "port": port, "user": user, "password": password},
        },
    )
    client = make_client(cfg, 512)
    logs = []

    async def birth():
        await client.publish(codec.topic("edge", user, "status"), b"{}", 0, True)

    link = Link(client, cfg, [(codec.topic("edge", user, "cmd", "#"), 1)], birth, logs.append)
    task = asyncio.create_task(link.run())
    await asyncio.sleep_ms(int(float(secs) * 1000))
    task.cancel()
    out.update(link.stats)
    out["connects"] = client.stats["connects"]
    out["logs"] = logs


async def blackhole(ka):
    c = Client("bh-dev", 512, keepalive=ka)
    await c.connect(host, port, clean=True)
    t0 = time.ticks_ms()
    while c.connected.is_set() and time.ticks_diff(time.ticks_ms(), t0) < ka * 5000:
        await c.keepalive_check()
        await asyncio.sleep_ms(100)
    out["alive_ms"] = time.ticks_diff(time.ticks_ms(), t0)
    out.update(c.stats)


a = sys.argv[4:]
if mode == "reconnect":
    asyncio.run(reconnect(int(a[0])))
elif mode == "tls":
    asyncio.run(tls(a[0], a[1]))
elif mode == "auth":
    asyncio.run(auth(a[0], a[1], a[2]))
elif mode == "pub":
    asyncio.run(pub(a[0], a[1], a[2]))
elif mode == "blackhole":
    asyncio.run(blackhole(int(a[0])))
print(json.dumps(out))
