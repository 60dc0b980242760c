"""Serial captures: record, convert, simulate, replay into ports and ptys."""
