"""Fault tests on real node processes (docs/testing.md)."""
