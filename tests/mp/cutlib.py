# Shared by the power-cut harnesses (powercut.py, consent_powercut.py): after a cut the device
# is dead; close the store's abandoned segment files while it is (their errors are expected)
# and unmount, so GC finalisers do not run later against a new device.
import gc
import time

import vfs


class Hal:
    # the store's clock: real ticks
    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)


def abandon(store, mount):
    if store is not None:
        for s in store.streams:
            if s.active is not None:
                try:
                    s.active.close()
                except OSError:
                    pass
    try:
        vfs.umount(mount)
    except OSError:
        pass
    gc.collect()
