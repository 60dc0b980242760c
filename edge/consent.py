# Consent gate: which categories may be stored and sent (DESIGN.md 3; issue 5 refines).
# Default deny; `essential` is the only category allowed without consent.

import json
import os


class ConsentError(ValueError):
    pass


class Consent:
    def __init__(self, root, categories):
        self.path = root + "/consent.json"
        self.categories = categories
        self.version = 0
        self.allowed = [name == "essential" for name in categories]
        self.stats = {"dropped": [0] * len(categories), "updates": 0, "rejected": 0}
        try:
            with open(self.path, "rb") as f:
                st = json.loads(f.read())
            self.version = st["version"]
            for i, name in enumerate(categories):
                self.allowed[i] = name == "essential" or bool(st["grants"].get(name))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # no or unreadable state: first boot, only `essential`

    def gate(self, cat):
        """True when a reading of category index `cat` may be stored; counts the drops."""
        if self.allowed[cat]:
            return True
        self.stats["dropped"][cat] += 1
        return False

    def grants(self):
        g = {}
        for i, name in enumerate(self.categories):
            g[name] = self.allowed[i]
        return g

    def apply(self, doc):
        """Apply a consent document {"version": n, "grant": [...], "deny": [...]}.
        Returns the list of category indexes newly revoked. Raises ConsentError."""
        if not isinstance(doc, dict):
            raise ConsentError("consent document must be a JSON object")
        v = doc.get("version")
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConsentError("'version' must be a positive integer")
        if v <= self.version:
            raise ConsentError("stale version %d: %d is enforced" % (v, self.version))
        new = list(self.allowed)
        for key, value in (("grant", True), ("deny", False)):
            names = doc.get(key, [])
            if not isinstance(names, list):
                raise ConsentError("'%s' must be a list of category names" % key)
            for name in names:
                if name not in self.categories:
                    raise ConsentError("unknown category %r in '%s'" % (name, key))
                if name == "essential" and not value:
                    raise ConsentError("'essential' cannot be denied")
                new[self.categories.index(name)] = value
        revoked = [i for i in range(len(new)) if self.allowed[i] and not new[i]]
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(json.dumps({"version": v, "grants": dict(zip(self.categories, new))}))
        os.rename(tmp, self.path)
        self.version = v
        self.allowed = new
        self.stats["updates"] += 1
        return revoked
