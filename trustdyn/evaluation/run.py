"""Run the offline steering evaluation of one chat model on one dataset: the steering table.

:func:`evaluate_dataset` compares the unsteered chat model (``none``), each selected
pre-training checkpoint's vector, the chat model's own vector and a seeded ``random``
control, all steered toward the dataset's desirable label: per source it picks layer and
strength (and sign, when the card has no desirable label) on a dev split under a
perplexity guard, scores the winner once on test with a paired-bootstrap ``gain`` over the
unsteered model, and stores the probe-accuracy/gain correlation across pre-training
checkpoints (:func:`trustdyn.findings.gain_vs_probe` recomputes it from a study file).
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
from trustdyn.evaluation.config import EvalConfig
from trustdyn.evaluation.items import split_items
from trustdyn.evaluation.metrics import (
    Estimate,
    bootstrap,
    paired_bootstrap,
    perplexity_statistic,
)
from trustdyn.evaluation.scoring import GENERATION_POSITIONS, SCORING_POSITIONS, Scorer
from trustdyn.evaluation.sources import VectorSource, direction_text, target_labels
from trustdyn.evaluation.tasks import EvalTask, Metric, PerplexityGuard, ToxicityTask
from trustdyn.findings import gain_probe_pairs
from trustdyn.provenance import code_version
from trustdyn.schema import BASELINE_SOURCE, CORRELATION_SOURCE, JUDGE_SOURCE, NO_LAYER
from trustdyn.stats import pearson
from trustdyn.steering import signed_alpha

__all__ = ["evaluate_dataset", "select_candidate"]


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
        sources: Vector sources (see :func:`~trustdyn.evaluation.sources.build_sources`).
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
        _emit_metrics(ctx, scored.tables, split, BASELINE_SOURCE, NO_LAYER, 0.0, "none", params)
        _emit_ppl(ctx, scored.ppl, None, split, BASELINE_SOURCE, NO_LAYER, 0.0, "none", params)
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
        ctx.row(JUDGE_SOURCE, "judge_accuracy", "test", NO_LAYER, 0.0, "none",
                ctx.task.judge_accuracy,
                {"role": "judge", "description": "accuracy of the local toxicity "
                 "judge on its own held-out ToxiGen rows (disjoint from its training rows "
                 "and from the evaluation prompts)"})


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
    pairs = pairs[["checkpoint", "layer", "gain", "probe_accuracy"]]
    corr = pearson(pairs["probe_accuracy"], pairs["gain"])
    ctx.row(CORRELATION_SOURCE, "corr_probe_gain", "test", NO_LAYER, 0.0, "none",
            Estimate(corr.r, corr.lo, corr.hi, corr.n),
            {"role": "correlation", "p_value": corr.p if math.isfinite(corr.p) else None,
             "description": "Pearson r across pre-training checkpoints between the probe's "
             "test accuracy at each checkpoint's chosen steering layer and its test gain; "
             "interval: Fisher z", "ci": "fisher_z",
             "pairs": pairs.to_dict(orient="records")})
