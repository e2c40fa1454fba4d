"""Worker processes on this machine: a pool whose workers split this process's threads.

The built-in model is small, and small matrices use two threads poorly: two one-thread
processes finish its checkpoints and its steering evaluation sooner than one two-thread
process. :func:`worker_pool` starts such a pool for the pipeline and the steering stage.
Workers are spawned, never forked (a fork after OpenMP has run can hang), and keep this
process's choice of transformers' progress bars; results travel back pickled.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

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
                               initargs=(threads, hf_logging.is_progress_bar_enabled()))


def _start_worker(threads: int, bars: bool) -> None:
    """Give a worker process its threads and its parent's choice of transformers' bars."""
    torch.set_num_threads(threads)
    (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
