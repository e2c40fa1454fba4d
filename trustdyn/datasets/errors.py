"""The error and warning types of the datasets package, and how much an error message lists."""

from __future__ import annotations

# How many offending rows an error message lists before summarising the rest.
_MAX_LISTED = 5


class DatasetError(ValueError):
    """A user-facing problem with a dataset: unknown name, bad file, invalid rows."""


class DatasetWarning(UserWarning):
    """Rows were dropped while loading (exact duplicates or conflicting labels)."""
