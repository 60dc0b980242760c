# Byte accounting for a bus parser (docs/INPUTS.md section 5): every byte read from the UART
# ends in exactly one bucket, so fed == decoded + unhandled + rejected + garbage + pending.
#
# decoded    bytes of frames / lines / pairs the parser understood and used
# unhandled  bytes of well-formed frames nobody asked for (a command the agent does not
#            handle, a line no configured field matches)
# rejected   bytes of frames that failed a check (the reason is counted per frame in `errors`)
# garbage    bytes between frames (noise, line breaks of empty lines)
# pending    bytes buffered, not yet classified (a frame still arriving)


class Ledger:
    def __init__(self):
        self.fed = 0
        self.decoded = 0
        self.unhandled = 0
        self.rejected = 0
        self.garbage = 0

    def pending(self):
        return self.fed - self.decoded - self.unhandled - self.rejected - self.garbage

    def stats(self):
        return {
            "fed": self.fed,
            "decoded": self.decoded,
            "unhandled": self.unhandled,
            "rejected": self.rejected,
            "garbage": self.garbage,
            "pending": self.pending(),
        }


def source_stats(accepted, ledger, errors, extra=None):
    """The per-input health entry (edge.inputs.stats): accepted frames, the byte ledger and
    the reject counters by reason (zero counters left out to keep the status small)."""
    d = {"accepted": accepted, "bytes": ledger.stats()}
    for k in errors:
        if errors[k]:
            d[k] = errors[k]
    if extra:
        for k in extra:
            if extra[k]:
                d[k] = extra[k]
    return d
