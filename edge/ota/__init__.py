# Over-the-air updates: slots and boot selection, the bundle installer, remote config.
