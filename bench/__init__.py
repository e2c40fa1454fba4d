"""Benchmarks: plain scripts (``python -m bench.<name>``) that print ratios against baselines."""
