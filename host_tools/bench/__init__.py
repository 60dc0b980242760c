"""Benchmarks (`edgectl bench NAME`), each against an in-run baseline."""
