"""The study file the dashboard shows: where it is, whether it is readable, and its build.

Locates the file (``--db``, ``$TRUSTDYN_STUDY`` or the default), stamps it so cached reads
refresh while the pipeline writes, classifies it for the user, and starts the default
study's build in a background process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trustdyn.dashboard.tables import unit_progress
from trustdyn.paths import REPO_ROOT, default_study_path
from trustdyn.store import Store, StoreError

STUDY_ENV = "TRUSTDYN_STUDY"
"""Environment variable naming the study file the dashboard opens."""


def resolve_study_path(argv: Sequence[str] | None = None,
                       env: Mapping[str, str] | None = None) -> Path:
    """Return the study file to open: ``--db PATH``, else ``$TRUSTDYN_STUDY``, else the default.

    Args:
        argv: Script arguments (``streamlit run app.py -- --db PATH`` passes
            ``["--db", "PATH"]``); defaults to ``sys.argv[1:]``.
        env: Environment; defaults to ``os.environ``.

    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db", type=Path, default=None)
    known, _ = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    if known.db is not None:
        return Path(known.db).expanduser()
    value = (os.environ if env is None else env).get(STUDY_ENV)
    return Path(value).expanduser() if value else default_study_path()


def file_stamp(path: Path) -> tuple[int, int, int]:
    """Return ``(mtime_ns, size, wal mtime_ns)`` of a study file, zeros where missing.

    A cache keyed on this refreshes whenever the pipeline commits a unit (DuckDB writes
    the main file or its ``.wal`` sibling).
    """
    def stat(p: Path) -> tuple[int, int]:
        try:
            info = p.stat()
        except OSError:
            return 0, 0
        return info.st_mtime_ns, info.st_size

    mtime, size = stat(path)
    wal, _ = stat(path.with_name(path.name + ".wal"))
    return mtime, size, wal


StudyState = Literal["missing", "invalid", "busy", "empty", "ready"]


@dataclass(frozen=True)
class StudyStatus:
    """Whether a study file can be shown, and what to tell the user if not.

    Attributes:
        path: The file.
        state: ``missing`` (no file), ``invalid`` (not a readable study), ``busy``
            (another process held the write lock for longer than the read timeout),
            ``empty`` (a study without suites yet) or ``ready``.
        message: A sentence for the user (empty when ready).

    """

    path: Path
    state: StudyState
    message: str = ""


def study_status(store: Store) -> StudyStatus:
    """Classify the store's file (never raises for a bad file: that is a state)."""
    path = store.path
    if not path.exists():
        return StudyStatus(path, "missing", f"No study file at {path} yet.")
    try:
        suites = store.suites()
    except StoreError as exc:
        if "locked" in str(exc):
            return StudyStatus(path, "busy", f"{path} is being written by another process "
                               "(the pipeline commits one unit at a time); interact again "
                               "in a moment to retry.")
        return StudyStatus(path, "invalid", str(exc))
    if suites.empty:
        return StudyStatus(path, "empty", f"{path} holds no suite yet (the pipeline may "
                           "still be pre-training the built-in model).")
    return StudyStatus(path, "ready")


def build_command(path: Path, *, preset: str = "default") -> list[str]:
    """Return the command that builds the default study into ``path``.

    The README's ``study`` command; ``--db`` is added only when ``path`` is not the default
    study file, so users with the defaults see exactly the README's line.
    """
    command = [sys.executable, "-m", "precompute", "study", "--preset", preset]
    if Path(path).resolve() != default_study_path().resolve():
        command += ["--db", str(path)]
    return command


def shell_command(path: Path, *, preset: str = "default") -> str:
    """Return :func:`build_command` as a line to paste into a terminal (``python -m ...``)."""
    return " ".join(["python", *build_command(path, preset=preset)[1:]])


def start_build(path: Path, log_path: Path, *, preset: str = "default") -> subprocess.Popen[bytes]:
    """Start the default study build in a background process writing its log to ``log_path``.

    The process runs in its own session so that it outlives a browser tab being closed
    and can be stopped on its own (never by killing the dashboard).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [*build_command(path, preset=preset), "--quiet"], cwd=REPO_ROOT, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )


def tail(path: Path, n_lines: int = 15) -> str:
    """Return the last lines of a text file ('' if it does not exist)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n_lines:])


def build_progress(store: Store) -> tuple[int, int | None]:
    """Return ``(finished units, expected units)`` over all suites of a file being built.

    Expected is ``None`` while no suite is registered yet (the pipeline is still
    pre-training) and counts only stages of known size (see :func:`unit_progress`).
    """
    if study_status(store).state != "ready":
        return 0, None
    done, expected = 0, 0
    for suite in store.suites()["suite"]:
        progress = unit_progress(store, str(suite))
        done += int(progress["done"].sum())
        expected += int(progress["expected"].fillna(progress["done"]).sum())
    return done, expected


