"""The study file's schema and vocabulary: tables, stage and source names, units.

Every word a study file stores with a fixed meaning (stage names, sentinel sources and
layers, the default perplexity guard), the schema version and column list of every table,
and the units of work a study expects are defined here once; :mod:`trustdyn.store` creates
and queries the tables, and every other module imports the words from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

SCHEMA_VERSION = 3

# ---------------------------------------------------------------- the study file's vocabulary

PER_CHECKPOINT_STAGES: tuple[str, ...] = ("probe", "info", "vectors")
"""Stages run once per (checkpoint, dataset), each its own unit; the pipeline's default."""
TURNS_STAGE = "turns"
"""Suite-level stage, one unit per dataset (checkpoint ``"*"``), after every ``info`` unit."""
STEERING_STAGE = "steer_eval"
"""Suite-level stage, one unit per dataset on the chat checkpoint, after every ``vectors``
unit; only for suites with a chat model."""
ALL_CHECKPOINTS = "*"
"""The ``checkpoint`` of a unit that spans the whole suite (turn detection)."""

BASELINE_SOURCE = "none"
"""``steering_evals.vector_source`` of the unsteered model."""
RANDOM_SOURCE = "random"
"""``steering_evals.vector_source`` of the random-direction control."""
CONTRASTIVE_SOURCE = "contrastive"
"""``steering_evals.vector_source`` and ``params.role`` of the contrastive (CAA) vectors
computed on the chat model itself from paired chat-format prompts: a source beyond the paper
(:mod:`trustdyn.evaluation.contrastive`)."""
CORRELATION_SOURCE = "pretraining checkpoints"
"""``steering_evals.vector_source`` of the probe-accuracy ↔ gain correlation row."""
JUDGE_SOURCE = "judge"
"""``steering_evals.vector_source`` of the toxicity judge's validation row."""
NO_LAYER = -1
"""``layer`` of rows that belong to no layer (baseline, correlation, judge)."""
DEFAULT_PPL_GUARD = 1.33
"""Largest steered/unsteered perplexity ratio a steering setting may reach (the paper kept
perplexity within about a third above the unsteered model's)."""
Positions = Literal["all", "newest"]
"""Where a vector is added: every position of each forward pass, or only its last one."""
STEER_POSITIONS: tuple[Positions, ...] = get_args(Positions)
"""The values of :data:`Positions` (a study config's ``steer_positions``)."""
SCALINGS: tuple[str, ...] = ("target", "source-sigma")
"""Units of the strength α: ``target`` = the chat model's own projection σ at the layer
(every source gets the same applied norm at the same α), ``source-sigma`` = the source
checkpoint's own σ (the paper's choice)."""
DEVICE_NAMES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
"""Where checkpoints load (a study config's ``device``; ``cuda:<index>`` also works)."""
DTYPE_NAMES: tuple[str, ...] = ("float32", "float16", "bfloat16")
"""Precisions checkpoints load in (a study config's ``dtype``)."""
EVAL_GRIDS: tuple[str, ...] = ("smoke", "reduced", "full")
"""Names of the steering evaluation's grids (``trustdyn.evaluation.EVAL_PRESETS``)."""

TABLES: dict[str, str] = {
    "meta": """
        key VARCHAR PRIMARY KEY,
        value VARCHAR
    """,
    "suites": """
        suite VARCHAR PRIMARY KEY,
        description VARCHAR,
        chat_checkpoint VARCHAR,
        config JSON,
        created_at TIMESTAMP
    """,
    "checkpoints": """
        suite VARCHAR,
        checkpoint VARCHAR,
        ordinal INTEGER,
        step BIGINT,
        tokens BIGINT,
        source VARCHAR,
        revision VARCHAR,
        weight_hash VARCHAR,
        train_loss DOUBLE,
        heldout_loss DOUBLE,
        is_chat BOOLEAN,
        n_layers INTEGER,
        hidden_size INTEGER,
        extra JSON,
        PRIMARY KEY (suite, checkpoint)
    """,
    "datasets": """
        dataset VARCHAR PRIMARY KEY,
        dimension VARCHAR,
        label1_meaning VARCHAR,
        desirable_label INTEGER,
        n_rows INTEGER,
        sha256 VARCHAR,
        card JSON
    """,
    "units": """
        suite VARCHAR,
        checkpoint VARCHAR,
        dataset VARCHAR,
        stage VARCHAR,
        finished_at TIMESTAMP,
        seconds DOUBLE,
        code_version VARCHAR,
        PRIMARY KEY (suite, checkpoint, dataset, stage)
    """,
    "probe_results": """
        suite VARCHAR,
        checkpoint VARCHAR,
        dataset VARCHAR,
        layer INTEGER,
        accuracy DOUBLE,
        accuracy_lo DOUBLE,
        accuracy_hi DOUBLE,
        auroc DOUBLE,
        auroc_lo DOUBLE,
        auroc_hi DOUBLE,
        accuracy_se DOUBLE,
        balanced_accuracy DOUBLE,
        balanced_accuracy_se DOUBLE,
        control_accuracy DOUBLE,
        control_auroc DOUBLE,
        test_ce_bits DOUBLE,
        usable_info_bits DOUBLE,
        n_train INTEGER,
        n_test INTEGER,
        n_test_groups INTEGER,
        seed INTEGER,
        params JSON,
        code_version VARCHAR,
        PRIMARY KEY (suite, checkpoint, dataset, layer)
    """,
    "probe_directions": """
        suite VARCHAR,
        checkpoint VARCHAR,
        dataset VARCHAR,
        layer INTEGER,
        direction FLOAT[],
        PRIMARY KEY (suite, checkpoint, dataset, layer)
    """,
    "info_results": """
        suite VARCHAR,
        checkpoint VARCHAR,
        dataset VARCHAR,
        layer INTEGER,
        estimator VARCHAR,
        quantity VARCHAR,
        value DOUBLE,
        null_mean DOUBLE,
        null_std DOUBLE,
        corrected DOUBLE,
        z DOUBLE,
        se DOUBLE,
        corrected_lo DOUBLE,
        corrected_hi DOUBLE,
        status VARCHAR,
        reason VARCHAR,
        unit VARCHAR,
        n INTEGER,
        seed INTEGER,
        params JSON,
        code_version VARCHAR,
        PRIMARY KEY (suite, checkpoint, dataset, layer, estimator, quantity)
    """,
    "info_turns": """
        suite VARCHAR,
        dataset VARCHAR,
        layer INTEGER,
        estimator VARCHAR,
        turn_step BIGINT,
        peak_value DOUBLE,
        fall DOUBLE,
        final_value DOUBLE,
        statistic DOUBLE,
        p_value DOUBLE,
        ity_falls BOOLEAN,
        distinguishable BOOLEAN,
        params JSON,
        code_version VARCHAR,
        PRIMARY KEY (suite, dataset, layer, estimator)
    """,
    "steering_vectors": """
        suite VARCHAR,
        checkpoint VARCHAR,
        dataset VARCHAR,
        layer INTEGER,
        direction FLOAT[],
        scale DOUBLE,
        toward_label INTEGER,
        site VARCHAR,
        operation VARCHAR,
        hidden_size INTEGER,
        model VARCHAR,
        revision VARCHAR,
        n INTEGER,
        seed INTEGER,
        params JSON,
        code_version VARCHAR,
        PRIMARY KEY (suite, checkpoint, dataset, layer)
    """,
    "steering_evals": """
        suite VARCHAR,
        target VARCHAR,
        vector_source VARCHAR,
        dataset VARCHAR,
        metric VARCHAR,
        split VARCHAR,
        layer INTEGER,
        alpha DOUBLE,
        steer_direction VARCHAR,
        value DOUBLE,
        ci_lo DOUBLE,
        ci_hi DOUBLE,
        n INTEGER,
        mde DOUBLE,
        applied_norm DOUBLE,
        norm_ratio DOUBLE,
        status VARCHAR,
        reason VARCHAR,
        seed INTEGER,
        params JSON,
        code_version VARCHAR,
        PRIMARY KEY (suite, target, vector_source, dataset, metric, split, layer, alpha)
    """,
}

RESULT_TABLES: tuple[str, ...] = (
    "probe_results",
    "probe_directions",
    "info_results",
    "info_turns",
    "steering_vectors",
    "steering_evals",
)
"""Tables a unit may write; each is keyed so a unit's rows can be replaced atomically."""


@dataclass(frozen=True)
class Unit:
    """One unit of work: (suite, checkpoint, dataset, stage); ``"*"`` marks 'all'."""

    suite: str
    checkpoint: str
    dataset: str
    stage: str

    def key(self) -> tuple[str, str, str, str]:
        """Return the unit as a tuple, the ``units`` table's primary key."""
        return (self.suite, self.checkpoint, self.dataset, self.stage)


def study_units(suite: str, checkpoints: Sequence[str], datasets: Sequence[str],
                stages: Sequence[str], chat_checkpoint: str | None) -> list[Unit]:
    """Return every unit a study expects, in the order the pipeline runs them.

    Args:
        suite: The suite's name.
        checkpoints: All its checkpoints in training order (the chat model included).
        datasets: The study's datasets.
        stages: Its per-checkpoint stages (a subset of :data:`PER_CHECKPOINT_STAGES`).
        chat_checkpoint: The chat model, the target of the steering evaluation, if any.

    Returns:
        The per-checkpoint units (checkpoint by checkpoint), then one turn-detection unit
        per dataset when ``info`` runs, then one steering-evaluation unit per dataset
        when ``vectors`` runs and the suite has a chat model.

    """
    units = [Unit(suite, c, d, s) for c in checkpoints for d in datasets for s in stages]
    if "info" in stages:
        units += [Unit(suite, ALL_CHECKPOINTS, d, TURNS_STAGE) for d in datasets]
    if "vectors" in stages and chat_checkpoint is not None:
        units += [Unit(suite, chat_checkpoint, d, STEERING_STAGE) for d in datasets]
    return units
