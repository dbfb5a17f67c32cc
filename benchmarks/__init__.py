"""Benchmarks: throughput against raw envpool, and reproduction runs. Not tests: run them by hand."""
