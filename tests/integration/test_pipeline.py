"""End-to-end pipeline tests on the `smoke` built-in suite: completeness, resume, shards."""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from precompute.pipeline import Shard, merge_studies, missing_units, run_study
from trustdyn.paths import REPO_ROOT
from trustdyn.store import Store
from trustdyn.suites import Suite
from trustdyn.testing.compare import assert_same_rows, assert_same_study
from trustdyn.timing import TIMINGS_ENV, summarise_timings

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def config(smoke_config):
    return smoke_config


def test_study_is_complete(reference: Store, smoke_suite: Suite, config) -> None:
    assert missing_units(smoke_suite, reference, config) == []
    n_refs = len(smoke_suite.all_refs())
    n_layers = int(reference.checkpoints(smoke_suite.name)["n_layers"].iloc[0])
    probes = reference.probe_results(smoke_suite.name)
    assert len(probes) == n_refs * n_layers * len(config.datasets)
    assert probes[["accuracy", "auroc", "control_accuracy"]].notna().all().all()
    assert ((probes["accuracy_lo"] <= probes["accuracy"])
            & (probes["accuracy"] <= probes["accuracy_hi"])).all()
    vectors = reference.steering_vectors(smoke_suite.name)
    assert len(vectors) == n_refs * n_layers * len(config.datasets)
    info = reference.info_results(smoke_suite.name)
    assert set(info["quantity"]) == {"I(X;T)", "I(T;Y)"}
    assert len(reference.info_turns(smoke_suite.name)) > 0
    hashes = reference.checkpoints(smoke_suite.name)["weight_hash"]
    assert hashes.notna().all()


def test_rerun_writes_nothing(reference: Store, smoke_suite: Suite, config) -> None:
    before = reference.table_counts()
    report = run_study(smoke_suite, reference, config, progress=False)
    assert report.written == 0
    assert reference.table_counts() == before


def test_shards_merge_to_the_same_study(reference: Store, smoke_suite: Suite, config,
                                        tmp_path: Path) -> None:
    shards = []
    for i in range(2):
        shard = Store(tmp_path / f"shard{i}.duckdb")
        run_study(smoke_suite, shard, config, shard=Shard(i, 2), progress=False)
        shards.append(shard.path)
    merged = Store(tmp_path / "merged.duckdb")
    merge_studies(merged.path, shards)
    merge_studies(merged.path, shards)  # merging twice adds nothing
    # Suite-level stages run after the merge, as documented.
    run_study(smoke_suite, merged, config, progress=False)
    assert_same_study(reference, merged)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_killed_run_resumes_to_identical_study(reference: Store, smoke_suite: Suite,
                                               smoke_root: Path, tmp_path: Path,
                                               seed: int) -> None:
    # A seeded random kill point among the first checkpoints' units (15 per checkpoint).
    kill_after_units = random.Random(seed).randint(1, 40)
    db = tmp_path / "killed.duckdb"
    cmd = [sys.executable, "-m", "precompute", "run", "--suite", "builtin", "--preset", "smoke",
           "--db", str(db), "--quiet"]
    env = {**os.environ, "TRUSTDYN_HOME": str(smoke_root.parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    store = Store(db)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        done = len(store.finished_units(smoke_suite.name)) if store.exists() else 0
        if done >= kill_after_units:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before the kill point"
    assert store.table_counts()["units"] >= kill_after_units
    rerun = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert_same_study(reference, store)


def test_reader_is_not_blocked_while_pipeline_writes(smoke_suite: Suite, config,
                                                     tmp_path: Path) -> None:
    store = Store(tmp_path / "live.duckdb", timeout_s=30)
    errors: list[BaseException] = []
    reads = 0
    stop = threading.Event()

    def read_loop() -> None:
        nonlocal reads
        reader = Store(store.path, timeout_s=30)
        while not stop.is_set():
            try:
                if reader.exists():
                    reader.probe_results(smoke_suite.name)
                    reads += 1
            except BaseException as exc:  # the test reports any failure
                errors.append(exc)
            time.sleep(0.01)

    thread = threading.Thread(target=read_loop)
    thread.start()
    try:
        run_study(smoke_suite, store, config, progress=False)
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert reads > 0
    assert missing_units(smoke_suite, store, config) == []


def test_worker_processes_write_the_same_study(reference: Store, smoke_suite: Suite,
                                               config, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Timed parts reach the file from every worker process and never enter the study.
    timings = tmp_path / "timings.jsonl"
    monkeypatch.setenv(TIMINGS_ENV, str(timings))
    store = Store(tmp_path / "workers.duckdb")
    report = run_study(smoke_suite, store, config, progress=False, workers=2)
    assert report.written == len(reference.finished_units(smoke_suite.name))
    assert_same_study(reference, store)
    parts = summarise_timings(timings)
    units = store.units(smoke_suite.name)
    per_stage = units["stage"].value_counts()
    for part in ("probe", "info", "vectors", "steer_eval"):
        assert parts[part].count == per_stage[part]
    # One extraction per (checkpoint, dataset), which has one probe unit.
    for part in ("probe/fits", "probe/bootstrap", "extraction"):
        assert parts[part].count == per_stage["probe"]
    assert parts["steer_eval/dev sweep"].count > 0
    assert all(t.wall_s >= 0 and t.cpu_s >= 0 for t in parts.values())


def test_workers_must_be_positive(smoke_suite: Suite, config, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        run_study(smoke_suite, Store(tmp_path / "s.duckdb"), config, progress=False, workers=0)


@pytest.mark.parametrize("executor", ["local", "processes", "ray"])
def test_corrupt_checkpoint_is_reported_and_the_rest_proceed(
        reference: Store, smoke_suite: Suite, config, tmp_path: Path,
        request: pytest.FixtureRequest, executor: str) -> None:
    broken = smoke_suite.checkpoints[1]
    folder = tmp_path / broken.name
    shutil.copytree(broken.source, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    suite = dataclasses.replace(smoke_suite, checkpoints=(
        smoke_suite.checkpoints[0], dataclasses.replace(broken, source=str(folder)),
        *smoke_suite.checkpoints[2:]))
    store = Store(tmp_path / "study.duckdb")
    if executor == "ray":
        request.getfixturevalue("ray_cluster")
        from precompute.ray_executor import run_study_ray

        report = run_study_ray(suite, store, config, progress=False, suite_stages=())
    else:
        report = run_study(suite, store, config, progress=False, suite_stages=(),
                           workers=2 if executor == "processes" else 1)
    assert [name for name, _ in report.failures or []] == [broken.name]
    assert "re-save or re-download" in (report.failures or [])[0][1]
    assert {u.checkpoint for u in missing_units(suite, store, config)} == {broken.name}
    theirs = reference.probe_results(suite.name)
    assert_same_rows(store.probe_results(suite.name), theirs[theirs["checkpoint"] != broken.name])


def test_study_command_builds_a_complete_study(smoke_suite: Suite, smoke_root: Path, config,
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from precompute.__main__ import main

    monkeypatch.setenv("TRUSTDYN_HOME", str(smoke_root.parent))
    db = tmp_path / "study.duckdb"
    assert main(["study", "--preset", "smoke", "--no-smollm2", "--db", str(db), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"{smoke_suite.name}: " in out and "separable_from_step" in out
    assert missing_units(smoke_suite, Store(db), config) == []
