"""Where the project's vendored data, its dashboard and its generated artefacts live.

:data:`REPO_ROOT` is the folder holding ``app.py``, ``pages/`` and ``data/``: the checkout
when trustdyn runs from one, else the copy an installed package carries as package data
(``trustdyn/_project/``, with ``data/`` limited to the vendored ``probe``, ``eval`` and
``corpus`` folders). Everything the project generates (checkpoints, converted models, DuckDB
studies, caches) goes to ``$TRUSTDYN_HOME`` when it is set, else to the git-ignored
``data/generated`` of a checkout, else, for an installed package, whose own folder may not
be writable, to ``$XDG_DATA_HOME/trustdyn`` (``~/.local/share/trustdyn``).
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "TRUSTDYN_HOME"
"""Environment variable naming the folder for generated artefacts."""

STUDY_FILE = "study.duckdb"
"""Name of the default study file inside the generated folder."""

_CHECKOUT = Path(__file__).resolve().parent.parent
IN_CHECKOUT = (_CHECKOUT / "pyproject.toml").is_file()
"""Whether trustdyn runs from a source checkout (not from an installed package)."""

REPO_ROOT = _CHECKOUT if IN_CHECKOUT else Path(__file__).resolve().parent / "_project"
DATA_DIR = REPO_ROOT / "data"
APP_SCRIPT = REPO_ROOT / "app.py"


def generated_root() -> Path:
    """Return the root folder for generated artefacts without creating it."""
    if value := os.environ.get(HOME_ENV):
        return Path(value).expanduser()
    if IN_CHECKOUT:
        return DATA_DIR / "generated"
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "trustdyn"


def generated_dir() -> Path:
    """Return (and create) the root folder for generated artefacts."""
    root = generated_root()
    root.mkdir(parents=True, exist_ok=True)
    return root


def default_study_path() -> Path:
    """Return the DuckDB file that the default study writes and the dashboard opens."""
    return generated_dir() / STUDY_FILE
