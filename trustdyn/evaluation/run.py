"""Run the offline steering evaluation of one chat model on one dataset: the steering table.

:func:`evaluate_dataset` compares the unsteered chat model (``none``), each selected
pre-training checkpoint's vector, the chat model's own vector, the optional contrastive
(CAA) vector computed on the chat model (beyond the paper) and a seeded ``random``
direction, all steered toward the dataset's desirable label under one intervention
(``EvalConfig.positions``) and one unit of strength (``EvalConfig.scaling``): per source it
picks layer and strength (and sign, when the card has no desirable label) on a dev split
among the settings that pass the perplexity guard and are not degenerate — none passing
means "no admissible setting", never a fallback — then scores the winner once on test with
a paired-bootstrap ``gain`` over the unsteered model and a ``gain_vs_random`` over the
random direction of the same applied norm at the same layer (the "helps" test,
:func:`trustdyn.verdicts.helps_verdict`). Every steered row stores its applied L2 norm, the
norm's ratio to the chat model's mean residual norm at that layer, and gains their minimum
detectable effect; the probe-accuracy ↔ gain correlation is stored raw and with the
applied norm held fixed.
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
    minimum_detectable_effect,
    paired_bootstrap,
    perplexity_statistic,
)
from trustdyn.evaluation.scoring import Scorer
from trustdyn.evaluation.sources import VectorSource, direction_text, target_labels
from trustdyn.evaluation.tasks import EvalTask, Metric, PerplexityGuard, ToxicityTask
from trustdyn.findings import gain_probe_pairs, norm_controlled
from trustdyn.generation import PromptCache
from trustdyn.provenance import code_version
from trustdyn.schema import BASELINE_SOURCE, CORRELATION_SOURCE, JUDGE_SOURCE, NO_LAYER
from trustdyn.stats import Correlation, pearson
from trustdyn.steering import SteeringVector, signed_alpha
from trustdyn.timing import timed

__all__ = ["evaluate_dataset", "select_candidate", "without_spread"]

NO_ADMISSIBLE = "no admissible setting"
"""``status`` of a source's test row when no dev setting passed the guard undegenerate."""
UNDEFINED = "undefined"
"""``status`` of a metric a degenerate setting makes meaningless (its value is NULL)."""


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class _Candidate:
    source: VectorSource
    layer: int
    alpha: float  # signed, as applied
    toward: int

    @property
    def vector(self) -> SteeringVector:
        return self.source.vectors[self.layer]

    @property
    def applied_norm(self) -> float:
        """L2 norm of the vector added to the residual stream: ``|α| · scale``."""
        return abs(self.alpha) * self.vector.scale


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
    degenerate: str | None = None  # why its primary metric is meaningless, if it is


@dataclass
class _Context:
    """What every row of one (target, dataset) evaluation shares."""

    suite: str
    target: str
    card: DatasetCard
    task: EvalTask
    guard: PerplexityGuard
    cfg: EvalConfig
    model: nn.Module
    tokenizer: Any
    split_idx: dict[str, np.ndarray]
    passage_idx: dict[str, np.ndarray]
    common: dict[str, Any]
    residual_norm: Mapping[int, float]
    control: Mapping[int, SteeringVector]
    prompts: PromptCache
    rows: list[dict[str, Any]] = field(default_factory=list)
    control_tables: dict[tuple[int, float], dict[str, np.ndarray]] = field(default_factory=dict)

    def row(self, source: str, metric: str, split: str, layer: int, alpha: float,
            direction: str, est: Estimate, params: Mapping[str, Any], *,
            cand: _Candidate | None = None, status: str = "ok", reason: str | None = None,
            mde: float | None = None) -> None:
        norm, ratio = (None, None) if cand is None else self.norms(cand)
        self.rows.append({
            "suite": self.suite, "target": self.target, "vector_source": source,
            "dataset": self.card.name, "metric": metric, "split": split, "layer": layer,
            "alpha": float(alpha), "steer_direction": direction, "value": _finite(est.value),
            "ci_lo": _finite(est.lo), "ci_hi": _finite(est.hi), "n": est.n,
            "mde": None if mde is None else _finite(mde), "applied_norm": norm,
            "norm_ratio": ratio, "status": status, "reason": reason, "seed": self.cfg.seed,
            "params": {**self.common, **params, **self.scaling(cand)},
            "code_version": code_version(),
        })

    def norms(self, cand: _Candidate) -> tuple[float, float | None]:
        """Return the applied norm and its ratio to the layer's mean residual norm."""
        norm = cand.applied_norm
        stream = self.residual_norm.get(cand.layer)
        return norm, _finite(norm / stream) if stream else None

    def scaling(self, cand: _Candidate | None) -> dict[str, Any]:
        """Return the strength in both units, for a steered row's ``params``."""
        if cand is None:
            return {}
        norm = cand.applied_norm
        own = cand.source.source_sigma.get(cand.layer)
        chat = self.control[cand.layer].scale
        return {"source_sigma": own, "target_sigma": chat,
                "alpha_source_sigma": norm / own if own else None,
                "alpha_target_sigma": norm / chat if chat else None}

    def metrics(self, split: str) -> list[Metric]:
        """Metrics computed on ``split`` (generation-based ones on test only, unless asked)."""
        return [m for m in self.task.metrics
                if split == "test" or not m.test_only or self.cfg.generate_on_dev]

    def scorer(self, vector: SteeringVector | None = None, alpha: float = 0.0) -> Scorer:
        """Return a scorer of the target under one steering condition (the study's positions)."""
        return Scorer(self.model, self.tokenizer, vector, alpha, self.cfg.batch_size,
                      self.cfg.positions, self.prompts)

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


def _undefined(n: int) -> Estimate:
    return Estimate(math.nan, math.nan, math.nan, n)


def _emit_metrics(ctx: _Context, tables: Mapping[str, np.ndarray], split: str, source: str,
                  layer: int, alpha: float, direction: str, params: Mapping[str, Any],
                  cand: _Candidate | None = None) -> None:
    """Append one row per task metric whose table was computed.

    A degenerate setting's primary metric is stored undefined, with the reason.
    """
    reason = ctx.task.degenerate(tables)
    for metric in ctx.metrics(split):
        if metric.table not in tables:
            continue
        table = tables[metric.table]
        est = _estimate(ctx, metric, table) if len(table) else _undefined(0)
        why = (reason if reason is not None and metric.name == ctx.task.primary
               else None if math.isfinite(est.value)
               else "no value on these items (e.g. none of the metric's kind)")
        ctx.row(source, metric.name, split, layer, alpha, direction,
                est if why is None else _undefined(est.n),
                {**params, "description": metric.description,
                 "higher_is_better": metric.higher_is_better},
                cand=cand, status="ok" if why is None else UNDEFINED, reason=why)


def _emit_ppl(ctx: _Context, ppl: np.ndarray, base: np.ndarray | None, split: str,
              source: str, layer: int, alpha: float, direction: str,
              params: Mapping[str, Any], cand: _Candidate | None = None) -> float:
    """Append the perplexity row and, for a steered condition, the perplexity-ratio row.

    Returns:
        The perplexity ratio to the unsteered model (1.0 without ``base``).

    """
    est = bootstrap(ppl, perplexity_statistic, n_boot=ctx.cfg.n_bootstrap, seed=ctx.cfg.seed)
    ctx.row(source, "ppl", split, layer, alpha, direction, est,
            {**params, "description": ctx.guard.metric.description,
             "passages": ctx.guard.source}, cand=cand)
    if base is None:
        return 1.0
    ratio = paired_bootstrap(ppl, base, perplexity_statistic, np.divide,
                             n_boot=ctx.cfg.n_bootstrap, seed=ctx.cfg.seed)
    ctx.row(source, "ppl_ratio", split, layer, alpha, direction, ratio,
            {**params, "description": "perplexity / unsteered perplexity on the same "
             "passages (paired bootstrap)", "guard": ctx.cfg.ppl_guard}, cand=cand)
    return ratio.value


def _primary_value(ctx: _Context, tables: Mapping[str, np.ndarray]) -> float:
    """Return the primary metric oriented so that larger is better."""
    metric = ctx.task.metric(ctx.task.primary)
    value = float(metric.statistic(np.asarray(tables[metric.table], dtype=float)))
    return value if metric.higher_is_better else -value


def evaluate_dataset(model: nn.Module, tokenizer: Any, task: EvalTask, guard: PerplexityGuard,
                     sources: Sequence[VectorSource], layers: Sequence[int], card: DatasetCard,
                     cfg: EvalConfig, *, suite: str, target: str,
                     residual_norm: Mapping[int, float] | None = None,
                     probe_accuracy: Mapping[tuple[str, int], float] | None = None,
                     progress: bool = False) -> list[dict[str, Any]]:
    """Run the dev sweep, the per-source selection and the test evaluation of one dataset.

    Args:
        model: The target chat model (eval mode).
        tokenizer: Its tokenizer.
        task: The dataset's held-out evaluation task.
        guard: Perplexity-guard passages.
        sources: Vector sources (see :func:`~trustdyn.evaluation.sources.build_sources`);
            the one with role ``"random"`` is also the same-norm control of the others.
        layers: Candidate layers.
        card: The dataset's card (desirable label, label meaning).
        cfg: Sizes, grids, intervention, scaling and seed.
        suite: Suite name (stored).
        target: Chat checkpoint name (stored).
        residual_norm: The chat model's mean residual norm per layer (see
            :func:`~trustdyn.evaluation.sources.residual_norms`); norm ratios are NULL
            without it.
        probe_accuracy: Probe test accuracy by (checkpoint, layer), for the
            probe-accuracy/gain correlation; omitted when ``None``.
        progress: Show a progress bar over (source, sign, layer) sweeps.

    Returns:
        ``steering_evals`` rows.

    Raises:
        ValueError: without a random source (the control every verdict needs).

    """
    control = next((s for s in sources if s.role == "random"), None)
    if control is None:
        raise ValueError("The steering evaluation needs the random-direction source "
                         "(build_sources adds it).")
    dev_items, test_items = split_items(task.n_items, cfg.dev_fraction, cfg.seed, task.strata())
    dev_pass, test_pass = split_items(guard.n_items, cfg.dev_fraction, cfg.seed)
    ctx = _Context(suite, target, card, task, guard, cfg, model, tokenizer,
                   {"dev": dev_items, "test": test_items},
                   {"dev": dev_pass, "test": test_pass},
                   {"eval": cfg.to_dict(), "task": task.describe(), "primary": task.primary,
                    "positions": cfg.positions, "scaling": cfg.scaling},
                   dict(residual_norm or {}), control.vectors, PromptCache(model))
    signs = target_labels(card)
    bar = tqdm(total=len(sources) * (len(signs) * len(layers) + 1), disable=not progress,
               desc=f"steer-eval {card.name}", unit="sweep", leave=False)
    base_scorer = ctx.scorer()
    with timed("steer_eval/unsteered baseline"):
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
                with timed("steer_eval/dev sweep"):
                    trials.extend(_sweep(ctx, source, toward, layer, base["dev"]))
                bar.update()
        with timed("steer_eval/test of the dev-selected setting"):
            _evaluate_selected(ctx, source, trials, base)
        bar.update()
    bar.close()
    _judge_rows(ctx)
    if probe_accuracy is not None:
        _correlation_rows(ctx, probe_accuracy, sources)
    return ctx.rows


def _source_params(source: VectorSource) -> dict[str, Any]:
    """Return what every steered row of ``source`` stores about it in ``params``."""
    recipe = {"recipe": dict(source.recipe)} if source.recipe else {}
    return {"role": source.role, "step": source.step, **recipe}


def _sweep(ctx: _Context, source: VectorSource, toward: int, layer: int,
           base: _Scored) -> list[_Trial]:
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
        ppl = ctx.ppl(ctx.scorer(cand.vector, alpha), "dev")
        trials.append(_Trial(cand, ppl, float(perplexity_statistic(ppl)) / base_ppl))
        if trials[-1].ratio > cfg.ppl_guard and cfg.stop_at_guard:
            break
    passing = [t for t in trials if t.ratio <= cfg.ppl_guard]
    chosen = passing if cfg.max_scored is None else passing[-cfg.max_scored:]
    chosen_ids = {id(t) for t in chosen}
    direction = direction_text(ctx.card, toward, source.role)
    for trial in trials:
        if id(trial) in chosen_ids:
            trial.tables = ctx.tables(ctx.scorer(trial.cand.vector, trial.cand.alpha), "dev")
            trial.degenerate = ctx.task.degenerate(trial.tables)
        else:
            trial.skipped = ("over the perplexity guard" if trial.ratio > cfg.ppl_guard
                             else f"inside the guard but not among the {cfg.max_scored} "
                             "strongest such strengths")
        params = {**_source_params(source), "scored": trial.tables is not None,
                  "skip_reason": trial.skipped or None}
        if trial.tables is not None:
            _emit_metrics(ctx, trial.tables, "dev", source.name, layer, trial.cand.alpha,
                          direction, params, trial.cand)
        _emit_ppl(ctx, trial.ppl, base.ppl, "dev", source.name, layer, trial.cand.alpha,
                  direction, params, trial.cand)
    return trials


def select_candidate(results: Sequence[tuple[Any, float | None, float]], guard: float
                     ) -> int | None:
    """Pick the index of the best admissible dev candidate, or ``None`` if none is.

    Args:
        results: ``(candidate, primary value oriented larger-is-better, or None when not
            scored or degenerate, ppl ratio)`` in sweep order; candidates expose ``alpha``
            and ``layer``.
        guard: Largest allowed perplexity ratio.

    Returns:
        The best scored primary value inside the guard (ties: smaller ``|alpha|``, then
        lower layer, then sweep order); ``None`` when no candidate is admissible — a
        setting over the guard is never chosen.

    """
    eligible = [i for i, (_, value, ratio) in enumerate(results)
                if ratio <= guard and value is not None]
    if not eligible:
        return None

    def key(i: int) -> tuple[float, float, int]:
        cand, value, _ = results[i]
        primary = value if value is not None and math.isfinite(value) else -math.inf
        return (-primary, abs(cand.alpha), cand.layer)

    return min(eligible, key=key)


def _no_admissible_reason(ctx: _Context, trials: Sequence[_Trial]) -> str:
    over = [t for t in trials if t.ratio > ctx.cfg.ppl_guard]
    degenerate = [t for t in trials if t.degenerate]
    parts = [f"{len(trials)} dev settings"]
    if over:
        least = min(over, key=lambda t: t.ratio)
        parts.append(f"{len(over)} over the perplexity guard {ctx.cfg.ppl_guard:g} (least: "
                     f"{least.ratio:.2f} at layer {least.cand.layer}, α {least.cand.alpha:+g})")
    if degenerate:
        parts.append(f"{len(degenerate)} degenerate ({degenerate[0].degenerate})")
    return "; ".join(parts)


def _evaluate_selected(ctx: _Context, source: VectorSource, trials: list[_Trial],
                       base: dict[str, _Scored]) -> None:
    """Score a source's chosen candidate on test, with its gains over baseline and control."""
    results = [(t.cand, None if t.tables is None or t.degenerate
                else _primary_value(ctx, t.tables), t.ratio) for t in trials]
    index = select_candidate(results, ctx.cfg.ppl_guard)
    selection = {"on": "dev", "criterion": ctx.task.primary, "guard": ctx.cfg.ppl_guard,
                 "candidates": len(results),
                 "scored_candidates": sum(t.tables is not None for t in trials)}
    if index is None:
        ctx.row(source.name, "gain", "test", NO_LAYER, 0.0,
                direction_text(ctx.card, trials[0].cand.toward, source.role), _undefined(0),
                {**_source_params(source),
                 "selection": {**selection, "guard_passed": False}},
                status=NO_ADMISSIBLE, reason=_no_admissible_reason(ctx, trials))
        return
    cand, dev_value, dev_ratio = results[index]
    scorer = ctx.scorer(cand.vector, cand.alpha)
    tables, ppl = ctx.tables(scorer, "test"), ctx.ppl(scorer, "test")
    direction = direction_text(ctx.card, cand.toward, source.role)
    params = {**_source_params(source),
              "selection": {**selection, "guard_passed": True,
                            "dev_primary_oriented": dev_value, "dev_ppl_ratio": dev_ratio}}
    _emit_metrics(ctx, tables, "test", source.name, cand.layer, cand.alpha, direction,
                  params, cand)
    test_ratio = _emit_ppl(ctx, ppl, base["test"].ppl, "test", source.name, cand.layer,
                           cand.alpha, direction, params, cand)
    metric = ctx.task.metric(ctx.task.primary)
    _gain_row(ctx, cand, "gain", tables, base["test"].tables, direction,
              {**params, "of": metric.name, "description": f"{metric.name} steered minus "
               "unsteered on the same test items (paired bootstrap), signed so that "
               "positive = more trustworthy"})
    if source.role == "random":
        return
    control_alpha = math.copysign(cand.applied_norm / ctx.control[cand.layer].scale,
                                  cand.alpha)
    _gain_row(ctx, cand, "gain_vs_random", tables,
              _control_tables(ctx, cand.layer, control_alpha), direction,
              {**params, "of": metric.name, "control_alpha": control_alpha,
               "test_ppl_ratio": test_ratio,
               "guard_passed": bool(test_ratio <= ctx.cfg.ppl_guard),
               "description": f"{metric.name} steered by this vector minus steered by the "
               "random direction of the same applied norm at the same layer, on the same "
               "test items (paired bootstrap; p_value one-sided), positive = more "
               "trustworthy"})


def _control_tables(ctx: _Context, layer: int, alpha: float) -> dict[str, np.ndarray]:
    """Return the random direction's test tables at ``layer`` and signed ``alpha`` (cached)."""
    key = (layer, round(alpha, 9))
    if key not in ctx.control_tables:
        ctx.control_tables[key] = ctx.tables(ctx.scorer(ctx.control[layer], alpha), "test")
    return ctx.control_tables[key]


def without_spread(gain: Estimate, metric: str) -> str | None:
    """Return why a bootstrapped gain is undefined when its replicates have no spread.

    A zero (or undefined) standard error gives a one-point interval, a p-value of 0 or 1
    and an MDE of 0: a claim of perfect power that no data supports. Float round-off in the
    replicates (relative 1e-9) counts as no spread. ``None`` when the replicates vary.
    """
    if gain.se > 1e-9 * max(1.0, abs(gain.value)):
        return None
    return (f"the gain's paired bootstrap has no spread (every resample gives "
            f"{gain.value:+.4g}: no test item's {metric} differs between this setting and "
            "the reference, or all differ alike), so it has no interval, p-value or MDE")


def _gain_row(ctx: _Context, cand: _Candidate, name: str, tables: Mapping[str, np.ndarray],
              reference: Mapping[str, np.ndarray], direction: str,
              params: Mapping[str, Any]) -> None:
    """Append the paired-bootstrap gain of ``tables`` over ``reference`` on the primary metric."""
    metric = ctx.task.metric(ctx.task.primary)
    table, ref = tables[metric.table], reference[metric.table]
    own, other = ctx.task.degenerate(tables), ctx.task.degenerate(reference)
    if own or other:
        ctx.row(cand.source.name, name, "test", cand.layer, cand.alpha, direction,
                _undefined(len(table)), params, cand=cand, status=UNDEFINED,
                reason=f"this setting is degenerate: {own}" if own
                else f"the reference is degenerate: {other}")
        return
    sign = 1.0 if metric.higher_is_better else -1.0
    strata = None if metric.stratify_column is None else table[:, metric.stratify_column]
    gain = paired_bootstrap(table, ref, metric.statistic, lambda a, b: sign * (a - b),
                            n_boot=ctx.cfg.n_bootstrap, seed=ctx.cfg.seed, strata=strata)
    flat = without_spread(gain, metric.name)
    if flat is not None:
        ctx.row(cand.source.name, name, "test", cand.layer, cand.alpha, direction,
                _undefined(len(table)), params, cand=cand, status=UNDEFINED, reason=flat)
        return
    ctx.row(cand.source.name, name, "test", cand.layer, cand.alpha, direction, gain,
            {**params, "p_value": _finite(gain.p)}, cand=cand,
            mde=minimum_detectable_effect(gain.se))


def _judge_rows(ctx: _Context) -> None:
    if not isinstance(ctx.task, ToxicityTask):
        return
    ctx.row(JUDGE_SOURCE, "judge_accuracy", "test", NO_LAYER, 0.0, "none",
            ctx.task.judge_accuracy,
            {"role": "judge", "description": "accuracy of the local toxicity judge on whole "
             "held-out ToxiGen statements (disjoint from its training rows and from the "
             "evaluation prompts)"})
    truncated = ctx.task.truncation_accuracy(ctx.tokenizer, ctx.cfg.n_bootstrap, ctx.cfg.seed)
    ctx.row(JUDGE_SOURCE, "judge_accuracy_truncated", "test", NO_LAYER, 0.0, "none",
            truncated,
            {"role": "judge", "description": "accuracy of the local toxicity judge on the "
             "same held-out statements cut to what it judges in the evaluation: the text "
             f"after the prompt, truncated to {ctx.cfg.max_new_tokens} tokens"})


def _correlation_rows(ctx: _Context, probe_accuracy: Mapping[tuple[str, int], float],
                      sources: Sequence[VectorSource]) -> None:
    pretraining = [s.name for s in sources if s.role == "pretraining"]
    if not pretraining:  # e.g. a suite whose only checkpoint is the chat model
        return
    frame = pd.DataFrame(ctx.rows)
    probes = pd.DataFrame([{"checkpoint": c, "layer": ell, "accuracy": a}
                           for (c, ell), a in probe_accuracy.items()],
                          columns=["checkpoint", "layer", "accuracy"])
    pairs = gain_probe_pairs(frame, probes, pretraining)
    pairs = pairs[["checkpoint", "layer", "gain", "probe_accuracy", "applied_norm"]]
    raw = pearson(pairs["probe_accuracy"], pairs["gain"])
    partial = norm_controlled(pairs)
    described = (
        ("corr_probe_gain", raw, "Pearson r across pre-training checkpoints between the "
         "probe's test accuracy at each checkpoint's chosen steering layer and its test gain"),
        ("partial_corr_probe_gain", partial, "the same correlation with the log applied "
         "norm of each checkpoint's chosen setting held fixed (partial Pearson r)"),
    )
    for metric, corr, text in described:
        _correlation_row(ctx, metric, corr, text, pairs)


def _correlation_row(ctx: _Context, metric: str, corr: Correlation, text: str,
                     pairs: pd.DataFrame) -> None:
    ctx.row(CORRELATION_SOURCE, metric, "test", NO_LAYER, 0.0, "none",
            Estimate(corr.r, corr.lo, corr.hi, corr.n),
            {"role": "correlation", "p_value": corr.p if math.isfinite(corr.p) else None,
             "description": f"{text}; interval: Fisher z", "ci": "fisher_z",
             "pairs": pairs.to_dict(orient="records")},
            status="ok" if math.isfinite(corr.r) else UNDEFINED,
            reason=None if math.isfinite(corr.r) else
            f"{corr.n} pairs, or a side without spread")
