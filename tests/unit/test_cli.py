"""The ``trustdyn`` command line: every subcommand is there, ``--help`` imports no heavy
library and writes nothing, ``app`` builds the right Streamlit command, and the paths
module places generated files where the README says."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from precompute import app_command
from precompute.__main__ import build_parser
from trustdyn import paths

SUBCOMMANDS = ("pretrain", "run", "study", "status", "merge", "export", "export-vectors", "app")
HEAVY = ("torch", "transformers", "pandas", "duckdb", "sklearn", "streamlit")

# Asks every subcommand for its help, then prints which heavy libraries were imported.
_HELP_EVERYWHERE = f"""
import contextlib, io, json, sys
from precompute.__main__ import main
for command in ([], *([name] for name in {SUBCOMMANDS!r})):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main([*command, "--help"])
print(json.dumps(sorted(name for name in {HEAVY!r} if name in sys.modules)))
"""


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "TRUSTDYN_HOME": str(home)}


def test_help_of_every_subcommand_imports_no_heavy_library_and_writes_nothing(tmp_path):
    home = tmp_path / "home"
    result = subprocess.run([sys.executable, "-c", _HELP_EVERYWHERE], cwd=tmp_path,
                            env={**_env(home), "PYTHONPATH": str(paths.REPO_ROOT)},
                            capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(result.stdout) == []
    assert list(tmp_path.iterdir()) == []


def test_module_help_lists_every_subcommand(tmp_path):
    result = subprocess.run([sys.executable, "-m", "precompute", "--help"], cwd=paths.REPO_ROOT,
                            env=_env(tmp_path / "home"), capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.startswith("usage: python -m precompute ")
    listed = result.stdout.split("{", 1)[1].split("}", 1)[0].split(",")
    assert sorted(listed) == sorted(SUBCOMMANDS)


def test_console_command_and_module_share_one_parser():
    def choices(parser: argparse.ArgumentParser) -> list[str]:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return sorted(action.choices)

    assert build_parser().prog == "trustdyn"
    assert choices(build_parser()) == choices(build_parser("python -m precompute"))


def test_app_serves_the_dashboard_on_an_absolute_study_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["app", "--db", "mine.duckdb", "--port", "8600"])
    assert args.handler is app_command.run
    assert app_command.streamlit_command(args) == [
        sys.executable, "-m", "streamlit", "run", str(paths.APP_SCRIPT),
        "--server.port", "8600", "--", "--db", str(tmp_path / "mine.duckdb")]
    assert paths.APP_SCRIPT.is_file() and (paths.REPO_ROOT / "pages").is_dir()


def test_app_without_options_leaves_the_study_to_the_dashboard():
    args = build_parser().parse_args(["app"])
    assert app_command.streamlit_command(args)[-1] == str(paths.APP_SCRIPT)


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_app_rejects_a_bad_port_naming_the_fix(port, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["app", "--port", port])
    assert exit_info.value.code == 2
    assert f"{port!r} is not a port: give a number 1-65535" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "study"])
def test_workers_must_be_a_positive_number(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--workers", "0"])
    assert exit_info.value.code == 2
    assert "'0' is not a number of workers: give 1 or more" in capsys.readouterr().err
    assert build_parser().parse_args([command, "--workers", "3"]).workers == 3


def test_generated_files_go_to_trustdyn_home_else_the_checkout(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv(paths.HOME_ENV, str(home))
    assert paths.generated_root() == home and not home.exists()
    assert paths.default_study_path() == home / paths.STUDY_FILE and home.is_dir()
    monkeypatch.delenv(paths.HOME_ENV)
    assert paths.IN_CHECKOUT
    assert paths.generated_root() == paths.REPO_ROOT / "data" / "generated"
