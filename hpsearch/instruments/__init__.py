"""The recipe's instruments: sanity checks, the LR range test, and the diagnostics read off curves.

Each returns data; the CLI draws and saves. probe.py runs a study's workload once for them.
"""
