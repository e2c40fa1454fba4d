"""``--delete-after``: a finished hub checkpoint leaves the Hugging Face cache, nothing else does.

Each test builds a cache folder in huggingface_hub's real layout
(``models--org--name/{blobs,snapshots/<commit>,refs/<revision>}``, snapshot files linked to
blobs), so the deletion runs for real through ``scan_cache_dir`` / ``delete_revisions``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import huggingface_hub.constants
import pytest

from precompute.pipeline import CheckpointJob, UnitResult, release_checkpoint, run_study
from precompute.ray_executor import _run_task
from precompute.study import study_config
from trustdyn.store import Store
from trustdyn.suites import CheckpointRef, RevisionSelection, Suite
from trustdyn.suites import loading as loading_module
from trustdyn.suites.cache import free_hub_checkpoint
from trustdyn.suites.hub import public_suite

REPO = "EleutherAI/pythia-160m"
SHARED = b'{"shared": "tokenizer"}'


def cache_revision(cache: Path, repo: str, revision: str, files: Mapping[str, bytes]) -> Path:
    """Store ``files`` as ``repo@revision`` in the hub cache layout; return the snapshot."""
    root = cache / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
    snapshot = root / "snapshots" / commit
    for name, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / revision).write_text(commit, encoding="utf-8")
    return snapshot


def blobs(cache: Path, repo: str) -> set[bytes]:
    return {p.read_bytes() for p in (cache / f"models--{repo.replace('/', '--')}"
                                     / "blobs").iterdir()}


def pythia(revision: str) -> CheckpointRef:
    return public_suite("pythia-160m", RevisionSelection(revisions=(revision,))).checkpoints[0]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline hub cache with two Pythia revisions sharing a blob, and another repo."""
    root = tmp_path / "hub"
    cache_revision(root, REPO, "step1000", {"config.json": b"a" * 100, "tok.json": SHARED})
    cache_revision(root, REPO, "step2000", {"config.json": b"b" * 50, "tok.json": SHARED})
    cache_revision(root, "org/other", "main", {"config.json": b"c" * 10})
    monkeypatch.delenv(loading_module.MIRROR_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root))
    return root


def test_removes_exactly_that_revision(cache: Path) -> None:
    snapshots = cache / "models--EleutherAI--pythia-160m" / "snapshots"
    step2000 = {p.name for p in snapshots.iterdir()} - {
        hashlib.sha1(f"{REPO}@step1000".encode()).hexdigest()}
    assert free_hub_checkpoint(pythia("step1000")) == 100
    assert {p.name for p in snapshots.iterdir()} == step2000
    refs = cache / "models--EleutherAI--pythia-160m" / "refs"
    assert sorted(p.name for p in refs.iterdir()) == ["step2000"]
    assert blobs(cache, REPO) == {b"b" * 50, SHARED}  # the shared blob stays
    assert blobs(cache, "org/other") == {b"c" * 10}
    assert free_hub_checkpoint(pythia("step1000")) == 0  # already gone: nothing to do


def test_local_and_mirror_folders_are_never_touched(cache: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    before = sorted(cache.rglob("*"))
    folder = tmp_path / "local"
    folder.mkdir()
    local = CheckpointRef(suite="mine", name="local", step=0, source=str(folder))
    assert free_hub_checkpoint(local) == 0 and folder.is_dir()
    mirror = tmp_path / "mirror"
    (mirror / REPO / "step1000").mkdir(parents=True)
    monkeypatch.setenv(loading_module.MIRROR_ENV, str(mirror))
    assert free_hub_checkpoint(pythia("step1000")) == 0
    assert sorted(cache.rglob("*")) == before
    assert (mirror / REPO / "step1000").is_dir()


def test_chat_model_is_kept_for_the_steering_evaluation(cache: Path) -> None:
    chat = public_suite("smollm2-135m").chat
    assert chat is not None
    cache_revision(cache, chat.source, "main", {"config.json": b"chat"})
    assert release_checkpoint(chat) == 0
    assert blobs(cache, chat.source) == {b"chat"}


def test_missing_cache_frees_nothing(tmp_path: Path) -> None:
    assert free_hub_checkpoint(pythia("step1000"), cache_dir=tmp_path / "absent") == 0


def test_pipeline_frees_a_checkpoint_once_its_units_are_written(
        cache: Path, tmp_path: Path, saved_tiny_model: Callable[[str, int], Path]) -> None:
    # A real loadable model behind the step1000 revision, read offline from the cache.
    shutil.rmtree(cache / "models--EleutherAI--pythia-160m")
    for revision, seed in (("step1000", 1), ("step2000", 2)):
        folder = saved_tiny_model("gpt_neox", seed)
        cache_revision(cache, REPO, revision,
                       {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()})
    suite: Suite = public_suite("pythia-160m", RevisionSelection(revisions=("step1000",)))
    store = Store(tmp_path / "study.duckdb")
    config = study_config("smoke", datasets=("sst2",), stages=("vectors",), device="cpu")
    report = run_study(suite, store, config, progress=False, suite_stages=(),
                       delete_after=True)
    assert report.failures is None and report.written == 1
    assert report.freed_bytes > 0
    refs = cache / "models--EleutherAI--pythia-160m" / "refs"
    assert sorted(p.name for p in refs.iterdir()) == ["step2000"]
    assert store.finished_units(suite.name)


def test_ray_task_frees_the_workers_cache_after_computing(cache: Path) -> None:
    suite = public_suite("pythia-160m", RevisionSelection(revisions=("step1000",)))
    job = CheckpointJob(suite, suite.checkpoints[0], todo=())
    snapshots = cache / "models--EleutherAI--pythia-160m" / "snapshots"
    seen: list[int] = []

    def compute(job: CheckpointJob, config: object) -> Iterator[UnitResult]:
        seen.append(len(list(snapshots.iterdir())))  # still cached while computing
        return iter([])

    assert _run_task(job, study_config("smoke"), compute, False) == ([], 0)
    assert _run_task(job, study_config("smoke"), compute, True) == ([], 100)
    assert seen == [2, 2] and len(list(snapshots.iterdir())) == 1
