"""Benchmarks that print their figures (``make bench``). Not run by ``make test``."""
