"""Benchmarks run by `make bench`; each prints its measurements side by side."""
