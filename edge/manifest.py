# Freeze manifest (docs/DEPLOY.md 5): build a MicroPython firmware with the agent frozen in, so its
# code runs from flash and takes no heap. Used via `edgectl deploy --frozen`, or:
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=<this file>
# (after `include("$(PORT_DIR)/boards/manifest.py")` to keep the port's own frozen modules).
# The module list comes from the tree, never a hand-kept list (STYLE anti-patterns); this file
# runs under CPython at firmware build time, never on the board, and deploy does not copy it.
import os

_here = os.path.dirname(os.path.abspath(__file__))
for _dir, _subdirs, _files in os.walk(_here):
    _subdirs[:] = sorted(d for d in _subdirs if d != "__pycache__")
    for _name in sorted(_files):
        _path = os.path.join(_dir, _name)
        if not _name.endswith(".py") or _path == os.path.join(_here, "manifest.py"):
            continue
        if _path.startswith(os.path.join(_here, "hal", "unix") + os.sep):
            continue  # unix HAL, flash emulator, replay driver: not for the firmware
        _rel = os.path.relpath(_path, os.path.dirname(_here))
        module(_rel, base_path=os.path.dirname(_here), opt=3)
