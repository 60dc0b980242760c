# Which store backend holds the readings (config `store.backend`, docs/FORMAT.md 8.8): the raw
# record log on the board's log partition, or segment files on littlefs. Each backend's code is
# imported only when it is chosen (its bytecode is heap on a board).

from edge import board


class BackendError(ValueError):
    pass


def open_store(cfg, hal, root, categories):
    """The store for cfg: Case 1: `segments`: littlefs under root. Case 2: `rawlog`: the
    log partition the board names, or a BackendError when there is none. Case 3: `auto`
    (default): the raw log when the partition exists, else segments (reported in health as
    `store_backend`)."""
    kind = cfg["store"].get("backend", "auto")
    if kind != "segments":
        try:
            spec = board.load(cfg).get("log_partition") or {}
        except ValueError:
            spec = {}
        dev = hal.log_device(cfg["store"]["path"], spec)
        if dev is not None:
            from edge.store.rawlog import RawStore

            return RawStore(dev, cfg, categories, hal)
        if kind == "rawlog":
            raise BackendError(
                "config key 'store.backend' is 'rawlog' but the board has no log partition "
                "(board file key log_partition, boards/README.md)"
            )
    from edge.store.store import Store

    return Store(root, cfg, categories, hal)
