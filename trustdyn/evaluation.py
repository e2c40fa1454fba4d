"""Offline evaluation of a steered chat model: the paper's steering table.

The question (Qian et al., 2024, second finding): does a steering vector read from a
*pre-training* checkpoint, added to the chat model's residual stream, make the chat model
more trustworthy, as much as or more than the chat model's own vector? For one target
chat model and one dataset, :func:`evaluate_dataset` compares these conditions:

* ``none``: the unsteered chat model (the baseline, scored once per split);
* each selected pre-training checkpoint's vector (``vector_source`` = checkpoint name);
* the chat model's own vector (``vector_source`` = the chat checkpoint's name);
* ``random``: a seeded random unit direction with the chat vector's scale at each layer.

Every vector is applied *toward the dataset's desirable label* (the card's
``desirable_label``): the signed strength that does so comes from
:func:`trustdyn.steering.signed_alpha` and the stored ``steer_direction`` says it in
words, e.g. ``"toward label 1 (the answer is true)"`` or ``"away from label 1 (toxic)"``.
The stored ``alpha`` is the signed strength exactly as passed to
:func:`trustdyn.steering.steer` (positive = along ``mean(label 1) − mean(label 0)``), so
the applied vector is ``alpha · scale · direction``. A dataset without a desirable label
(sst2: perturbed vs original text) is evaluated with both signs and the sign is chosen on
the dev split like the layer and strength.

Selection: the evaluation items and the perplexity passages are split into dev and test
halves (seeded; stratified by label where the task has labels). For each vector source,
sign and candidate layer, a geometric ladder of strengths is climbed on dev: perplexity
first (cheap), stopping at the first strength whose dev perplexity exceeds ``ppl_guard``
× the unsteered model's (1.33: the paper kept perplexity within about a third above the
unsteered model); the strongest strengths inside the guard are then scored on the task.
Every strength tried is stored (``split="dev"`` rows: the sweep; strengths that were not
scored on the task keep their perplexity rows, with ``params.scored = false`` and the
reason). Among scored candidates the best primary metric wins (ties: smaller strength,
then lower layer). If no strength passes the guard the least-perplexing one is kept and
flagged ``guard_passed: false``. The winner is then scored once on test
(``split="test"`` rows), with a paired-bootstrap ``gain`` over the unsteered model on the
same items (positive = more trustworthy).

Across pre-training checkpoints, the Pearson correlation between the probe's test
accuracy at the chosen layer and the test gain is stored as metric ``corr_probe_gain``
(the paper reports r ≈ 0.72 for TruthfulQA); :func:`probe_steering_correlation`
recomputes it from a study file for the dashboard.

Every metric has a seeded percentile-bootstrap 95% interval over items; every row's
``params`` says what was measured, on which items, with which settings.

The pieces live in sibling modules (this one re-exports their public names):
``evaluation_config`` (grids), ``evaluation_items`` (held-out items and passages),
``evaluation_sources`` (vectors, signs), ``evaluation_tasks`` (per-dimension scoring),
``evaluation_scoring`` (a model under one steering condition) and
``evaluation_metrics`` (pure statistics, bootstrap, the local toxicity judge).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from torch import nn
from tqdm.auto import tqdm

from trustdyn.datasets import DatasetCard
from trustdyn.evaluation_config import EVAL_PRESETS, EvalConfig
from trustdyn.evaluation_items import (
    EVALUATED_DATASETS,
    build_task,
    heldout_passages,
    split_items,
    sst2_pairs,
)
from trustdyn.evaluation_metrics import (
    Estimate,
    bootstrap,
    fisher_interval,
    paired_bootstrap,
    pearson,
    perplexity_statistic,
)
from trustdyn.evaluation_scoring import GENERATION_POSITIONS, SCORING_POSITIONS, Scorer
from trustdyn.evaluation_sources import (
    RANDOM,
    VectorSource,
    build_sources,
    candidate_layers,
    direction_text,
    every_kth,
    target_labels,
    vector_from_row,
)
from trustdyn.evaluation_tasks import EvalTask, Metric, PerplexityGuard, ToxicityTask
from trustdyn.provenance import code_version
from trustdyn.steering import signed_alpha
from trustdyn.store import Store

__all__ = [
    "EVALUATED_DATASETS",
    "EVAL_PRESETS",
    "RANDOM",
    "EvalConfig",
    "VectorSource",
    "build_sources",
    "build_task",
    "candidate_layers",
    "direction_text",
    "evaluate_dataset",
    "every_kth",
    "gain_probe_pairs",
    "heldout_passages",
    "probe_steering_correlation",
    "select_candidate",
    "split_items",
    "sst2_pairs",
    "target_labels",
    "vector_from_row",
]

BASELINE = "none"
JUDGE = "judge"
CORRELATION_SOURCE = "pretraining checkpoints"
NO_LAYER = -1
"""``layer`` of rows that belong to no layer (baseline, judge, correlation)."""


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class _Candidate:
    source: VectorSource
    layer: int
    alpha: float  # signed, as applied
    toward: int


@dataclass
class _Scored:
    """Item tables and perplexity table of one condition on one split."""

    tables: dict[str, np.ndarray]
    ppl: np.ndarray  # [n_passages, 2]: (nll sum, token count)


@dataclass(eq=False)
class _Trial:
    """One dev candidate of the sweep: its perplexity and, if scored, its task tables."""

    cand: _Candidate
    ppl: np.ndarray  # [n_passages, 2]
    ratio: float  # dev perplexity / unsteered dev perplexity
    tables: dict[str, np.ndarray] | None = None  # None: not scored on the task
    skipped: str = ""  # why it was not scored


@dataclass
class _Context:
    """What every row of one (target, dataset) evaluation shares."""

    suite: str
    target: str
    card: DatasetCard
    task: EvalTask
    guard: PerplexityGuard
    cfg: EvalConfig
    split_idx: dict[str, np.ndarray]
    passage_idx: dict[str, np.ndarray]
    common: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def row(self, source: str, metric: str, split: str, layer: int, alpha: float,
            direction: str, est: Estimate, params: Mapping[str, Any]) -> None:
        self.rows.append({
            "suite": self.suite, "target": self.target, "vector_source": source,
            "dataset": self.card.name, "metric": metric, "split": split, "layer": layer,
            "alpha": float(alpha), "steer_direction": direction, "value": _finite(est.value),
            "ci_lo": _finite(est.lo), "ci_hi": _finite(est.hi), "n": est.n,
            "seed": self.cfg.seed, "params": {**self.common, **params},
            "code_version": code_version(),
        })

    def metrics(self, split: str) -> list[Metric]:
        """Metrics computed on ``split`` (generation-based ones on test only, unless asked)."""
        return [m for m in self.task.metrics
                if split == "test" or not m.test_only or self.cfg.generate_on_dev]

    def tables(self, scorer: Scorer, split: str) -> dict[str, np.ndarray]:
        """Return the task's item tables of ``split`` under ``scorer``."""
        names = {m.table for m in self.metrics(split)}
        return self.task.tables(scorer, self.split_idx[split], names)

    def ppl(self, scorer: Scorer, split: str) -> np.ndarray:
        """Return the perplexity table of ``split``'s passages under ``scorer``."""
        return self.guard.table(scorer, self.passage_idx[split])


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _estimate(ctx: _Context, metric: Metric, table: np.ndarray) -> Estimate:
    strata = None if metric.stratify_column is None else table[:, metric.stratify_column]
    return bootstrap(table, metric.statistic, n_boot=ctx.cfg.n_bootstrap, seed=ctx.cfg.seed,
                     strata=strata)


def _emit_metrics(ctx: _Context, tables: Mapping[str, np.ndarray], split: str, source: str,
                  layer: int, alpha: float, direction: str, params: Mapping[str, Any]) -> None:
    """Append one row per task metric whose table was computed."""
    for metric in ctx.metrics(split):
        if metric.table in tables:
            ctx.row(source, metric.name, split, layer, alpha, direction,
                    _estimate(ctx, metric, tables[metric.table]),
                    {**params, "description": metric.description,
                     "higher_is_better": metric.higher_is_better,
                     "positions": GENERATION_POSITIONS if metric.test_only
                     else SCORING_POSITIONS})


def _emit_ppl(ctx: _Context, ppl: np.ndarray, base: np.ndarray | None, split: str,
              source: str, layer: int, alpha: float, direction: str,
              params: Mapping[str, Any]) -> None:
    """Append the perplexity row and, for a steered condition, the perplexity-ratio row."""
    est = bootstrap(ppl, perplexity_statistic, n_boot=ctx.cfg.n_bootstrap, seed=ctx.cfg.seed)
    ctx.row(source, "ppl", split, layer, alpha, direction, est,
            {**params, "description": ctx.guard.metric.description,
             "passages": ctx.guard.source, "positions": SCORING_POSITIONS})
    if base is not None:
        ratio = paired_bootstrap(ppl, base, perplexity_statistic, np.divide,
                                 n_boot=ctx.cfg.n_bootstrap, seed=ctx.cfg.seed)
        ctx.row(source, "ppl_ratio", split, layer, alpha, direction, ratio,
                {**params, "description": "perplexity / unsteered perplexity on the same "
                 "passages (paired bootstrap)", "guard": ctx.cfg.ppl_guard,
                 "positions": SCORING_POSITIONS})


def _primary_value(ctx: _Context, tables: Mapping[str, np.ndarray]) -> float:
    """Return the primary metric oriented so that larger is better."""
    metric = ctx.task.metric(ctx.task.primary)
    value = float(metric.statistic(np.asarray(tables[metric.table], dtype=float)))
    return value if metric.higher_is_better else -value


def evaluate_dataset(model: nn.Module, tokenizer: Any, task: EvalTask, guard: PerplexityGuard,
                     sources: Sequence[VectorSource], layers: Sequence[int], card: DatasetCard,
                     cfg: EvalConfig, *, suite: str, target: str,
                     probe_accuracy: Mapping[tuple[str, int], float] | None = None,
                     progress: bool = False) -> list[dict[str, Any]]:
    """Run the dev sweep, the per-source selection and the test evaluation of one dataset.

    Args:
        model: The target chat model (eval mode).
        tokenizer: Its tokenizer.
        task: The dataset's held-out evaluation task.
        guard: Perplexity-guard passages.
        sources: Vector sources (see :func:`build_sources`).
        layers: Candidate layers.
        card: The dataset's card (desirable label, label meaning).
        cfg: Sizes, grids and seed.
        suite: Suite name (stored).
        target: Chat checkpoint name (stored).
        probe_accuracy: Probe test accuracy by (checkpoint, layer), for the
            probe-accuracy/gain correlation; omitted when ``None``.
        progress: Show a progress bar over (source, sign, layer) sweeps.

    Returns:
        ``steering_evals`` rows.

    """
    dev_items, test_items = split_items(task.n_items, cfg.dev_fraction, cfg.seed, task.strata())
    dev_pass, test_pass = split_items(guard.n_items, cfg.dev_fraction, cfg.seed)
    ctx = _Context(suite, target, card, task, guard, cfg,
                   {"dev": dev_items, "test": test_items},
                   {"dev": dev_pass, "test": test_pass},
                   {"eval": cfg.to_dict(), "task": task.describe(), "primary": task.primary})
    signs = target_labels(card)
    bar = tqdm(total=len(sources) * (len(signs) * len(layers) + 1), disable=not progress,
               desc=f"steer-eval {card.name}", unit="sweep", leave=False)
    base_scorer = Scorer(model, tokenizer, batch_size=cfg.batch_size)
    base = {split: _Scored(ctx.tables(base_scorer, split), ctx.ppl(base_scorer, split))
            for split in ("dev", "test")}
    for split, scored in base.items():
        params = {"role": "baseline"}
        _emit_metrics(ctx, scored.tables, split, BASELINE, NO_LAYER, 0.0, "none", params)
        _emit_ppl(ctx, scored.ppl, None, split, BASELINE, NO_LAYER, 0.0, "none", params)
    for source in sources:
        trials: list[_Trial] = []
        for toward in signs:
            for layer in layers:
                trials.extend(_sweep(ctx, model, tokenizer, source, toward, layer, base["dev"]))
                bar.update()
        _evaluate_selected(ctx, model, tokenizer, trials, base)
        bar.update()
    bar.close()
    _judge_row(ctx)
    if probe_accuracy is not None:
        _correlation_row(ctx, probe_accuracy, sources)
    return ctx.rows


def _scorer(model: nn.Module, tokenizer: Any, cand: _Candidate, cfg: EvalConfig) -> Scorer:
    return Scorer(model, tokenizer, cand.source.vectors[cand.layer], cand.alpha, cfg.batch_size)


def _sweep(ctx: _Context, model: nn.Module, tokenizer: Any, source: VectorSource, toward: int,
           layer: int, base: _Scored) -> list[_Trial]:
    """Climb the strength ladder of one (source, sign, layer) on dev and store the rows.

    Perplexity comes first (it is cheap): strengths over the guard are not eligible, so
    only their perplexity is stored, and with ``stop_at_guard`` the climb ends at the
    first of them. Of the strengths inside the guard the ``max_scored`` strongest are
    scored on the task (all of them when ``None``).
    """
    cfg = ctx.cfg
    base_ppl = float(perplexity_statistic(base.ppl))
    trials: list[_Trial] = []
    for magnitude in sorted(cfg.alphas):
        alpha = signed_alpha(magnitude, source.vectors[layer], toward)
        cand = _Candidate(source, layer, alpha, toward)
        ppl = ctx.ppl(_scorer(model, tokenizer, cand, cfg), "dev")
        trials.append(_Trial(cand, ppl, float(perplexity_statistic(ppl)) / base_ppl))
        if trials[-1].ratio > cfg.ppl_guard and cfg.stop_at_guard:
            break
    passing = [t for t in trials if t.ratio <= cfg.ppl_guard]
    chosen = passing if cfg.max_scored is None else passing[-cfg.max_scored:]
    chosen_ids = {id(t) for t in chosen}
    for trial in trials:
        if id(trial) in chosen_ids:
            trial.tables = ctx.tables(_scorer(model, tokenizer, trial.cand, cfg), "dev")
        else:
            trial.skipped = ("over the perplexity guard" if trial.ratio > cfg.ppl_guard
                             else f"inside the guard but not among the {cfg.max_scored} "
                             "strongest such strengths")
        direction = direction_text(ctx.card, toward, source.role)
        params = {"role": source.role, "step": source.step, "scored": trial.tables is not None,
                  "skip_reason": trial.skipped or None}
        if trial.tables is not None:
            _emit_metrics(ctx, trial.tables, "dev", source.name, layer, trial.cand.alpha,
                          direction, params)
        _emit_ppl(ctx, trial.ppl, base.ppl, "dev", source.name, layer, trial.cand.alpha,
                  direction, params)
    return trials


def select_candidate(results: Sequence[tuple[Any, float | None, float]], guard: float
                     ) -> tuple[int, bool]:
    """Pick the index of the best dev candidate under the perplexity guard.

    Args:
        results: ``(candidate, primary value oriented larger-is-better or None when not
            scored, ppl ratio)`` in sweep order; candidates expose ``alpha`` and ``layer``.
        guard: Largest allowed perplexity ratio.

    Returns:
        ``(index, guard_passed)``: the best scored primary value inside the guard (ties:
        smaller ``|alpha|``, then lower layer, then sweep order); without a scored
        candidate inside the guard, the one with the smallest perplexity ratio and
        ``False``.

    """
    if not results:
        raise ValueError("No candidates to select from.")
    eligible = [i for i, (_, value, ratio) in enumerate(results)
                if ratio <= guard and value is not None]
    if not eligible:
        return min(range(len(results)), key=lambda i: results[i][2]), False

    def key(i: int) -> tuple[float, float, int]:
        cand, value, _ = results[i]
        primary = value if value is not None and math.isfinite(value) else -math.inf
        return (-primary, abs(cand.alpha), cand.layer)

    return min(eligible, key=key), True


def _evaluate_selected(ctx: _Context, model: nn.Module, tokenizer: Any, trials: list[_Trial],
                       base: dict[str, _Scored]) -> None:
    """Score a source's chosen candidate on test, with its gain over the baseline."""
    results = [(t.cand, None if t.tables is None else _primary_value(ctx, t.tables), t.ratio)
               for t in trials]
    index, passed = select_candidate(results, ctx.cfg.ppl_guard)
    cand, dev_value, dev_ratio = results[index]
    scorer = _scorer(model, tokenizer, cand, ctx.cfg)
    tables, ppl = ctx.tables(scorer, "test"), ctx.ppl(scorer, "test")
    direction = direction_text(ctx.card, cand.toward, cand.source.role)
    params = {"role": cand.source.role, "step": cand.source.step,
              "selection": {"on": "dev", "criterion": ctx.task.primary,
                            "guard": ctx.cfg.ppl_guard, "guard_passed": passed,
                            "dev_primary_oriented": dev_value, "dev_ppl_ratio": dev_ratio,
                            "candidates": len(results),
                            "scored_candidates": sum(r[1] is not None for r in results)}}
    _emit_metrics(ctx, tables, "test", cand.source.name, cand.layer, cand.alpha, direction,
                  params)
    _emit_ppl(ctx, ppl, base["test"].ppl, "test", cand.source.name, cand.layer, cand.alpha,
              direction, params)
    metric = ctx.task.metric(ctx.task.primary)
    sign = 1.0 if metric.higher_is_better else -1.0
    table, reference = tables[metric.table], base["test"].tables[metric.table]
    strata = None if metric.stratify_column is None else table[:, metric.stratify_column]
    gain = paired_bootstrap(table, reference, metric.statistic, lambda a, b: sign * (a - b),
                            n_boot=ctx.cfg.n_bootstrap, seed=ctx.cfg.seed, strata=strata)
    ctx.row(cand.source.name, "gain", "test", cand.layer, cand.alpha, direction, gain,
            {**params, "of": metric.name, "description": f"{metric.name} steered minus "
             "unsteered on the same test items (paired bootstrap), signed so that positive "
             "= more trustworthy", "positions": SCORING_POSITIONS})


def _judge_row(ctx: _Context) -> None:
    if isinstance(ctx.task, ToxicityTask):
        ctx.row(JUDGE, "judge_accuracy", "test", NO_LAYER, 0.0, "none",
                ctx.task.judge_accuracy,
                {"role": "judge", "description": "accuracy of the local toxicity "
                 "judge on its own held-out ToxiGen rows (disjoint from its training rows "
                 "and from the evaluation prompts)"})


def gain_probe_pairs(evals: pd.DataFrame, probes: pd.DataFrame,
                     pretraining: Sequence[str]) -> pd.DataFrame:
    """Join test gains of pre-training sources with the probe accuracy at the chosen layer.

    Args:
        evals: ``steering_evals`` rows of one target and dataset.
        probes: ``probe_results`` rows (checkpoint, layer, accuracy) of that dataset.
        pretraining: Names of the suite's pre-training checkpoints.

    Returns:
        Columns ``checkpoint``, ``layer``, ``gain``, ``probe_accuracy``.

    """
    gains = evals[(evals["metric"] == "gain") & (evals["split"] == "test")
                  & evals["vector_source"].isin(list(pretraining))]
    gains = gains.rename(columns={"vector_source": "checkpoint", "value": "gain"})
    acc = probes[["checkpoint", "layer", "accuracy"]].rename(
        columns={"accuracy": "probe_accuracy"})
    merged = gains[["checkpoint", "layer", "gain"]].merge(acc, on=["checkpoint", "layer"],
                                                          how="inner")
    return merged.reset_index(drop=True)


def _correlation_row(ctx: _Context, probe_accuracy: Mapping[tuple[str, int], float],
                     sources: Sequence[VectorSource]) -> None:
    pretraining = [s.name for s in sources if s.role == "pretraining"]
    if not pretraining:  # e.g. a suite whose only checkpoint is the chat model
        return
    frame = pd.DataFrame(ctx.rows)
    probes = pd.DataFrame([{"checkpoint": c, "layer": ell, "accuracy": a}
                           for (c, ell), a in probe_accuracy.items()],
                          columns=["checkpoint", "layer", "accuracy"])
    pairs = gain_probe_pairs(frame, probes, pretraining)
    r, p, n = pearson(pairs["probe_accuracy"], pairs["gain"])
    lo, hi = fisher_interval(r, n)
    ctx.row(CORRELATION_SOURCE, "corr_probe_gain", "test", NO_LAYER, 0.0, "none",
            Estimate(r, lo, hi, n),
            {"role": "correlation", "p_value": p if math.isfinite(p) else None,
             "description": "Pearson r across pre-training checkpoints between the probe's "
             "test accuracy at each checkpoint's chosen steering layer and its test gain; "
             "interval: Fisher z", "ci": "fisher_z",
             "pairs": pairs.to_dict(orient="records")})


def probe_steering_correlation(store: Store, suite: str, dataset: str,
                               target: str | None = None) -> tuple[float, float, int]:
    """Return Pearson ``(r, p, n)`` between probe accuracy and steering gain, from a study.

    For each pre-training checkpoint with a test ``gain`` row (the chosen layer and
    strength of its vector on the dataset's primary metric), pair the gain with that
    checkpoint's probe test accuracy at the same layer. NaN ``r`` and ``p`` when fewer than
    three checkpoints are paired or either side is constant.

    Args:
        store: The study file.
        suite: Suite name.
        dataset: Dataset name.
        target: Chat checkpoint (default: the suite's only target in the file).

    """
    evals = store.steering_evals(suite)
    evals = evals[evals["dataset"] == dataset]
    if target is not None:
        evals = evals[evals["target"] == target]
    checkpoints = store.checkpoints(suite)
    pretraining = checkpoints.loc[~checkpoints["is_chat"].astype(bool), "checkpoint"].tolist()
    pairs = gain_probe_pairs(evals, store.probe_results(suite, dataset), pretraining)
    return pearson(pairs["probe_accuracy"], pairs["gain"])
