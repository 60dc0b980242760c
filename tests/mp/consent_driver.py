# Test driver (docs/CONSENT.md): the real Agent with its sources replaced by lines on stdin, so a
# host test decides exactly which readings exist and when consent changes. One line in, one "@ok
# ..." line out:
#   r CH N      emit N readings on channel CH            -> @ok r NEXT_SEQ
#   w           commit the store                         -> @ok w
#   c JSON      the appliance UI's local consent call    -> @ok c REPLY_JSON
#   s ID        commit, wait until everything is acknowledged, queue reply/ping {"id": ID}
#               and wait for its PUBACK                   -> @ok s NEXT_SEQ
#   q           stop sampling; the agent drains and exits
import asyncio
import json
import sys

from edge import config
from edge.agent import Agent
from edge.hal import load as load_hal


async def driver(agent):
    reader = asyncio.StreamReader(sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            agent.sampling = False
            return
        line = line.decode().strip()
        op = line[:1]
        arg = line[2:]
        if op == "r":
            ch, n = arg.split()
            for i in range(int(n)):
                agent.emit(int(ch), i)
            out = "r %d" % agent.store.next_seq
        elif op == "w":
            agent.store.commit()
            out = "w"
        elif op == "c":
            out = "c " + json.dumps(agent.cmds.local("consent", arg))
        elif op == "s":
            agent.store.commit()
            n = 0
            while not agent.fwd.idle():
                await asyncio.sleep_ms(2)
                n += 1
                if n % 1000 == 0:
                    print(
                        "@debug fwd ring %d client inflight %d"
                        % (agent.fwd.count, agent.client.inflight)
                    )
            agent.cmds.execute(b"ping", '{"id": %d}' % int(arg), "mqtt")
            agent.cmds.event.set()
            n = 0
            while agent.cmds.out.busy():
                await asyncio.sleep_ms(2)
                n += 1
                if n % 1000 == 0:
                    print("@debug cmds %r %r" % (agent.cmds.out.waiting(), agent.cmds.out.unacked))
            out = "s %d" % agent.store.next_seq
        elif op == "q":
            agent.sampling = False
            return
        else:
            out = "? " + line
        print("@ok " + out)


async def main(agent):
    asyncio.create_task(driver(agent))
    await agent.main()


def run():
    with open(sys.argv[1]) as f:
        cfg = config.load(f.read())
    agent = Agent(cfg, load_hal())
    agent.sources = []
    try:
        asyncio.run(main(agent))
    finally:
        asyncio.new_event_loop()


run()
