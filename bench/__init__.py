"""Benchmarks and the long robustness runs (make bench, make soak); not part of make test."""
