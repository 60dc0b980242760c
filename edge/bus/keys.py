# Allocation-free lookup of short byte strings (keys, enum labels) received on a bus.
# The parser hashes bytes as they arrive; lookup compares the candidate in place.

_MASK = 0xFFFFFF  # 24 bits: stays a small int on a 32-bit port


def step(h, b):
    """Fold one byte into a running key hash; start from seed()."""
    return ((h * 33) ^ b) & _MASK


def seed():
    return 5381


class KeyTable:
    """Maps byte strings to values. Built once from config (str or bytes keys)."""

    def __init__(self, mapping):
        self._names = []  # type: list
        self._values = []  # type: list
        self._by_hash = {}  # type: dict
        for name in mapping:
            raw = name.encode() if isinstance(name, str) else bytes(name)
            h = seed()
            for b in raw:
                h = step(h, b)
            self._by_hash.setdefault(h, []).append(len(self._names))
            self._names.append(raw)
            self._values.append(mapping[name])

    def __len__(self):
        return len(self._names)

    def get(self, buf, n, h):
        """Value for buf[0:n] whose running hash is h, or None."""
        idx = self._by_hash.get(h)
        if idx is None:
            return None
        for i in idx:
            name = self._names[i]
            if len(name) != n:
                continue
            j = 0
            while j < n and name[j] == buf[j]:
                j += 1
            if j == n:
                return self._values[i]
        return None

    def get_bytes(self, buf, start, end):
        """Lookup of buf[start:end] (hashes it first); used per frame, not per byte."""
        h = seed()
        for i in range(start, end):
            h = step(h, buf[i])
        idx = self._by_hash.get(h)
        if idx is None:
            return None
        n = end - start
        for i in idx:
            name = self._names[i]
            if len(name) != n:
                continue
            j = 0
            while j < n and name[j] == buf[start + j]:
                j += 1
            if j == n:
                return self._values[i]
        return None
