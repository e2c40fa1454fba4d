"""The Ray executor on a local Ray cluster: same study as in-process, retries, failures."""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from precompute.pipeline import (
    CheckpointFacts,
    CheckpointJob,
    UnitResult,
    compute_checkpoint,
    missing_units,
)
from precompute.study import StudyConfig
from trustdyn.store import Store
from trustdyn.suites import Suite
from trustdyn.testing.compare import assert_same_study

ray = pytest.importorskip("ray")

from precompute.ray_executor import RayOptions, import_ray, run_study_ray  # noqa: E402

pytestmark = pytest.mark.integration


def crash_once(markers: Path, victim: str, job: CheckpointJob,
               config: StudyConfig) -> Iterator[CheckpointFacts | UnitResult]:
    """Kill the worker the first time it is given ``victim``, then compute normally."""
    marker = markers / job.ref.name
    attempts = int(marker.read_text()) if marker.exists() else 0
    marker.write_text(str(attempts + 1))
    if job.ref.name == victim and attempts == 0:
        os._exit(1)
    yield from compute_checkpoint(job, config)


def test_ray_study_equals_in_process_study(ray_cluster: None, reference: Store, smoke_suite: Suite,
                                           smoke_config: StudyConfig, tmp_path: Path) -> None:
    store = Store(tmp_path / "ray.duckdb")
    report = run_study_ray(smoke_suite, store, smoke_config, progress=False)
    assert not report.failures
    assert report.written > 0
    assert_same_study(reference, store)
    again = run_study_ray(smoke_suite, store, smoke_config, progress=False)
    assert again.written == 0


def test_crashed_worker_is_retried(ray_cluster: None, smoke_suite: Suite,
                                   smoke_config: StudyConfig, tmp_path: Path) -> None:
    suite = dataclasses.replace(smoke_suite, checkpoints=smoke_suite.checkpoints[:2], chat=None)
    markers = tmp_path / "attempts"
    markers.mkdir()
    victim = suite.checkpoints[1].name
    store = Store(tmp_path / "retry.duckdb")
    report = run_study_ray(suite, store, smoke_config, progress=False, suite_stages=(),
                           options=RayOptions(max_retries=1),
                           compute=functools.partial(crash_once, markers, victim))
    assert not report.failures
    assert (markers / victim).read_text() == "2"
    assert (markers / suite.checkpoints[0].name).read_text() == "1"
    assert missing_units(suite, store, smoke_config) == []


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"pip install 'ray>=2\.40'"):
        import_ray()
