"""``pip install <checkout>`` into a new virtual environment, then use it from elsewhere.

The new environment borrows this interpreter's site-packages through a ``.pth`` file, so
the multi-GB dependencies are not installed again, and the project is installed into it
with ``--no-deps``. Every command then runs from a folder outside the checkout with no
``PYTHONPATH``: what runs is the installed package and its package data, nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from trustdyn.paths import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# What pip must not see: a copy keeps the checkout free of build/ and *.egg-info folders.
_NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "generated", "__pycache__", "*_cache",
                                     ".hypothesis", "test-artifacts", "build", "*.egg-info")

# Where the installed package finds itself, printed by the new environment's python.
_WHERE = """
import json, precompute, trustdyn.paths as p
print(json.dumps({"trustdyn": p.__file__, "precompute": precompute.__file__,
                  "in_checkout": p.IN_CHECKOUT, "data": str(p.DATA_DIR),
                  "app": str(p.APP_SCRIPT)}))
"""

# The installed dashboard's first page, against the study file named in TRUSTDYN_STUDY.
_DASHBOARD = """
from streamlit.testing.v1 import AppTest
from trustdyn.paths import APP_SCRIPT
app = AppTest.from_file(str(APP_SCRIPT), default_timeout=240).run()
assert not app.exception, [e.message for e in app.exception]
print(len(app.markdown))
"""


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _new_environment(root: Path) -> Path:
    """Create a virtual environment at ``root`` that sees this one's packages; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # Appended after the new site-packages, so the installed trustdyn comes first; the
    # editable install's own .pth file here is not processed, so the checkout stays out.
    Path(purelib, "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def _serves(command: list[str], cwd: Path, env: dict[str, str], port: int) -> bool:
    """Start ``command`` and return whether it answers Streamlit's health check in time."""
    server = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health") as reply:
                    return bool(reply.status == 200)
            except OSError:
                time.sleep(0.5)
        return False
    finally:
        server.terminate()
        server.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return int(probe.getsockname()[1])


def test_installed_package_runs_outside_the_checkout(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(REPO_ROOT, source, ignore=_NOT_SOURCE)
    venv = tmp_path / "venv"
    python = _new_environment(venv)
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env |= {"TRUSTDYN_HOME": str(home), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
          str(source)], work, env)
    trustdyn = str(venv / "bin" / "trustdyn")

    where = json.loads(_run([str(python), "-c", _WHERE], work, env))
    for module in ("trustdyn", "precompute"):
        assert Path(where[module]).is_relative_to(venv), where
    assert not where["in_checkout"] and Path(where["app"]).is_file()
    assert sorted(p.name for p in Path(where["data"]).iterdir()) == ["corpus", "eval", "probe"]

    assert "export-vectors" in _run([trustdyn, "--help"], work, env)
    # Without TRUSTDYN_HOME an installed package keeps its files in the user's data folder;
    # COLUMNS: argparse would wrap the long path.
    no_home = {key: value for key, value in env.items() if key != "TRUSTDYN_HOME"}
    default_db = tmp_path / "xdg" / "trustdyn" / "study.duckdb"
    wide = no_home | {"COLUMNS": "500"}
    assert str(default_db) in _run([trustdyn, "study", "--help"], work, wide)
    assert not home.exists() and not default_db.parent.exists()

    _run([trustdyn, "study", "--preset", "smoke", "--no-smollm2", "--quiet"], work, env)
    study = home / "study.duckdb"
    assert study.is_file()
    _run([trustdyn, "export", "--format", "parquet"], work, env)
    manifest = json.loads((work / "trustdyn-tables" / "manifest.json").read_text())
    assert manifest and any((work / "trustdyn-tables").glob("*.parquet"))

    assert int(_run([str(python), "-c", _DASHBOARD], work, env | {"TRUSTDYN_STUDY": str(study)}))
    port = _free_port()
    assert _serves([trustdyn, "app", "--db", str(study), "--port", str(port)], work, env, port)
