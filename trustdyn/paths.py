"""Where the project's vendored data and generated artefacts live.

Vendored files sit in ``data/`` (tracked); everything the project generates (checkpoints,
converted models, DuckDB studies, caches) goes to a git-ignored folder, by default
``data/generated``, overridable with the ``TRUSTDYN_HOME`` environment variable so tests
and users can point it elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"


def generated_dir() -> Path:
    """Return (and create) the root folder for generated artefacts."""
    root = Path(os.environ.get("TRUSTDYN_HOME", DATA_DIR / "generated"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def default_study_path() -> Path:
    """Return the DuckDB file that the default study writes and the dashboard opens."""
    return generated_dir() / "study.duckdb"
