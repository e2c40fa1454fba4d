"""The ``app`` subcommand: open the dashboard on a study file with Streamlit.

Replaces this process with ``streamlit run <app.py> [-- --db PATH]`` on the dashboard of
the checkout or of the installed package (:data:`trustdyn.paths.APP_SCRIPT`), started from
the folder holding it so that its ``.streamlit/config.toml`` (local-only server, no usage
statistics) applies wherever the command is typed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from trustdyn.paths import APP_SCRIPT, REPO_ROOT, STUDY_FILE, generated_root


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``app`` subcommand; its handler is stored as ``args.handler``."""
    parser = sub.add_parser(
        "app", help="open the dashboard (Streamlit) on a study file",
        description="Serve the dashboard on http://localhost:8501 (or --port); stop it "
                    "with Ctrl-C.")
    parser.add_argument("--db", type=Path, default=None,
                        help="study file (default: $TRUSTDYN_STUDY, else "
                             f"{generated_root() / STUDY_FILE})")
    parser.add_argument("--port", type=_port, default=None,
                        help="server port (default: Streamlit's, 8501)")
    parser.set_defaults(handler=run)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a number 1-65535")
    return int(text)


def streamlit_command(args: argparse.Namespace) -> list[str]:
    """Return the command line that serves the dashboard for parsed ``app`` arguments."""
    command = [sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT)]
    if args.port is not None:
        command += ["--server.port", str(args.port)]
    if args.db is not None:
        # Absolute: Streamlit runs from the dashboard's folder, not the caller's.
        command += ["--", "--db", str(args.db.expanduser().resolve())]
    return command


def run(args: argparse.Namespace) -> int:
    """Run the ``app`` subcommand: exec Streamlit (returns only by raising)."""
    if not APP_SCRIPT.is_file():
        raise FileNotFoundError(f"the dashboard is missing ({APP_SCRIPT} does not exist): "
                                "reinstall trustdyn, e.g. pip install --force-reinstall .")
    command = streamlit_command(args)
    os.chdir(REPO_ROOT)
    os.execv(command[0], command)
