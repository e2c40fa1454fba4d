"""Offline evaluation of steered chat models: the paper's steering table.

Does a pre-training checkpoint's vector make the chat model more trustworthy? The package
compares, per dataset, the unsteered chat model with its own steering vector,
pre-training checkpoints' vectors and a random direction on held-out items, choosing layer
and strength on a dev split under a perplexity guard and reporting test gains over the
unsteered model and over the random direction of the same applied norm, with bootstrap
intervals. Its modules: :mod:`~trustdyn.evaluation.config` (grids),
:mod:`~trustdyn.evaluation.items` (held-out items and passages),
:mod:`~trustdyn.evaluation.sources` (vectors, signs),
:mod:`~trustdyn.evaluation.contrastive` (the chat model's contrastive vectors, a source
beyond the paper), :mod:`~trustdyn.evaluation.tasks`
(per-dimension scoring), :mod:`~trustdyn.evaluation.scoring` (a model under one steering
condition), :mod:`~trustdyn.evaluation.metrics` (statistics, bootstrap, the local toxicity
judge) and :mod:`~trustdyn.evaluation.run` (the sweep, selection and test rows).
"""

from trustdyn.evaluation.config import EVAL_PRESETS, SCALINGS, EvalConfig
from trustdyn.evaluation.contrastive import ContrastiveVectors, contrastive_vectors
from trustdyn.evaluation.items import (
    EVALUATED_DATASETS,
    build_task,
    heldout_passages,
    split_items,
    sst2_pairs,
)
from trustdyn.evaluation.run import evaluate_dataset, select_candidate
from trustdyn.evaluation.sources import (
    VectorSource,
    build_sources,
    candidate_layers,
    direction_text,
    every_kth,
    residual_norms,
    target_labels,
    vector_from_row,
)

__all__ = [
    "EVALUATED_DATASETS",
    "EVAL_PRESETS",
    "SCALINGS",
    "ContrastiveVectors",
    "EvalConfig",
    "VectorSource",
    "build_sources",
    "build_task",
    "candidate_layers",
    "contrastive_vectors",
    "direction_text",
    "evaluate_dataset",
    "every_kth",
    "heldout_passages",
    "residual_norms",
    "select_candidate",
    "split_items",
    "sst2_pairs",
    "target_labels",
    "vector_from_row",
]
