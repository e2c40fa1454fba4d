"""The story's verdicts: what the stored results say about the paper's three findings.

Computed from a study file alone, so the pipeline's summary, the dashboard's story page
and the README's tables share one definition of each verdict.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from trustdyn.schema import CONTRASTIVE_SOURCE
from trustdyn.stats import CI_LEVEL, Correlation, partial_pearson, pearson
from trustdyn.store import Store
from trustdyn.verdicts import (
    Separability,
    dataset_alpha,
    helps_level,
    helps_verdict,
    separability_verdict,
)


def best_layer_per_checkpoint(frame: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Return, per checkpoint, the layer with the highest ``metric`` and its numbers.

    Args:
        frame: :meth:`Store.probe_grid` rows of one dataset.
        metric: Column to maximise.

    Returns:
        One row per checkpoint in order: ``checkpoint``, ``step``, ``tokens``,
        ``is_chat``, ``best_layer``, the metric, its interval, and the control.

    """
    if frame.empty:
        return pd.DataFrame(columns=["checkpoint", "step", "tokens", "is_chat", "best_layer",
                                     metric])
    idx = frame.groupby("checkpoint", sort=False)[metric].idxmax()
    best = frame.loc[idx.to_numpy()].sort_values(["is_chat", "ordinal"])
    keep = ["checkpoint", "step", "tokens", "is_chat", "layer", metric]
    if metric in ("accuracy", "auroc"):
        keep += [f"{metric}_lo", f"{metric}_hi", f"control_{metric}"]
    return best[keep].rename(columns={"layer": "best_layer"}).reset_index(drop=True)


def gain_probe_pairs(evals: pd.DataFrame, probes: pd.DataFrame,
                     pretraining: Collection[str]) -> pd.DataFrame:
    """Pair each pre-training source's test gain with its probe accuracy at the chosen layer.

    A source's gain is measured at the layer chosen on dev, so its probe accuracy is read
    at that layer.

    Args:
        evals: ``steering_evals`` rows of one target and dataset.
        probes: Probe rows (``checkpoint``, ``layer``, ``accuracy``, optionally ``step``)
            of that dataset.
        pretraining: Names of the suite's pre-training checkpoints.

    Returns:
        Columns ``checkpoint``, ``layer``, ``gain``, ``gain_lo``, ``gain_hi``,
        ``applied_norm`` (NaN for rows written before it was stored), ``probe_accuracy``
        (and ``step`` when ``probes`` has it); sources without an admissible setting
        (no gain) are left out.

    """
    gains = evals[(evals["metric"] == "gain") & (evals["split"] == "test")
                  & evals["vector_source"].isin(list(pretraining)) & evals["value"].notna()]
    gains = gains.rename(columns={"vector_source": "checkpoint", "value": "gain",
                                  "ci_lo": "gain_lo", "ci_hi": "gain_hi"})
    if "applied_norm" not in gains:
        gains = gains.assign(applied_norm=np.nan)
    acc = probes[["checkpoint", "layer", "accuracy", *(["step"] if "step" in probes else [])]]
    acc = acc.rename(columns={"accuracy": "probe_accuracy"})
    pairs = gains[["checkpoint", "layer", "gain", "gain_lo", "gain_hi", "applied_norm"]].merge(
        acc, on=["checkpoint", "layer"], how="inner")
    return pairs.reset_index(drop=True)


def gain_vs_probe(evals: pd.DataFrame, probes: pd.DataFrame, target: str,
                  dataset: str) -> tuple[pd.DataFrame, Correlation]:
    """Return one target and dataset's :func:`gain_probe_pairs` by step, and their correlation.

    Args:
        evals: :meth:`Store.steering_eval_table` rows.
        probes: :meth:`Store.probe_grid` rows of the dataset.
        target: The chat checkpoint.
        dataset: The dataset.

    """
    pre = probes[~probes["is_chat"].astype(bool)]
    rows = evals[(evals["target"] == target) & (evals["dataset"] == dataset)]
    pairs = gain_probe_pairs(rows, pre, set(pre["checkpoint"])).sort_values("step")
    return pairs.reset_index(drop=True), pearson(pairs["probe_accuracy"].to_numpy(),
                                                 pairs["gain"].to_numpy())


def norm_controlled(pairs: pd.DataFrame) -> Correlation:
    """Return the probe-accuracy ↔ gain correlation with the log applied norm held fixed.

    A partial Pearson r over :func:`gain_vs_probe`'s pairs: a checkpoint's vector can help
    more merely because it is added with a larger norm.
    """
    return partial_pearson(pairs["probe_accuracy"], pairs["gain"],
                           np.log(pairs["applied_norm"].astype(float)))


@dataclass(frozen=True)
class Finding:
    """One of the three findings, as this study shows it.

    Attributes:
        title: Short heading.
        verdict: ``supported``, ``mixed``, ``not supported`` or ``no data``.
        text: Plain-language paragraph computed from the data.
        details: Per-dataset numbers behind the text.

    """

    title: str
    verdict: str
    text: str
    details: pd.DataFrame = field(default_factory=pd.DataFrame)


def _fmt_step(step: float | None) -> str:
    return "never" if step is None or pd.isna(step) else f"step {int(step):,}"


def separability(group: pd.DataFrame, n_datasets: int) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray, Separability]:
    """Return one dataset's steps, balanced accuracy and se ``[m, L]``, and its verdict.

    Args:
        group: :meth:`Store.probe_grid` rows of one dataset's pre-training checkpoints.
        n_datasets: Datasets in the study (the verdict's level is shared among them).

    """
    ordered = group.sort_values(["ordinal", "layer"])
    value = ordered.pivot(index="ordinal", columns="layer", values="balanced_accuracy")
    se = ordered.pivot(index="ordinal", columns="layer", values="balanced_accuracy_se")
    steps = ordered.drop_duplicates("ordinal")["step"].to_numpy(float)
    verdict = separability_verdict(value.to_numpy(float), se.to_numpy(float),
                                   alpha=dataset_alpha(n_datasets))
    return steps, value.to_numpy(float), se.to_numpy(float), verdict


def _interval(value: float, se: float) -> tuple[float, float]:
    half = float(stats.norm.isf((1 - CI_LEVEL) / 2)) * se
    return value - half, value + half


def probe_details(probes: pd.DataFrame, n_datasets: int | None = None) -> pd.DataFrame:
    """Return, per dataset, the calibrated separability verdict and the numbers behind it.

    Columns: ``dataset``; the first checkpoint's level (``init_step``, ``init_layer``,
    ``init_bacc`` with ``init_lo``/``init_hi``, ``at_init``); ``first_separable`` (step from
    which most checkpoints beat chance) and ``share_separating``; ``onset`` (step from which
    most checkpoints beat the first checkpoint's level, i.e. separability that pre-training
    created) and ``share_above_init``; the last checkpoint's best layer, balanced accuracy
    and gain over the first checkpoint at that layer, each with its interval; ``depth``.
    The verdict's level is shared among ``n_datasets`` (default: the datasets present).
    """
    pre = probes[~probes["is_chat"].astype(bool)]
    n_datasets = pre["dataset"].nunique() if n_datasets is None else n_datasets
    rows = []
    for dataset, group in pre.groupby("dataset", sort=False):
        steps, value, se, verdict = separability(group, n_datasets)
        first, last = int(verdict.best_layer[0]), int(verdict.best_layer[-1])
        gain = value[-1, last] - value[0, last]
        gain_se = float(np.hypot(se[-1, last], se[0, last]))
        rows.append({
            "dataset": dataset, "init_step": steps[0], "init_layer": first,
            "init_bacc": value[0, first], **dict(zip(("init_lo", "init_hi"),
                                                     _interval(value[0, first], se[0, first]),
                                                     strict=True)),
            "at_init": verdict.at_init,
            "first_separable": None if verdict.first_separable is None
            else steps[verdict.first_separable],
            "share_separating": float(verdict.separates.mean()),
            "onset": None if verdict.onset is None else steps[verdict.onset],
            "share_above_init": float(verdict.above_init[1:].mean()) if len(steps) > 1
            else math.nan,
            "final_layer": last, "final_bacc": value[-1, last],
            **dict(zip(("final_lo", "final_hi"), _interval(value[-1, last], se[-1, last]),
                       strict=True)),
            "gain_over_init": gain,
            **dict(zip(("gain_lo", "gain_hi"), _interval(gain, gain_se), strict=True)),
            "share_of_training": None if verdict.onset is None
            else steps[verdict.onset] / (steps[-1] or 1.0),
            "depth": last / max(value.shape[1] - 1, 1),
            "z_crit": verdict.z_crit,
        })
    return pd.DataFrame(rows)


def probe_finding(probes: pd.DataFrame) -> Finding:
    """Return finding 1: concepts become linearly separable early, best in middle layers.

    A dataset *becomes separable during pre-training* from the first checkpoint after
    which at least 80% of the checkpoints beat the first checkpoint (initialisation) at
    some layer (:func:`trustdyn.verdicts.separability_verdict`, family-wise over layers
    and the study's datasets); separability a random network already has does not count.

    Args:
        probes: :meth:`Store.probe_grid` rows of all datasets (a ``dataset`` column).

    """
    title = "1 · Trustworthiness concepts become linearly separable early in pre-training"
    pre = probes[~probes["is_chat"].astype(bool)]
    if pre.empty:
        return Finding(title, "no data", "No probe results yet: run the probe stage.")
    details = probe_details(pre)
    emerged = details.dropna(subset=["onset"])
    early = emerged[emerged["share_of_training"] <= 0.2]
    middle = details[(details["depth"] > 0.2) & (details["depth"] < 0.8)]
    parts = [
        f"Pre-training makes {len(emerged)} of {len(details)} datasets more separable than "
        "at initialisation (balanced accuracy above the first checkpoint's at ≥ 80% of the "
        "later checkpoints, family-wise error ≤ 5%)"
        + (f"; {len(early)} of them within the first 20% of training steps"
           if len(emerged) else "") + ".",
    ]
    for _, r in details.iterrows():
        init = (f"already separable at initialisation (balanced accuracy "
                f"{r['init_bacc']:.2f} at layer {r['init_layer']})" if r["at_init"] else
                f"not separable at initialisation ({r['init_bacc']:.2f})")
        since = (f"becomes separable during pre-training from {_fmt_step(r['onset'])}"
                 if not pd.isna(r["onset"]) else "does not become more separable than at "
                 "initialisation")
        parts.append(f"{r['dataset']}: {init}; {since} (last checkpoint "
                     f"{r['final_bacc']:.2f} at layer {r['final_layer']}, "
                     f"{r['gain_over_init']:+.2f} [{r['gain_lo']:+.2f}, {r['gain_hi']:+.2f}] "
                     "over initialisation).")
    parts.append(f"At the last checkpoint the best layer lies in the middle of the network "
                 f"(20-80% depth) for {len(middle)} of {len(details)} datasets.")
    verdict = ("supported" if len(early) == len(details) and len(details) else
               "mixed" if len(emerged) else "not supported")
    return Finding(title, verdict, " ".join(parts), details)


def information_finding(turns: pd.DataFrame) -> Finding:
    """Return finding 2: I(X;T) rises then falls (fitting, then compression) in training.

    A curve turns when the surrogate test of :func:`trustdyn.verdicts.turn_verdict` finds a
    rise followed by a sustained fall of null-corrected I(X;T) (family-wise over the
    dataset's layers and estimators, level shared among the study's datasets) and I(T;Y)
    does not fall after it; the turn stage stores the decision (``distinguishable``).

    Args:
        turns: ``info_turns`` rows of the suite.

    """
    title = "2 · Representations first fit, then compress (mutual information turns)"
    if turns.empty:
        return Finding(title, "no data", "No turns tested yet: run the info stage over "
                       "every pre-training checkpoint.")
    tested = turns[turns["p_value"].notna()]
    details = tested.groupby("dataset", sort=False).agg(
        curves=("layer", "size"),
        turning=("distinguishable", lambda v: int(v.fillna(False).astype(bool).sum())),
        min_p=("p_value", "min"),
    ).reset_index()
    turning = tested[tested["distinguishable"].fillna(False).astype(bool)]
    steps = turning.groupby("dataset")["turn_step"].median()
    layers = turning.groupby("dataset")["layer"].apply(lambda v: sorted(set(int(x) for x in v)))
    details["median_turn_step"] = details["dataset"].map(steps)
    details["turn_layers"] = details["dataset"].map(layers)
    with_turn = details[details["turning"] > 0]
    text = (f"{len(with_turn)} of {len(details)} datasets show a fitting → compression turn: "
            "null-corrected I(X;T) rises for a run of checkpoints and then falls for the rest, "
            "beyond what a random reordering of its own changes produces, while I(T;Y) does "
            "not fall (family-wise error ≤ 5% per finding).")
    for _, r in with_turn.iterrows():
        text += (f" {r['dataset']}: layers {r['turn_layers']}, median turn at "
                 f"{_fmt_step(r['median_turn_step'])}.")
    if with_turn.empty:
        text += (" In this study no turn is distinguishable from a random walk of the same "
                 "changes; the paper's claim is not reproduced here.")
    verdict = ("supported" if len(details) and len(with_turn) == len(details) else
               "mixed" if len(with_turn) else "not supported")
    return Finding(title, verdict, text, details)


def vector_helps(versus: pd.DataFrame, n_sources: int, n_datasets: int) -> pd.Series:
    """Return, per ``gain_vs_random`` row, whether its vector helps.

    :func:`trustdyn.verdicts.helps_verdict` on the row's ``p_value`` and ``guard_passed``:
    a pre-training vector is tested within the family of the dataset's ``n_sources``
    pre-training vectors, the chat model's own vector as a family of one; the level is
    shared over the study's ``n_datasets``.
    """
    return pd.Series([
        helps_verdict(None if pd.isna(p) else float(p), False if pd.isna(g) else bool(g),
                      n_sources=n_sources if role == "pretraining" else 1,
                      n_datasets=n_datasets)
        for role, p, g in zip(versus["role"], versus["p_value"], versus["guard_passed"],
                              strict=True)], index=versus.index, dtype=bool)


def _first_value(rows: pd.DataFrame) -> float:
    """The ``value`` of a source's one test row, NaN when the source was not evaluated."""
    return float(rows["value"].iloc[0]) if len(rows) else np.nan


def steering_details(evals: pd.DataFrame, probes: pd.DataFrame) -> pd.DataFrame:
    """Return, per (target, dataset), the "helps" verdicts and the numbers behind them.

    A vector *helps* when its test gain over the random direction of the same applied norm
    (``gain_vs_random``) is above zero at the one-sided level
    :func:`trustdyn.verdicts.helps_level` (shared over the dataset's pre-training sources
    and the study's datasets) and its setting passed the perplexity guard; sources without
    an admissible setting never help.

    Columns: ``target``, ``dataset``, ``pretraining_sources``, ``no_admissible``,
    ``helping`` (pre-training sources that help), ``chat_helps``, ``best_gain_vs_random``
    with its interval and ``mde``, ``best_source``, ``chat_gain_vs_random``,
    ``contrastive_helps`` and ``contrastive_gain_vs_random`` (the contrastive source beyond
    the paper, tested at the same level as the chat's own vector; ``False`` and NaN when
    the study has none), ``level``, ``corr_probe_gain``, ``partial_corr_probe_gain``,
    ``corr_n``.
    """
    tested = evals[(evals["split"] == "test") & evals["metric"].isin(["gain", "gain_vs_random"])]
    n_datasets = max(tested["dataset"].nunique(), 1)
    rows = []
    for (target, dataset), group in tested.groupby(["target", "dataset"], sort=False):
        gains = group[group["metric"] == "gain"]
        versus = group[group["metric"] == "gain_vs_random"]
        pre = gains[gains["role"] == "pretraining"]
        n_sources = len(pre)
        pre_vs = versus[versus["role"] == "pretraining"]
        chat_vs = versus[versus["role"] == "chat"]
        contrastive_vs = versus[versus["role"] == CONTRASTIVE_SOURCE]
        ranked = pre_vs.dropna(subset=["value"]).sort_values("value", ascending=False)
        best = ranked.iloc[0] if len(ranked) else None
        pairs, corr = gain_vs_probe(evals, probes[probes["dataset"] == dataset], str(target),
                                    str(dataset))
        rows.append({
            "target": target, "dataset": dataset, "pretraining_sources": n_sources,
            "no_admissible": int((pre["status"] == "no admissible setting").sum()),
            "helping": int(vector_helps(pre_vs, n_sources, n_datasets).sum()),
            "chat_helps": bool(vector_helps(chat_vs, n_sources, n_datasets).any()),
            "best_source": None if best is None else best["vector_source"],
            "best_gain_vs_random": np.nan if best is None else best["value"],
            "best_lo": np.nan if best is None else best["ci_lo"],
            "best_hi": np.nan if best is None else best["ci_hi"],
            "mde": np.nan if best is None else best["mde"],
            "chat_gain_vs_random": _first_value(chat_vs),
            "contrastive_helps": bool(
                vector_helps(contrastive_vs, n_sources, n_datasets).any()),
            "contrastive_gain_vs_random": _first_value(contrastive_vs),
            "level": helps_level(n_sources, n_datasets),
            "corr_probe_gain": corr.r, "partial_corr_probe_gain": norm_controlled(pairs).r,
            "corr_n": corr.n,
        })
    return pd.DataFrame(rows)


def steering_finding(evals: pd.DataFrame, probes: pd.DataFrame) -> Finding:
    """Return finding 3: vectors from pre-training checkpoints steer the chat model.

    Counts, per dataset, the pre-training vectors that help (:func:`steering_details`:
    beat the same-norm random direction on test at a family-wise level, inside the
    perplexity guard), says the same of the chat model's own vector, and reports the
    probe-accuracy ↔ gain correlation raw and with the applied norm held fixed.

    Args:
        evals: :meth:`Store.steering_eval_table` rows.
        probes: :meth:`Store.probe_grid` rows of all datasets.

    """
    title = "3 · Directions from pre-training checkpoints steer the finished chat model"
    if evals.empty or not (evals["metric"] == "gain").any():
        return Finding(title, "no data", "No steering evaluation yet: run the steering stage.")
    details = steering_details(evals, probes)
    helped = details[details["helping"] > 0]
    text = (f"A vector read from a pre-training checkpoint helps on {len(helped)} of "
            f"{len(details)} datasets: its test gain over the random direction of the same "
            "applied norm is above zero (family-wise error ≤ 5% per finding) inside the "
            "perplexity guard.")
    text += (f" The chat model's own vector helps on {int(details['chat_helps'].sum())} of "
             f"{len(details)}.")
    if details["contrastive_gain_vs_random"].notna().any():
        text += (" The contrastive vector (computed on the chat model, beyond the paper) helps "
                 f"on {int(details['contrastive_helps'].sum())} of {len(details)}.")
    blocked = details[details["no_admissible"] > 0]
    if len(blocked):
        text += (" No admissible setting (every dev setting over the guard or degenerate) "
                 "for " + ", ".join(f"{r['no_admissible']} source(s) of {r['dataset']}"
                                    for _, r in blocked.iterrows()) + ".")
    with_r = details.dropna(subset=["corr_probe_gain"])
    if len(with_r):
        text += (" Gain and probe accuracy correlate with Pearson r from "
                 f"{with_r['corr_probe_gain'].min():.2f} to "
                 f"{with_r['corr_probe_gain'].max():.2f} across datasets (the paper reports "
                 "r ≈ 0.72 on TruthfulQA); with the applied norm held fixed, from "
                 f"{with_r['partial_corr_probe_gain'].min():.2f} to "
                 f"{with_r['partial_corr_probe_gain'].max():.2f}.")
    verdict = ("supported" if len(details) and len(helped) == len(details) else
               "mixed" if len(helped) else "not supported")
    return Finding(title, verdict, text, details)


def all_probes(store: Store, suite: str) -> pd.DataFrame:
    """Return :meth:`Store.probe_grid` rows of every dataset of a suite."""
    names = store.datasets_with(suite, "probe")
    frames = [store.probe_grid(suite, name) for name in names]
    return pd.concat(frames, ignore_index=True) if frames else store.probe_grid(suite, "")


def story(store: Store, suite: str) -> list[Finding]:
    """Return the three findings computed from the suite's stored results."""
    probes = all_probes(store, suite)
    return [
        probe_finding(probes),
        information_finding(store.info_turns(suite)),
        steering_finding(store.steering_eval_table(suite), probes),
    ]


def summarise_probes(store: Store, suite: str) -> pd.DataFrame:
    """Return the README's headline table: per dataset, the story's probe verdict.

    The first checkpoint's level (initialisation for suites starting at step 0), the step
    from which pre-training makes the dataset more separable than that (the calibrated
    verdict), the share of checkpoints above it, and the last checkpoint's best layer with
    its balanced accuracy and gain over initialisation.
    """
    details = probe_details(all_probes(store, suite))
    if details.empty:
        return details

    def interval(lo: pd.Series, hi: pd.Series) -> list[str]:
        return [f"[{a:.3f}, {b:.3f}]" for a, b in zip(lo, hi, strict=True)]

    return pd.DataFrame({
        "dataset": details["dataset"],
        "init_bacc": details["init_bacc"].round(3),
        "init_ci": interval(details["init_lo"], details["init_hi"]),
        "separable_at_init": details["at_init"],
        "becomes_separable_from_step": details["onset"].astype("Int64"),
        "checkpoints_above_init": details["share_above_init"].map("{:.0%}".format),
        "best_layer": details["final_layer"],
        "final_bacc": details["final_bacc"].round(3),
        "final_ci": interval(details["final_lo"], details["final_hi"]),
        "gain_over_init": details["gain_over_init"].round(3),
        "gain_ci": interval(details["gain_lo"], details["gain_hi"]),
    })
