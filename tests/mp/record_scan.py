# Dual-runtime helper for the golden vectors: walk a byte string of flash records the way a
# reader must (FORMAT.md 2.3): valid records decoded, a corrupt byte skipped, a torn tail ends.
from edge import codec


def scan(data):
    """List of decoded records (as lists), "corrupt" per skipped byte, "torn" at a torn tail."""
    res = []
    off = 0
    while off < len(data):
        r = codec.check_record(data, off)
        if r == 1:
            res.append(list(codec.unpack_record(data, off)))
            off += codec.REC_LEN
        elif r == 0:
            res.append("corrupt")
            off += 1
        else:
            res.append("torn")
            break
    return res
