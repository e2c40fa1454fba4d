"""Integration fixtures: the built-in suite's `smoke` run, pre-trained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustdyn.suites import Suite


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The folder that holds suite folders under a TRUSTDYN_HOME, so CLI subprocesses given
    # TRUSTDYN_HOME=<parent> find the same pre-trained run.
    return tmp_path_factory.mktemp("home") / "suites"


@pytest.fixture(scope="session")
def smoke_suite(smoke_root: Path) -> Suite:
    """The `smoke` preset of the built-in suite (seconds to pre-train)."""
    from trustdyn.suites.builtin import pretrain

    return pretrain("smoke", root=smoke_root, progress=False)
