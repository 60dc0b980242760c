# Hardware abstraction: the one place that knows which platform we run on (docs/DESIGN.md
# "Boundaries"). Protocol and storage code take a `hal` object and never branch on the platform.

import sys


def load():
    if sys.platform in ("esp32",):
        from edge.hal import esp32 as impl
    else:
        from edge.hal.unix import hal as impl
    return impl.Hal()
