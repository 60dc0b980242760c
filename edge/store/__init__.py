# The durable store: segment streams on littlefs (docs/FORMAT.md section 2).
