"""Reproducible overhead benchmarks. Each prints a table and writes JSON under benchmarks/results/."""
