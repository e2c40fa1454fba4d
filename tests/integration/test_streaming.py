"""The built-in study computed while pre-training runs equals the one computed after it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from precompute.streaming import pretrain_and_run
from trustdyn.paths import REPO_ROOT
from trustdyn.store import Store
from trustdyn.suites import CheckpointRef, Suite, SuiteError
from trustdyn.suites.builtin import pretrain, saved_so_far
from trustdyn.suites.builtin_presets import get_preset
from trustdyn.testing.compare import assert_same_study

pytestmark = pytest.mark.integration


class _StopError(Exception):
    """Raised from the pre-training hook to interrupt the run at a chosen checkpoint."""


def _hashes(suite: Suite) -> list[str | None]:
    return [ref.weight_hash for ref in suite.all_refs()]


def test_streamed_study_equals_the_study_run_after_pretraining(
        reference: Store, smoke_suite: Suite, smoke_root: Path, smoke_config,
        tmp_path: Path) -> None:
    root = tmp_path / "suites"
    store = Store(tmp_path / "study.duckdb")
    suite, report = pretrain_and_run("smoke", store, smoke_config, workers=2, root=root,
                                     progress=False)
    # One-thread training gives the weights of the session's (default-thread) run.
    assert _hashes(suite) == _hashes(smoke_suite)
    assert not report.failures and report.skipped == 0
    assert report.written == len(reference.finished_units(smoke_suite.name))
    assert_same_study(reference, store, strip=[str(smoke_root), str(root)])


def test_streamed_study_resumes_an_interrupted_pretraining(
        reference: Store, smoke_suite: Suite, smoke_root: Path, smoke_config,
        tmp_path: Path) -> None:
    root = tmp_path / "suites"
    stop_at = get_preset("smoke").checkpoints[2]

    def interrupt(ref: CheckpointRef) -> None:
        if ref.step == stop_at:
            raise _StopError(ref.name)

    assert saved_so_far("smoke", root=root) is None  # nothing trained yet
    with pytest.raises(_StopError):
        pretrain("smoke", root=root, progress=False, on_checkpoint=interrupt)
    saved = saved_so_far("smoke", root=root)
    assert saved is not None and saved.chat is None and len(saved.checkpoints) == 3
    with pytest.raises(SuiteError, match="different settings"):
        saved_so_far("smoke", seed=1, root=root)

    store = Store(tmp_path / "study.duckdb")
    suite, report = pretrain_and_run("smoke", store, smoke_config, workers=2, root=root,
                                     progress=False)
    assert _hashes(suite) == _hashes(smoke_suite)
    assert report.written == len(reference.finished_units(smoke_suite.name))
    assert_same_study(reference, store, strip=[str(smoke_root), str(root)])
    # A rerun of a finished study writes nothing and counts every unit as done.
    _, again = pretrain_and_run("smoke", store, smoke_config, workers=2, root=root,
                                progress=False)
    assert again.written == 0
    assert again.skipped == len(smoke_config.datasets) * len(smoke_config.stages) * len(
        suite.all_refs())


def test_killed_study_command_resumes_to_the_same_study(
        reference: Store, smoke_suite: Suite, smoke_root: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    cmd = [sys.executable, "-m", "precompute", "study", "--preset", "smoke", "--no-smollm2",
           "--workers", "2", "--quiet"]
    env = {**os.environ, "TRUSTDYN_HOME": str(home)}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    store = Store(home / "study.duckdb")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if store.exists() and store.finished_units(smoke_suite.name):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # the workers, training among them, must follow
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the study finished before the kill point"
    rerun = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert_same_study(reference, store, strip=[str(smoke_root), str(home / "suites")])
