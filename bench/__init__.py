"""Benchmarks: our agent and relay against x11vnc on the same workloads (see README.md)."""
