"""The suite-level stages, run once every checkpoint's units exist: turns and steering.

:func:`run_turn_stage` detects fitting → compression turns per dataset from the stored
information estimates; :func:`run_steering_stage` loads the chat model (once, or once per
dataset in worker processes) and evaluates every dataset's steering table
(:func:`trustdyn.evaluation.evaluate_dataset`). Each writes one unit per dataset in one
transaction, and a rerun skips finished units.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from precompute.processes import worker_pool
from precompute.stages import prepare_dataset, study_layers, turn_rows
from precompute.study import StudyConfig
from trustdyn.blocks import n_blocks
from trustdyn.evaluation import (
    EVAL_PRESETS,
    EVALUATED_DATASETS,
    EvalConfig,
    build_sources,
    build_task,
    candidate_layers,
    contrastive_vectors,
    evaluate_dataset,
    every_kth,
    heldout_passages,
    residual_norms,
)
from trustdyn.evaluation.tasks import PerplexityGuard
from trustdyn.schema import (
    ALL_CHECKPOINTS,
    CONTRASTIVE_SOURCE,
    STEERING_STAGE,
    TURNS_STAGE,
    Unit,
)
from trustdyn.store import Store
from trustdyn.suites import CheckpointRef, LoadOptions, Suite, load_checkpoint
from trustdyn.timing import timed

log = logging.getLogger(__name__)

SuiteStage = Callable[[Suite, Store, StudyConfig, bool, int], int]
"""A suite-level stage: runs once all checkpoints are done, given the progress flag and the
number of worker processes it may use; returns units written."""


def run_suite_stages(suite: Suite, store: Store, config: StudyConfig, progress: bool,
                     stages: Sequence[SuiteStage] | None = None, workers: int = 1) -> int:
    """Run the suite-level stages (``None`` = turn detection, then steering evaluation).

    Returns:
        The number of units written.

    """
    chosen = (run_turn_stage, run_steering_stage) if stages is None else stages
    return sum(stage(suite, store, config, progress, workers) for stage in chosen)


def run_turn_stage(suite: Suite, store: Store, config: StudyConfig, progress: bool,
                   workers: int = 1) -> int:
    """Detect fitting → compression turns per dataset once all its info units exist.

    Reads stored estimates only (well under a second per dataset): ``workers`` is unused.
    """
    if "info" not in config.stages:
        return 0
    done = store.finished_units(suite.name)
    pretraining = [ref.name for ref in suite.checkpoints]
    written = 0
    for name in config.datasets:
        unit = Unit(suite.name, ALL_CHECKPOINTS, name, TURNS_STAGE)
        complete = all((suite.name, c, name, "info") in done for c in pretraining)
        if unit.key() in done or not complete:
            continue
        start = time.perf_counter()
        frame = store.info_results(suite.name, name)
        rows = turn_rows(suite.name, name, frame[~frame["is_chat"]], config)
        store.write_unit(unit, {"info_turns": rows}, seconds=time.perf_counter() - start)
        written += 1
    return written


def eval_config_for(config: StudyConfig) -> EvalConfig:
    """Return the steering-evaluation grid named by ``config.steer_eval``.

    ``full`` for public suites, ``reduced`` for the default and classroom studies, ``smoke``
    for tests; the seed and bootstrap count follow the study's.

    Raises:
        ValueError: ``steer_eval`` is None (no evaluation) or names no grid.
    """
    if config.steer_eval not in EVAL_PRESETS:
        raise ValueError(f"No steering-evaluation grid {config.steer_eval!r}; "
                         f"choose one of {', '.join(EVAL_PRESETS)}")
    base = EVAL_PRESETS[config.steer_eval]
    return dataclasses.replace(base, seed=config.seed, n_bootstrap=config.n_bootstrap,
                               scaling=config.steer_scaling,
                               positions=config.steer_positions)


def _builtin_run(suite: Suite, ref: CheckpointRef) -> tuple[str, int] | None:
    """Return ``(preset, seed)`` when ``ref`` is the built-in suite's (held-out material)."""
    preset, seed = ref.extra.get("preset"), ref.extra.get("seed")
    if suite.name.startswith("builtin") and isinstance(preset, str) and isinstance(seed, int):
        return preset, seed
    return None


def _pretraining(suite: Suite, cfg: EvalConfig) -> list[tuple[str, int | None]]:
    """Return ``(name, step)`` of the pre-training checkpoints whose vectors are evaluated."""
    chat = suite.chat.name if suite.chat else None
    refs = {ref.name: ref.step for ref in suite.checkpoints if ref.name != chat}
    return [(name, refs[name]) for name in every_kth(list(refs), cfg.checkpoint_stride)]


def _missing_vectors(suite: Suite, done: set[tuple[str, str, str, str]], dataset: str,
                     checkpoints: list[str]) -> list[str]:
    return [c for c in checkpoints if (suite.name, c, dataset, "vectors") not in done]


def run_steering_stage(suite: Suite, store: Store, config: StudyConfig,
                       progress: bool = True, workers: int = 1) -> int:
    """Evaluate steering of ``suite``'s chat model on every dataset not done yet.

    Baseline, pre-training checkpoints' vectors, the chat model's own vector, its
    contrastive (CAA) vector and a random control, swept on dev under the perplexity guard
    and reported on test. Suites without
    a chat model (e.g. Pythia) get no units.

    Args:
        suite: The suite (its ``chat`` is the target).
        store: The study file; vectors and probe results are read from it.
        config: The study config (datasets, seed, device, sizes via :func:`eval_config_for`).
        progress: Show progress bars.
        workers: Datasets evaluated at once in worker processes (1 = here).

    Returns:
        The number of units written.

    """
    if suite.chat is None:
        log.info("Suite %s has no chat model; no steering evaluation to run.", suite.name)
        return 0
    if "vectors" not in config.stages or config.steer_eval is None:
        log.info("The study computes no steering vectors or asks for no steering "
                 "evaluation; skipping it.")
        return 0
    chat = suite.chat
    cfg = eval_config_for(config)
    done = store.finished_units(suite.name)
    pretraining = _pretraining(suite, cfg)
    todo = []
    for name in config.datasets:
        if name not in EVALUATED_DATASETS:
            log.warning("Dataset %s has no offline steering evaluation (it has tasks for the "
                        "builtin datasets only); its vectors are stored and the Steering "
                        "lab offers them.", name)
            continue
        if Unit(suite.name, chat.name, name, STEERING_STAGE).key() in done:
            continue
        missing = _missing_vectors(suite, done, name, [chat.name, *(n for n, _ in pretraining)])
        if missing:
            log.warning("Steering evaluation of %s/%s waits for the vectors of %s.",
                        suite.name, name, ", ".join(missing))
            continue
        todo.append(name)
    if not todo:
        return 0
    for name, rows, seconds in _evaluated(suite, store, config, cfg, todo, pretraining,
                                          workers, progress):
        store.write_unit(Unit(suite.name, chat.name, name, STEERING_STAGE),
                         {"steering_evals": rows}, seconds=seconds)
    return len(todo)


def _evaluated(suite: Suite, store: Store, config: StudyConfig, cfg: EvalConfig,
               names: list[str], pretraining: list[tuple[str, int | None]], workers: int,
               progress: bool) -> Iterator[tuple[str, list[dict[str, Any]], float]]:
    """Yield ``(dataset, rows, seconds)`` per dataset as each evaluation finishes.

    One worker shares one loaded chat model across datasets; with more, each dataset is a
    task in a :func:`~precompute.processes.worker_pool` that loads its own (a small cost
    for models that make parallel datasets worth it).
    """
    if workers == 1 or len(names) == 1:
        model, tokenizer, yardsticks = _chat_model(suite, config, cfg)
        for name in names:
            start = time.perf_counter()
            rows = steering_rows(suite, store, config, cfg, name, model, tokenizer, yardsticks,
                                 pretraining, progress)
            yield name, rows, time.perf_counter() - start
        return
    with worker_pool(min(workers, len(names))) as pool:
        futures = {pool.submit(_evaluate_in_worker, suite, store.path, config, cfg, name,
                               pretraining): name for name in names}
        for future in as_completed(futures):
            rows, seconds = future.result()
            yield futures[future], rows, seconds


def _chat_model(suite: Suite, config: StudyConfig, cfg: EvalConfig
                ) -> tuple[nn.Module, Any, tuple[PerplexityGuard, dict[int, float]]]:
    """Load the chat model; return it, its tokenizer, the guard and its residual norms."""
    assert suite.chat is not None
    model, tokenizer = load_checkpoint(suite.chat, LoadOptions(device=config.device,
                                                               dtype=config.dtype))
    passages, source = heldout_passages(_builtin_run(suite, suite.chat), cfg)
    norms = residual_norms(model, tokenizer, passages, batch_size=cfg.batch_size)
    return model, tokenizer, (PerplexityGuard(passages, source), norms)


def _evaluate_in_worker(suite: Suite, path: Path, config: StudyConfig, cfg: EvalConfig,
                        dataset: str, pretraining: list[tuple[str, int | None]]
                        ) -> tuple[list[dict[str, Any]], float]:
    """Evaluate one dataset in a worker process (reads the study file, writes nothing)."""
    start = time.perf_counter()
    model, tokenizer, yardsticks = _chat_model(suite, config, cfg)
    rows = steering_rows(suite, Store(path), config, cfg, dataset, model, tokenizer,
                         yardsticks, pretraining, False)
    return rows, time.perf_counter() - start


def _probe_accuracy(probes: pd.DataFrame) -> dict[tuple[str, int], float]:
    """Return probe test accuracy keyed by (checkpoint, layer)."""
    return {
        (str(name), int(layer)): float(acc)
        for name, layer, acc in zip(probes["checkpoint"], probes["layer"], probes["accuracy"],
                                    strict=True)
    }


@timed("steer_eval")
def steering_rows(suite: Suite, store: Store, config: StudyConfig, cfg: EvalConfig,
                  dataset: str, model: nn.Module, tokenizer: Any,
                  yardsticks: tuple[PerplexityGuard, dict[int, float]],
                  pretraining: list[tuple[str, int | None]], progress: bool
                  ) -> list[dict[str, Any]]:
    """Return the ``steering_evals`` rows of one (chat model, dataset) unit.

    ``yardsticks`` are the guard's passages and the chat model's residual norms per layer.
    Evaluation items exclude every statement of the study's sample of the dataset (the
    rows whose activations made the vectors and their scales). Besides the stored vectors,
    the chat model's contrastive (CAA) vectors are computed here from the same
    vector-fitting statements and evaluated as one more source (beyond the paper).
    """
    assert suite.chat is not None
    guard, norms = yardsticks
    prepared = prepare_dataset(dataset, config)
    task = build_task(dataset, prepared.dataset, cfg, _builtin_run(suite, suite.chat))
    probes = store.probe_results(suite.name, dataset) if "probe" in config.stages \
        else pd.DataFrame(columns=["checkpoint", "layer", "accuracy"])
    probe_accuracy = _probe_accuracy(probes)
    chat_accuracy = {ell: acc for (name, ell), acc in probe_accuracy.items()
                     if name == suite.chat.name}
    # Candidates come from the study's blocks only: no other block has vectors.
    blocks = study_layers(config, n_blocks(model))
    picks = candidate_layers(len(blocks), {blocks.index(ell): acc for ell, acc
                                           in chat_accuracy.items() if ell in blocks} or None,
                             cfg.layers)
    layers = [blocks[i] for i in picks]
    fitting = prepared.dataset.subset(prepared.split.train)
    with timed("steer_eval/contrastive vectors"):
        contrastive = contrastive_vectors(
            model, tokenizer, fitting, layers, seed=cfg.seed,
            max_pairs=cfg.contrastive_pairs, max_length=config.max_length,
            batch_size=cfg.batch_size,
            source=f"{suite.name}/{suite.chat.name} {CONTRASTIVE_SOURCE}",
            model_name=suite.chat.source,
        )
    sources = build_sources(
        store.steering_vectors(suite.name, dataset, with_direction=True),
        suite=suite.name, chat=suite.chat.name, pretraining=pretraining, layers=layers,
        chat_step=suite.chat.step, seed=cfg.seed, scaling=cfg.scaling,
        contrastive=contrastive,
    )
    return evaluate_dataset(
        model, tokenizer, task, guard, sources, layers, prepared.dataset.card, cfg,
        suite=suite.name, target=suite.chat.name, residual_norm=norms,
        probe_accuracy=probe_accuracy if "probe" in config.stages else None,
        progress=progress,
    )
