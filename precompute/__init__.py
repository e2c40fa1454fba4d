"""The precompute pipeline: pre-trains the built-in suite and fills the DuckDB study file."""
