# What an agent started by the boot selector does about its boot state (docs/OTA.md section 4):
# report how the last trial ended, and, while this run is itself a trial, confirm it once it has
# proven itself, or record why not and reboot (the selector then rolls back). Imported only by
# an agent that boots through /main.py; the watch task runs only during a trial.

import asyncio
import os

from micropython import const

from edge.ota import boot, slots

_CHECK_MS = const(500)
_TRIAL_MS = const(120000)  # a trial that has not proven itself by then fails
_SETTLE_MS = const(3000)  # and none is confirmed before it has run this long
_ALIVE_MS = const(10000)  # a task silent this long fails the check (without a watchdog)


def outcome(last):
    """The reply for a trial's outcome, on reply/update or reply/config."""
    doc = {
        "ok": last.get("result") == "confirmed",
        "state": last.get("result"),
        "version": last.get("version"),
    }
    if last.get("reason"):
        doc["error"] = "rolled back: " + last["reason"]
    if last.get("cfg_hash"):
        doc["config_hash"] = last["cfg_hash"]
    if last.get("id") is not None:
        doc["id"] = last["id"]
    return doc


def start(agent):
    """At agent start: report an unreported outcome; returns the watch coroutine when this run
    is a trial, else None."""
    root = agent.ota_root
    st = boot.read_state(root)
    last = st.get("last")
    if isinstance(last, dict) and not last.get("reported"):
        agent.cmds.reply("update" if last.get("kind") == "update" else "config", outcome(last))
        last["reported"] = True
        boot.write_state(root, st)
    agent.ota = boot.summary(st)
    t = st.get("trial")
    if isinstance(t, dict) and t.get("tries"):
        agent.ota["running_trial"] = True
        why = widens(agent, t)
        if why:
            # before any task samples: the rollback runs the agent that kept to the consent
            boot.note_failure(root, why)
            agent.log("ota: trial refused, rolling back: " + why)
            agent.request_reboot(why)
            return None
        return watch(agent, st)
    try:
        os.stat(root + boot.DOWNLOAD)
    except OSError:
        return None
    from edge.ota import remote

    remote.resume(agent)  # a download a reboot interrupted goes on
    return None


def widens(agent, t):
    """Why this update's trial collects more than the owner consented to, or None. A release
    carries the embedded default channels and categories (edge/example.py) and the config
    checks, so new code may widen what an unchanged config file collects: the trial compares
    what it would collect with what the agent before it did (recorded when it was staged), by
    the rule cmd/config is held to (docs/OTA.md 8)."""
    was = t.get("was")
    if t.get("kind") != "update" or not isinstance(was, dict):
        return None
    from edge.ota import remote

    try:
        remote.widening(was, agent.cfg, agent.consent)
    except (ValueError, KeyError, TypeError) as e:
        return str(e)
    return None


def self_check(agent, now):
    """None when the trial has proven itself, else what is missing."""
    if not agent.client.connected.is_set():
        return "not connected to the broker"
    waiting = 0
    for i in range(len(agent.categories)):
        waiting += max(agent.store.backlog(i), 0)
    if waiting and not agent.fwd.stats["acked_readings"]:
        return "no reading acknowledged by the broker"
    silent = agent.wd.silent(now, agent.wd.timeout_ms or _ALIVE_MS)
    if silent is not None:
        return "task %s silent for %d ms" % silent
    return None


async def watch(agent, st):
    """Task: confirm this trial once it is connected, has had readings acknowledged and every
    task is alive; after `ota.trial_ms` without that, record why and reboot."""
    root = agent.ota_root
    ota = agent.cfg.get("ota") or {}
    limit = ota.get("trial_ms", _TRIAL_MS)
    hb = agent.wd.add("ota-trial")
    t0 = agent.hal.ticks_ms()
    while True:
        hb.beat()
        await asyncio.sleep_ms(_CHECK_MS)
        now = agent.hal.ticks_ms()
        age = agent.hal.ticks_diff(now, t0)
        why = self_check(agent, now)
        if why is None and age >= ota.get("settle_ms", _SETTLE_MS):
            st = boot.read_state(root)  # what is on flash now, not the copy from boot
            if not st.get("trial"):
                break
            last = slots.confirm(root, st, True)
            agent.ota = boot.summary(st)
            # the retained snapshot still says "trial": an operator (and edgectl update) reads
            # the outcome there, so it goes out now, not at the next status_ms (HEALTH.md 1)
            agent.health.want_snapshot = True
            agent.log("ota: %s %s confirmed" % (last["kind"], last.get("version") or ""))
            agent.cmds.reply("update" if last["kind"] == "update" else "config", outcome(last))
            break
        if age >= limit:
            why = "self-check failed after %d s: %s" % (age // 1000, why or "not settled")
            boot.note_failure(root, why)
            agent.log("ota: trial failed, rolling back: " + why)
            agent.request_reboot(why)
            break
    hb.stop()
    from edge import ota as ota_pkg  # `ota` above is the config section

    ota_pkg.unload("edge.ota.trial", "edge.ota.slots", "edge.ota.boot")
