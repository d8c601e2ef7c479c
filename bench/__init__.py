"""Benchmarks against the real server on PostgreSQL; they print figures (see bench/README.md)."""
