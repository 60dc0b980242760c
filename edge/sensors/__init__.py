# Sensor drivers (docs/INPUTS.md 2). Each is a source: poll(now_ms, emit) -> readings emitted,
# never blocking: a measurement is started on one poll and read on a later one.
