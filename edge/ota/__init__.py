# Over-the-air updates: slots and boot selection, the bundle installer, remote config.

import sys


def unload(*names):
    """Drop modules from sys.modules (and their names from their package) so their code can be
    collected: update and remote-config code runs once per boot or per command, and an agent
    with a code + 48 KiB heap has no room to keep it (docs/OTA.md section 10)."""
    for name in names:
        sys.modules.pop(name, None)
        pkg, _, attr = name.rpartition(".")
        mod = sys.modules.get(pkg)
        if mod is not None and hasattr(mod, attr):
            try:
                delattr(mod, attr)
            except (AttributeError, TypeError):
                pass
