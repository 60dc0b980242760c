# Version steps and recovery (docs/CONSENT.md 4): an unsigned update may raise the version by at
# most 1000; a signed rebase with a newer ts, or a local one, recovers a device near the ceiling.
#   micropython consent_rebase.py WORKDIR     Last line: JSON {case: "ok" | error text}
import json
import os
import sys

from edge.consent import Consent, ConsentError
from edge.wire import consent_sig

CATS = ["essential", "usage"]
KEY = bytes(range(32))


def attempt(c, doc, source="mqtt"):
    try:
        c.apply(doc, source, 0)
        return "ok v%d" % c.version
    except ConsentError as e:
        return str(e)


def main():
    root = sys.argv[1]
    for d in (root, root + "/u", root + "/s"):
        try:
            os.mkdir(d)
        except OSError:
            pass
    out = {}
    u = Consent(root + "/u", CATS, "dev-1")  # no key: unsigned updates
    out["unsigned_step"] = attempt(u, {"version": 2147483646, "grant": ["usage"]})
    out["unsigned_small"] = attempt(u, {"version": 1000, "grant": ["usage"]})
    out["unsigned_rebase"] = attempt(u, {"version": 1, "deny": ["usage"], "rebase": True})
    out["local_far"] = attempt(u, {"version": 2147483646}, "local")
    out["local_rebase"] = attempt(u, {"version": 5, "deny": ["usage"], "rebase": True}, "local")
    s = Consent(root + "/s", CATS, "dev-1", KEY)
    top = {"version": 2147483646, "grant": ["usage"], "ts": 10}
    top["sig"] = consent_sig(KEY, "dev-1", top)
    out["signed_top"] = attempt(s, top)
    reb = {"version": 3, "deny": ["usage"], "ts": 20, "rebase": True}
    reb["sig"] = consent_sig(KEY, "dev-1", reb)
    out["signed_rebase"] = attempt(s, dict(reb))
    out["rebase_replay"] = attempt(s, dict(reb))
    forged = dict(reb, ts=30)  # the rebase line signed, but not this ts
    out["rebase_forged"] = attempt(s, forged)
    added = {"version": 2, "ts": 40}
    added["sig"] = consent_sig(KEY, "dev-1", added)
    added["rebase"] = True  # added in transit: the signature does not cover it
    out["rebase_added"] = attempt(s, added)
    print(json.dumps(out))


main()
