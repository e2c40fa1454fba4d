"""Run a study's checkpoints as Ray tasks, streaming results back to the one DuckDB writer.

For suites at the paper's scale (hundreds of multi-billion-parameter checkpoints) one
process is not enough. This executor sends one task per checkpoint to a Ray cluster, each
with its own CPU/GPU request; the driver keeps the only connection to the study file and
writes every unit as soon as its task returns, so a killed driver loses only the
checkpoints in flight and a rerun resumes as usual. Failed tasks are retried (a crashed
worker always, an exception when it may be transient); a checkpoint that still fails is
reported and the rest proceed.

Ray is an optional extra (``pip install 'ray>=2.40'``); nothing else imports this module.
"""

from __future__ import annotations

import importlib
import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from tqdm.auto import tqdm

from precompute.pipeline import (
    CheckpointFacts,
    CheckpointJob,
    RunReport,
    UnitResult,
    compute_checkpoint,
    plan_study,
    release_checkpoint,
    write_results,
)
from precompute.study import StudyConfig
from precompute.suite_stages import SuiteStage, run_suite_stages
from trustdyn.paths import REPO_ROOT
from trustdyn.store import Store
from trustdyn.suites import Suite, SuiteError

log = logging.getLogger(__name__)

Compute = Callable[[CheckpointJob, StudyConfig], Iterator[CheckpointFacts | UnitResult]]
"""Computes one checkpoint's results (:func:`precompute.pipeline.compute_checkpoint`)."""

# Worth another attempt: a full GPU, a flaky filesystem or hub. A SuiteError (corrupt or
# unknown checkpoint) fails the same way every time, so it is not retried.
_TRANSIENT: tuple[type[BaseException], ...] = (RuntimeError, OSError, MemoryError)


@dataclass(frozen=True)
class RayOptions:
    """Where and how the tasks run.

    Attributes:
        address: Ray cluster address (``"auto"`` joins a running cluster); ``None`` starts
            a local one on this machine, or reuses the one this process already joined.
        num_cpus: CPUs each checkpoint task reserves.
        num_gpus: GPUs each checkpoint task reserves (1 for a 7B model in bfloat16 on an
            80 GB card; fractions pack several small models on one card).
        max_retries: Extra attempts for a task whose worker died or that raised a
            transient error.
        max_in_flight: Tasks submitted at once (bounds results waiting in the object store).
    """

    address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_retries: int = 2
    max_in_flight: int = 64


def import_ray() -> ModuleType:
    """Return the ``ray`` module, or raise a clear error saying how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise ImportError(
            "The Ray executor needs Ray, an optional extra: pip install 'ray>=2.40' "
            "(or run without --executor ray, or use --shard i/n with merge)."
        ) from exc


def _run_task(job: CheckpointJob, config: StudyConfig, compute: Compute, delete_after: bool
              ) -> tuple[list[CheckpointFacts | UnitResult], int]:
    """Compute a checkpoint on a worker; with ``delete_after``, free the worker's cached copy.

    The cache to free is the worker's own, so it is freed here, once every unit is computed
    (the results travel back to the driver in the return value).
    """
    results = list(compute(job, config))
    return results, release_checkpoint(job.ref) if delete_after else 0


def run_study_ray(suite: Suite, store: Store, config: StudyConfig, *,
                  options: RayOptions = RayOptions(), progress: bool = True,
                  suite_stages: Sequence[SuiteStage] | None = None,
                  compute: Compute = compute_checkpoint, delete_after: bool = False
                  ) -> RunReport:
    """Run every unfinished unit with one Ray task per checkpoint, then the suite stages.

    Results are written by this process, in the order tasks finish; the stored rows equal
    those of :func:`precompute.pipeline.run_study` on the same suite and config.

    Args:
        suite: The checkpoint suite; its checkpoints must be loadable from every worker
            (a shared filesystem or the hub).
        store: The study file, written only by this process.
        config: Sizes and seeds.
        options: Cluster address and per-task resources and retries.
        progress: Show a progress bar over checkpoints.
        suite_stages: Suite-level stages run here at the end (``None`` = the defaults).
        compute: What each task runs (tests inject faults here).
        delete_after: Each worker removes a hub checkpoint from its Hugging Face cache
            once that checkpoint's units are computed.

    Raises:
        ImportError: Ray is not installed.
    """
    ray = import_ray()
    plan, report = plan_study(suite, store, config)
    if plan:
        _ensure_cluster(ray, options)
        task = ray.remote(_run_task).options(
            num_cpus=options.num_cpus, num_gpus=options.num_gpus,
            max_retries=options.max_retries, retry_exceptions=list(_TRANSIENT),
        )
        config_ref = ray.put(config)
        bar = tqdm(total=len(plan), desc=f"{suite.name}: checkpoints (ray)", unit="ckpt",
                   disable=not progress)
        waiting = iter(plan)
        pending: dict[Any, CheckpointJob] = {}
        for job in itertools.islice(waiting, options.max_in_flight):
            pending[task.remote(job, config_ref, compute, delete_after)] = job
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            _collect(ray, ready[0], job, store, report)
            bar.set_postfix_str(job.ref.name)
            bar.update()
            for job in itertools.islice(waiting, 1):  # keep max_in_flight tasks submitted
                pending[task.remote(job, config_ref, compute, delete_after)] = job
        bar.close()
    report.written += run_suite_stages(suite, store, config, progress, suite_stages)
    return report


def _ensure_cluster(ray: ModuleType, options: RayOptions) -> None:
    if ray.is_initialized():
        return
    # Workers import trustdyn and precompute by name: put this checkout on their path.
    ray.init(address=options.address, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})


def _collect(ray: ModuleType, future: Any, job: CheckpointJob, store: Store,
             report: RunReport) -> None:
    try:
        results, freed = ray.get(future)
    except Exception as exc:  # any task failure is reported; the other checkpoints proceed
        cause = _cause(exc)
        log.error("Checkpoint %s failed on Ray: %s", job.ref.name, cause)
        report.fail(job.ref.name, cause)
        return
    report.written += write_results(store, job.suite.name, job.ref, results)
    report.freed_bytes += freed


def _cause(exc: BaseException) -> str:
    """Return the user-facing reason of a task failure (the SuiteError message if any)."""
    inner = getattr(exc, "cause", None)
    if isinstance(inner, SuiteError):
        return str(inner)
    return f"{type(inner or exc).__name__}: {inner or exc}"
