# The unix HAL: ptys, files, simulated sensors, emulated flash (not on a board).
