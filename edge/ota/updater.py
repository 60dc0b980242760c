# Bundle download over MQTT (docs/OTA.md section 7): the bundle is published retained, one chunk
# per topic `{topic}/{index}`; the device subscribes to a few chunk topics at a time (QoS 1),
# feeds each arriving chunk to the installer in order and unsubscribes from it. The request is
# kept on flash (/ota/download.json), and what reached flash is the progress, so a reconnect or a
# reboot resumes where the bytes stop. Forwarding goes on meanwhile: chunks share the
# connection, never the store.

import asyncio
import binascii
import json
import os

from micropython import const

from edge.mqtt.client import MQTTError
from edge.ota import boot, slots
from edge.ota.boot import DOWNLOAD
from edge.ota.install import Installer, InstallError

_STALL_MS = const(8000)  # no chunk for this long while connected: subscribe again
_GIVE_UP_MS = const(120000)  # no progress for this long: the download fails (resumable)
_PROGRESS_STEP = const(8)  # progress replies per download
_REBOOT_MS = const(1500)  # time for the "installed" reply to go out before the reset


class Updater:
    """One download into the inactive slot. `req`: the validated cmd/update document (see
    edge/ota/remote.py); `policy`: what the installer checks the signed manifest against."""

    def __init__(self, agent, req, policy):
        self.a = agent
        self.req = req
        self.root = agent.ota_root
        st = boot.read_state(self.root)
        self.slot = slots.inactive_slot(st)
        self.size = req["size"]
        self.chunk = req["chunk"]
        self.topic = req["topic"].encode()
        self.window = (agent.cfg.get("ota") or {}).get("window", 4)
        self.ins = Installer(
            self.root, self.slot, self.size, binascii.unhexlify(req["sha256"]), policy
        )
        self.got = {}  # chunk index -> payload, until it is its turn
        self.subscribed = {}  # chunk index -> True while subscribed
        self.next = 0
        self.off = 0
        self.event = asyncio.Event()
        self.done = False
        self.cancelled = False
        self.state = "starting"
        self.stats = {"chunks": 0, "bytes": 0, "resubscribes": 0, "duplicates": 0}

    # --- from the read loop ----------------------------------------------------------------
    def owns(self, topic):
        """topic: a view into the receive buffer (edge/mqtt/link.py)."""
        n = len(self.topic)
        return len(topic) > n + 1 and bytes(topic[: n + 1]) == self.topic + b"/"

    def on_chunk(self, topic, payload):
        """A retained chunk arrived; kept (copied out of the receive buffer) only if it is one
        we wait for, so at most `window` chunks are held."""
        try:
            i = int(bytes(topic[len(self.topic) + 1 :]))
        except ValueError:
            return
        if i in self.subscribed and i not in self.got and i >= self.next:
            self.got[i] = bytes(payload)
            self.event.set()
        else:
            self.stats["duplicates"] += 1

    def cancel(self):
        self.cancelled = True
        self.event.set()

    # --- the task ----------------------------------------------------------------------------
    def save(self):
        boot.write_json(self.root, DOWNLOAD, self.req)

    async def run(self, resume):
        """Task: download, verify, stage the trial, reboot. Errors are replied, never raised."""
        a = self.a
        try:
            if resume:
                self.off = self.ins.resume()
            else:
                self.save()
                self.off = self.ins.start()
            self.next = self.off // self.chunk
            self.state = "downloading"
            self.progress(True)
            await self._download()
            m = self.ins.finish()
            self.ins.close()
            st = boot.read_state(self.root)
            slots.stage(
                self.root,
                st,
                "update",
                self.slot,
                st["cfg"],
                self.req.get("id"),
                m["version"],
                m.get("min_version"),
                was=slots.collection(a.cfg),  # the new code must not collect more
                next_key=self._next_key(m),
            )
            _remove(self.root + DOWNLOAD)
            self.state = "installed"
            self.reply({"ok": True, "state": "installed", "version": m["version"]})
            a.log(
                "ota: %s installed in slot %s, rebooting into the trial"
                % (m["version"], self.slot)
            )
            await asyncio.sleep_ms(_REBOOT_MS)
            a.request_reboot("update %s installed" % m["version"])
        except (InstallError, ValueError) as e:  # BundleError is a ValueError
            self.fail(str(e), True)
        except OSError as e:
            self.fail("flash error: %s" % e, False)
        except MemoryError as e:
            import sys

            sys.print_exception(e)
            self.fail("out of memory while installing", False)
        finally:
            self.ins.close()
            self.done = True
            await self._unsubscribe_all()
            if self.a.updater is self:
                self.a.updater = None
            # the code of an update is not needed until the next one (docs/OTA.md 10)
            from edge import ota

            ota.unload(
                "edge.ota.updater",
                "edge.ota.install",
                "edge.ota.remote",
                "edge.ota.slots",
                "edge.ota.boot",
                "edge.bundle",
                "edge.lms",
            )

    def _next_key(self, m):
        """The key rotation the signed manifest carries, for the trial to pass on once it is
        confirmed (docs/OTA.md 3), or None."""
        pub = m.get("next_key")
        if pub is None:
            return None
        return {
            "pub": binascii.hexlify(pub).decode(),
            "id": slots.key_id(pub),
            "from": self.ins.policy["key_from"],
        }

    def fail(self, why, final):
        """A refused bundle forgets the download; a flash or memory error keeps it (resume)."""
        self.state = "failed"
        if final:
            _remove(self.root + DOWNLOAD)
        self.reply({"ok": False, "state": "refused" if final else "failed", "error": why})
        self.a.log("ota: update failed: " + why)

    def reply(self, doc):
        doc["version"] = doc.get("version") or self.req["version"]
        if self.req.get("id") is not None:
            doc["id"] = self.req["id"]
        self.a.cmds.reply("update", doc)

    def progress(self, force=False):
        step = max(self.size // _PROGRESS_STEP, 1)
        if force or self.off // step != (self.off - self.chunk) // step:
            self.reply({"ok": True, "state": self.state, "offset": self.off, "size": self.size})

    async def _download(self):
        a = self.a
        client = a.client
        conn = -1
        quiet = 0  # ms without progress
        stalled = 0
        last = self.off
        nchunks = (self.size + self.chunk - 1) // self.chunk
        while self.off < self.size:
            if self.cancelled:
                raise InstallError("cancelled by cmd/update cancel")
            if not client.connected.is_set():
                await asyncio.sleep_ms(200)
                continue
            if conn != a.link.stats["sessions"] or stalled >= _STALL_MS:
                # a new session, or silence: subscribe again to what we wait for; MQTT 3.8.4
                # re-sends the retained message of a filter that is subscribed again
                if conn == a.link.stats["sessions"]:
                    self.stats["resubscribes"] += 1
                conn = a.link.stats["sessions"]
                stalled = 0
                self.subscribed = {}
            try:
                i = self.next
                while i < min(self.next + self.window, nchunks):
                    if i not in self.subscribed:
                        self.subscribed[i] = True
                        await client.subscribe(self._chunk_topic(i), 1)
                    i += 1
            except (OSError, MQTTError):
                continue  # the link supervisor reconnects
            # no await between the clear and the check: a chunk that came while we subscribed
            # is in self.got already, one that comes later sets the event
            self.event.clear()
            if self.next not in self.got:
                try:
                    await asyncio.wait_for_ms(self.event.wait(), 500)
                except asyncio.TimeoutError:
                    stalled += 500
                    quiet += 500
                    if quiet >= _GIVE_UP_MS:
                        raise InstallError(
                            "stalled: chunk %d of %s did not arrive in %d s (is the bundle "
                            "published there, retained?)"
                            % (self.next, self.req["topic"], quiet // 1000)
                        )
                    continue
            while self.next in self.got:
                data = self.got.pop(self.next)
                want = min(self.chunk, self.size - self.next * self.chunk)
                if len(data) != want:
                    raise InstallError(
                        "chunk %d has %d bytes, expected %d" % (self.next, len(data), want)
                    )
                skip = self.off - self.next * self.chunk  # resumed inside this chunk
                if skip < want:
                    self.ins.feed(memoryview(data)[skip:])
                    self.off += want - skip
                self.stats["chunks"] += 1
                self.stats["bytes"] += len(data)
                del self.subscribed[self.next]
                try:
                    await client.unsubscribe(self._chunk_topic(self.next))
                except (OSError, MQTTError):
                    pass  # a new session resubscribes only what is still missing
                self.next += 1
                self.progress()
            if self.off != last:
                last = self.off
                quiet = 0
                stalled = 0

    def _chunk_topic(self, i):
        return self.topic + b"/" + str(i).encode()

    async def _unsubscribe_all(self):
        for i in list(self.subscribed):
            try:
                await self.a.client.unsubscribe(self._chunk_topic(i))
            except (OSError, MQTTError):
                break
        self.subscribed = {}


def pending(root):
    """The download request a reboot interrupted, or None."""
    try:
        with open(root + DOWNLOAD) as f:
            req = json.load(f)
    except (OSError, ValueError):
        return None
    return req if isinstance(req, dict) else None


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass
