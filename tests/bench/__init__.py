"""Benchmarks (``make bench``). Not tests: they measure, and write nothing under tests."""
