"""Worker processes on this machine: a pool whose workers split this process's threads.

The built-in model is small, and small matrices use two threads poorly: two one-thread
processes finish its checkpoints and its steering evaluation sooner than one two-thread
process. :func:`worker_pool` starts such a pool for the pipeline and the steering stage.
Workers are spawned, never forked (a fork after OpenMP has run can hang), draw none of
transformers' bars (their loading bars would break into this process's bars, which show
the progress), and end when this process ends, even when it is killed outright; results
travel back pickled. :func:`in_background` runs one job at the lowest CPU priority, so that
one-core work (SmolLM2's conversion) fills the gaps the pipeline leaves on the cores.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.process import BaseProcess

import torch
from transformers.utils import logging as hf_logging


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """Return a pool of ``workers`` processes, each with an equal share of the threads.

    A worker gets ``torch.get_num_threads() // workers`` threads, at least one.

    Raises:
        ValueError: ``workers`` < 1.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    threads = max(1, torch.get_num_threads() // workers)
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker,
                               initargs=(threads,))


def _start_worker(threads: int) -> None:
    """Set up a worker: its threads, no transformers bars, and exit with the parent.

    A parent killed outright (SIGKILL) cannot stop its workers; without the watch they would
    finish their jobs unseen, and one pre-training a suite would go on writing the folder
    that a rerun resumes from.
    """
    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_after, args=(parent,), daemon=True,
                         name="exit-with-parent").start()


def _exit_after(parent: BaseProcess) -> None:
    """Wait until ``parent`` has ended, then end this process at once."""
    parent.join()
    os._exit(1)


@contextlib.contextmanager
def in_background(job: Callable[[], object]) -> Iterator[BaseProcess]:
    """Run ``job()`` in a spawned one-thread process at the lowest CPU priority.

    Where the OS has niceness the process runs at 19: it takes the cycles no other process
    wants and yields a core when it is wanted. It is not free: on the 2-core machine a
    niced busy loop slowed a one-thread neighbour by ~8% and two-thread training by 8-25%
    per step (its threads wait for an interrupted one), so start it where the work around
    it runs on one thread per process. Leaving the block stops it if it is still running.
    The job's outcome is the exit code (0: done, 1: it raised, silently); what it made must
    be found where it puts it (a cache), and a caller that finds nothing does the work
    itself, where its errors are reported.
    """
    process = multiprocessing.get_context("spawn").Process(
        target=_run_at_low_priority, args=(job,), daemon=True, name="background-job")
    process.start()
    try:
        yield process
    finally:
        if process.is_alive():
            process.terminate()
        process.join()


def _run_at_low_priority(job: Callable[[], object]) -> None:
    if hasattr(os, "nice"):  # not on Windows: there the job runs at normal priority
        os.nice(19)
    _start_worker(1)
    try:
        job()
    except Exception:
        # The caller redoes the job in the foreground, which reports the error properly;
        # a traceback here would break into the foreground's progress bars.
        raise SystemExit(1) from None
