"""The resumable pipeline: plan units, run them checkpoint by checkpoint, write each atomically.

A unit of work is ``(suite, checkpoint, dataset, stage)``. For each checkpoint the pipeline
loads the model once, extracts activations once per dataset, and runs every stage that is
not finished yet (probe, information, vectors), then writes the checkpoint's units through
one connection, each unit's rows in one transaction. A rerun skips finished units, so a
killed run loses at most the checkpoint in flight.
Suite-level stages (turn detection, steering evaluation) run after every checkpoint is
done, and only in unsharded runs (after ``merge`` for sharded ones).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from precompute.processes import worker_pool
from precompute.stages import (
    PreparedDataset,
    info_rows,
    prepare_dataset,
    probe_rows,
    study_layers,
    vector_rows,
)
from precompute.study import StudyConfig
from precompute.suite_stages import SuiteStage, run_suite_stages
from trustdyn.activations import extract_activations
from trustdyn.blocks import n_blocks
from trustdyn.schema import Unit, study_units
from trustdyn.store import Store
from trustdyn.suites import CheckpointRef, LoadOptions, Suite, SuiteError, load_checkpoint
from trustdyn.suites.cache import free_hub_checkpoint
from trustdyn.suites.loading import weight_hash
from trustdyn.timing import timed

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Shard:
    """This process's part of the work: checkpoint ordinals ``i`` with ``i % n == index``."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """Parse ``"i/n"`` (0-based ``i``)."""
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError as exc:
            raise ValueError(f"--shard takes i/n with 0 <= i < n, got {text!r}") from exc
        if not 0 <= index < count:
            raise ValueError(f"--shard takes i/n with 0 <= i < n, got {text!r}")
        return cls(index, count)

    def owns(self, ordinal: int) -> bool:
        """Return True if the checkpoint at ``ordinal`` belongs to this shard."""
        return ordinal % self.count == self.index


@dataclass
class RunReport:
    """What a run did: units written and skipped, checkpoints that failed and why.

    Attributes:
        written: Units computed and written by this run.
        skipped: Units already finished before it started.
        failures: ``(checkpoint, reason)`` for each checkpoint that could not be processed.
        freed_bytes: Bytes removed from the Hugging Face cache (``delete_after``).
    """

    written: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] | None = None
    freed_bytes: int = 0

    def fail(self, checkpoint: str, reason: str) -> None:
        """Record a checkpoint that could not be processed."""
        self.failures = [*(self.failures or []), (checkpoint, reason)]


def checkpoint_frame(suite: Suite) -> pd.DataFrame:
    """Return the ``checkpoints`` table rows for a suite (ordinal = training order)."""
    return pd.DataFrame(
        [
            {
                "suite": suite.name,
                "checkpoint": ref.name,
                "ordinal": i,
                "step": ref.step,
                "tokens": ref.tokens,
                "source": ref.source,
                "revision": ref.revision,
                "weight_hash": ref.weight_hash,
                "train_loss": ref.train_loss,
                "heldout_loss": ref.heldout_loss,
                "is_chat": ref.is_chat,
                "extra": ref.extra,
            }
            for i, ref in enumerate(suite.all_refs())
        ]
    )


def register_study(store: Store, suite: Suite, config: StudyConfig,
                   datasets: Sequence[PreparedDataset]) -> None:
    """Write the suite, its checkpoints and the dataset cards (idempotent)."""
    existing = store.checkpoints(suite.name) if store.exists() else pd.DataFrame()
    frame = checkpoint_frame(suite)
    if not existing.empty:
        # Keep facts learnt at load time (hashes, sizes) that the suite object lacks.
        known = existing.set_index("checkpoint")
        for column in ("weight_hash", "n_layers", "hidden_size"):
            if column in known:
                fill = frame["checkpoint"].map(known[column])
                frame[column] = frame[column].where(frame[column].notna(), fill) \
                    if column in frame else fill
    store.put_suite(
        suite.name,
        description=suite.description,
        chat_checkpoint=suite.chat.name if suite.chat else None,
        config={**config.to_dict(), "digest": config.digest()},
        checkpoints=frame,
    )
    store.put_datasets([d.dataset.card.to_dict() for d in datasets])


def run_study(suite: Suite, store: Store, config: StudyConfig, *, shard: Shard = Shard(),
              progress: bool = True, suite_stages: Sequence[SuiteStage] | None = None,
              delete_after: bool = False, workers: int = 1) -> RunReport:
    """Run every unfinished unit of the study for this shard, then the suite-level stages.

    Args:
        suite: The checkpoint suite.
        store: The study file (the only writer is this process).
        config: Sizes and seeds.
        shard: Which checkpoints this process owns.
        progress: Show progress bars.
        suite_stages: Suite-level stages, run after all checkpoints in unsharded runs;
            each returns the number of units it wrote. ``None`` = turn detection and the
            steering evaluation.
        delete_after: Remove each hub checkpoint from the Hugging Face cache once all its
            units are written (see :func:`release_checkpoint`).
        workers: Checkpoints computed at once, each in its own process with an equal share
            of this process's torch threads (see :func:`computed_checkpoints`); 1 = here.
    """
    if workers < 1:  # before the study is registered: a bad call writes nothing
        raise ValueError(f"workers must be >= 1, got {workers}")
    plan, report = plan_study(suite, store, config, shard)
    bar = tqdm(total=len(plan), desc=f"{suite.name}: checkpoints", unit="ckpt",
               disable=not progress)
    for job, outcome in computed_checkpoints(plan, config, workers, progress):
        bar.set_postfix_str(job.ref.name)
        bar.update()
        if isinstance(outcome, SuiteError):
            log.error("Skipping checkpoint %s: %s", job.ref.name, outcome)
            report.fail(job.ref.name, str(outcome))
            continue
        # A checkpoint's units are written together, through one connection (a
        # transaction each): opening the file costs about as much as writing a unit. A
        # kill loses at most the checkpoints in flight; readers get the file between them.
        report.written += write_results(store, suite.name, job.ref, outcome)
        report.freed_bytes += release_checkpoint(job.ref) if delete_after else 0
    bar.close()
    if shard.count == 1:
        report.written += run_suite_stages(suite, store, config, progress, suite_stages,
                                           workers)
    return report


@dataclass(frozen=True)
class CheckpointJob:
    """The unfinished units of one checkpoint: what a worker needs to compute them."""

    suite: Suite
    ref: CheckpointRef
    todo: tuple[tuple[PreparedDataset, str], ...]


@dataclass(frozen=True)
class CheckpointFacts:
    """What loading a checkpoint teaches about it (stored in ``checkpoints``)."""

    weight_hash: str
    n_layers: int
    hidden_size: int


@dataclass(frozen=True)
class UnitResult:
    """One finished unit: its tables and the seconds it took."""

    unit: Unit
    tables: dict[str, Any]
    seconds: float


def plan_study(suite: Suite, store: Store, config: StudyConfig,
               shard: Shard = Shard()) -> tuple[list[CheckpointJob], RunReport]:
    """Register the study and list, per checkpoint of this shard, its unfinished units.

    Returns:
        The jobs in training order (checkpoints with nothing left are left out) and a
        report that already counts the skipped units.
    """
    datasets = [prepare_dataset(name, config) for name in config.datasets]
    register_study(store, suite, config, datasets)
    by_name = dict(zip(config.datasets, datasets, strict=True))
    missing = missing_units(suite, store, config)
    report = RunReport()
    plan = []
    for i, ref in enumerate(suite.all_refs()):
        if not shard.owns(i):
            continue
        todo = tuple((by_name[u.dataset], u.stage) for u in missing if u.checkpoint == ref.name)
        report.skipped += len(datasets) * len(config.stages) - len(todo)
        if todo:
            plan.append(CheckpointJob(suite, ref, todo))
    return plan, report


def compute_checkpoint(job: CheckpointJob, config: StudyConfig,
                       progress: bool = False) -> Iterator[CheckpointFacts | UnitResult]:
    """Load one checkpoint and compute its units, yielding each as soon as it is done.

    Yields the checkpoint's :class:`CheckpointFacts` first, then one :class:`UnitResult`
    per unit. Touches no study file, so it runs the same in this process or on a worker.

    Raises:
        SuiteError: The checkpoint cannot be loaded.
    """
    ref = job.ref
    with timed("checkpoint load"):
        model, tokenizer = load_checkpoint(ref, LoadOptions(device=config.device,
                                                            dtype=config.dtype))
    try:
        study_layers(config, n_blocks(model))  # a study naming a missing block fails here
        yield CheckpointFacts(
            weight_hash=ref.weight_hash or weight_hash(model),
            n_layers=n_blocks(model),
            hidden_size=int(model.config.hidden_size),
        )
        by_dataset: dict[str, list[str]] = {}
        for prepared, stage in job.todo:
            by_dataset.setdefault(prepared.dataset.name, []).append(stage)
        lookup = {p.dataset.name: p for p, _ in job.todo}
        bar = tqdm(total=len(job.todo), desc=f"  {ref.name}: units", unit="unit",
                   leave=False, disable=not progress)
        for name, stages in by_dataset.items():
            prepared = lookup[name]
            start = time.perf_counter()
            with timed("extraction"):
                acts = extract_activations(
                    model, tokenizer, prepared.dataset.texts,
                    batch_size=config.batch_size, max_length=config.max_length,
                )
            extract_s = time.perf_counter() - start
            for stage in stages:
                bar.set_postfix_str(f"{name}/{stage}")
                t0 = time.perf_counter()
                with timed(stage):
                    tables = _STAGES[stage](job.suite, ref, prepared, acts, config)
                # Extraction time is charged to the first stage that needed it.
                yield UnitResult(Unit(job.suite.name, ref.name, name, stage), tables,
                                 time.perf_counter() - t0 + extract_s)
                extract_s = 0.0
                bar.update()
        bar.close()
    finally:
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


Outcome = list[CheckpointFacts | UnitResult] | SuiteError
"""A computed checkpoint's results, or why it could not be loaded."""


def computed_checkpoints(plan: Sequence[CheckpointJob], config: StudyConfig, workers: int,
                         progress: bool = False) -> Iterator[tuple[CheckpointJob, Outcome]]:
    """Compute the planned checkpoints, yielding each job with its outcome as it finishes.

    With ``workers`` > 1 the checkpoints run in a :func:`~precompute.processes.worker_pool`;
    the numbers are the same (nothing computed depends on the thread count beyond float
    round-off). Results arrive in completion order; with one worker, in training order in
    this process.

    Raises:
        ValueError: ``workers`` < 1 (from :func:`~precompute.processes.worker_pool`).
    """
    if workers == 1 or len(plan) <= 1:
        for job in plan:
            yield job, _compute_all(job, config, progress)
        return
    with worker_pool(workers) as pool:
        futures = {pool.submit(_compute_all, job, config): job for job in plan}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _compute_all(job: CheckpointJob, config: StudyConfig, progress: bool = False) -> Outcome:
    try:
        return list(compute_checkpoint(job, config, progress))
    except SuiteError as exc:
        return exc


def write_results(store: Store, suite: str, ref: CheckpointRef,
                  results: Sequence[CheckpointFacts | UnitResult]) -> int:
    """Write results of :func:`compute_checkpoint` (one connection, a transaction per unit).

    Returns:
        The number of units written.
    """
    with store.writing():
        for result in results:
            if isinstance(result, CheckpointFacts):
                store.update_checkpoint(suite, ref.name, **dataclasses.asdict(result))
            else:
                store.write_unit(result.unit, result.tables, seconds=result.seconds)
    return sum(isinstance(result, UnitResult) for result in results)



def release_checkpoint(ref: CheckpointRef) -> int:
    """Remove a finished hub checkpoint from the Hugging Face cache; return the bytes freed.

    The chat model is kept: the steering evaluation loads it again after every checkpoint
    is done. Local folders and hub mirror folders are never touched.
    """
    return 0 if ref.is_chat else free_hub_checkpoint(ref)


_STAGES: dict[str, Callable[..., dict[str, Any]]] = {
    "probe": probe_rows,
    "info": info_rows,
    "vectors": vector_rows,
}


def missing_units(suite: Suite, store: Store, config: StudyConfig) -> list[Unit]:
    """Return the per-checkpoint units of the study that are not finished yet, in order."""
    done = store.finished_units(suite.name)
    expected = study_units(suite.name, [ref.name for ref in suite.all_refs()],
                           config.datasets, config.stages, chat_checkpoint=None)
    return [u for u in expected if u.stage in config.stages and u.key() not in done]


def merge_studies(target: Path, shards: Sequence[Path]) -> dict[str, int]:
    """Merge shard study files into ``target`` (created if missing); returns row counts."""
    missing = [str(p) for p in shards if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"Shard files not found: {', '.join(missing)}")
    return Store(target).merge_from([Path(p) for p in shards])
