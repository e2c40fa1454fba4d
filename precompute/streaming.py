"""The built-in suite's study computed while the suite is still pre-training.

Pre-training the small built-in model gains little from a second thread (a step is about
1.5× faster on two), while a second one-thread process does twice the work. So
:func:`pretrain_and_run` pre-trains in a one-thread worker process and hands each
checkpoint to the other one-thread workers as soon as it is saved; once the chat model is
saved every worker takes checkpoints, then the suite-level stages run. The stored numbers
are those of :func:`~trustdyn.suites.builtin.pretrain` followed by
:func:`~precompute.pipeline.run_study`: training gives the same weights on one thread as
on several (tested), and every unit is the same job. This process only plans and writes,
each checkpoint's units as they arrive, so a killed run loses only the checkpoints in
flight, and a rerun resumes training and the study alike.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from precompute.pipeline import (
    CheckpointJob,
    Outcome,
    RunReport,
    compute_job,
    plan_study,
    run_study,
    write_results,
)
from precompute.processes import worker_pool
from precompute.stages import PreparedDataset, prepare_dataset
from precompute.study import StudyConfig
from precompute.suite_stages import run_suite_stages
from trustdyn.store import Store
from trustdyn.suites import Suite, SuiteError
from trustdyn.suites.builtin import pretrain, saved_so_far

POLL_S = 1.0
"""Seconds between looks at the run's manifest for newly saved checkpoints."""


class CheckpointStream:
    """Checkpoint jobs fed to a worker pool as checkpoints appear, written as they finish.

    At most ``limit`` jobs run at once (fewer than the pool's workers while pre-training
    holds one); the rest wait in training order. Only this process writes the study file.
    """

    def __init__(self, pool: ProcessPoolExecutor, store: Store, config: StudyConfig,
                 datasets: Sequence[PreparedDataset], limit: int) -> None:
        self.pool, self.store, self.config, self.datasets = pool, store, config, datasets
        self.limit = limit
        self.report = RunReport()
        self.done = 0  # checkpoints written or found finished
        # Shown from show_progress on: pre-training's own bars come first.
        self.bar: tqdm | None = None
        self.seen: set[str] = set()
        self.waiting: deque[CheckpointJob] = deque()
        self.running: dict[Future[Outcome], CheckpointJob] = {}

    def add(self, suite: Suite) -> None:
        """Register ``suite`` as it stands and queue its checkpoints not seen before."""
        jobs, _ = plan_study(suite, self.store, self.config, datasets=self.datasets)
        todo = {job.ref.name: job for job in jobs}
        units = len(self.datasets) * len(self.config.stages)
        for ref in suite.all_refs():
            if ref.name in self.seen:
                continue
            self.seen.add(ref.name)
            job = todo.get(ref.name)
            self.report.skipped += units - (0 if job is None else len(job.todo))
            if job is None:
                self._count_done()
            else:
                self.waiting.append(job)
        self.pump()

    def pump(self) -> None:
        """Write every finished job's results, then start waiting jobs up to the limit."""
        self.write_finished()
        while self.waiting and len(self.running) < self.limit:
            job = self.waiting.popleft()
            self.running[self.pool.submit(compute_job, job, self.config)] = job

    def write_finished(self) -> None:
        """Write the results of every job that has finished."""
        for future in [f for f in self.running if f.done()]:
            job, outcome = self.running.pop(future), future.result()
            self._count_done(job.ref.name)
            if isinstance(outcome, SuiteError):
                self.report.fail(job.ref.name, str(outcome))
            else:
                self.report.written += write_results(self.store, job.suite.name, job.ref,
                                                     outcome)

    def show_progress(self, total: int, enabled: bool) -> None:
        """Show a bar over the ``total`` checkpoints from here on."""
        self.bar = tqdm(total=total, initial=self.done, desc="built-in checkpoints computed",
                        unit="ckpt", disable=not enabled)

    def _count_done(self, name: str | None = None) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update()
            if name is not None:
                self.bar.set_postfix_str(name)

    def finish(self, limit: int) -> None:
        """Run everything left with up to ``limit`` jobs at once, writing as they finish."""
        self.limit = limit
        self.pump()
        while self.running:
            wait(self.running, return_when=FIRST_COMPLETED)
            self.pump()
        if self.bar is not None:
            self.bar.close()


def pretrain_and_run(preset: str, store: Store, config: StudyConfig, *, workers: int,
                     progress: bool = True, root: Path | None = None
                     ) -> tuple[Suite, RunReport]:
    """Pre-train (or resume) the built-in suite of ``preset`` and run its whole study.

    With ``workers`` ≥ 2 and pre-training still to do, checkpoints are computed while
    later ones train (see the module docstring); otherwise this is
    :func:`~trustdyn.suites.builtin.pretrain` followed by
    :func:`~precompute.pipeline.run_study`.

    Args:
        preset: Built-in preset name.
        store: The study file.
        config: Sizes and seeds.
        workers: One-thread worker processes (pre-training takes one while it runs).
        progress: Show progress bars.
        root: Folder holding suite folders (default ``generated_dir()/suites``).

    Returns:
        The finished suite and what the run wrote.

    Raises:
        SuiteError: unknown preset, or its folder holds a run with other settings.
    """
    existing = saved_so_far(preset, root=root)
    if workers < 2 or (existing is not None and existing.chat is not None):
        suite = pretrain(preset, progress=progress, root=root)
        return suite, run_study(suite, store, config, progress=progress, workers=workers)
    datasets = [prepare_dataset(name, config) for name in config.datasets]
    with worker_pool(workers, threads=1) as pool:
        stream = CheckpointStream(pool, store, config, datasets, workers - 1)
        try:
            training = pool.submit(pretrain, preset, root=root, progress=progress)
            suite = _stream_while_training(stream, training, preset, root)
            stream.add(suite)
            stream.show_progress(len(suite.all_refs()), progress)
            stream.finish(workers)
        except BaseException:
            stream.write_finished()  # keep what is done; a rerun computes the rest
            pool.shutdown(cancel_futures=True)
            raise
    report = stream.report
    report.written += run_suite_stages(suite, store, config, progress, None, workers)
    return suite, report


def _stream_while_training(stream: CheckpointStream, training: Future[Suite], preset: str,
                           root: Path | None) -> Suite:
    """Queue each checkpoint as the run saves it, until the run returns its suite."""
    known = 0
    while not training.done():
        saved = saved_so_far(preset, root=root)
        if saved is not None and len(saved.all_refs()) > known:
            known = len(saved.all_refs())
            stream.add(saved)
        stream.pump()
        pending: list[Future[Any]] = [training, *stream.running]
        wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
    return training.result()
