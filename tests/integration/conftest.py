"""Integration fixtures: the built-in suite's `smoke` run, pre-trained once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from precompute.study import StudyConfig, study_config
from trustdyn.paths import REPO_ROOT
from trustdyn.store import Store
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


@pytest.fixture(scope="session")
def smoke_config() -> StudyConfig:
    return study_config("smoke")


@pytest.fixture(scope="session")
def reference(smoke_suite: Suite, smoke_config: StudyConfig,
              tmp_path_factory: pytest.TempPathFactory) -> Store:
    """An uninterrupted in-process smoke study: what every other way of running must equal."""
    from precompute.pipeline import run_study

    store = Store(tmp_path_factory.mktemp("ref") / "study.duckdb")
    report = run_study(smoke_suite, store, smoke_config, progress=False)
    assert not report.failures
    return store


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local two-CPU Ray cluster for one test module (skips where Ray is not installed)."""
    ray = pytest.importorskip("ray")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=200 * 2**20,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    except Exception as exc:  # the machine cannot host a cluster (shm, ports): say so
        pytest.skip(f"Ray is installed but could not start a local cluster here: {exc}")
    try:
        yield
    finally:
        ray.shutdown()
