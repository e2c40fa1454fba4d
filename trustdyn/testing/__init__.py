"""Helpers for trustdyn's tests and benchmarks (synthetic studies); not used by the pipeline."""
