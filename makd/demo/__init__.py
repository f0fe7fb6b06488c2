"""Synthetic data sets and tiny stand-in models for the demo, the benchmarks and the tests (never the real paths)."""
