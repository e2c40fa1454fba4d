"""The story's verdicts: what the stored results say about the paper's three findings.

Computed from a study file alone, so the pipeline's summary, the dashboard's story page
and the README's tables share one definition of each verdict.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from trustdyn.stats import Correlation, pearson
from trustdyn.store import RANDOM_SOURCE, Store


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
        ``probe_accuracy`` (and ``step`` when ``probes`` has it).

    """
    gains = evals[(evals["metric"] == "gain") & (evals["split"] == "test")
                  & evals["vector_source"].isin(list(pretraining))]
    gains = gains.rename(columns={"vector_source": "checkpoint", "value": "gain",
                                  "ci_lo": "gain_lo", "ci_hi": "gain_hi"})
    acc = probes[["checkpoint", "layer", "accuracy", *(["step"] if "step" in probes else [])]]
    acc = acc.rename(columns={"accuracy": "probe_accuracy"})
    pairs = gains[["checkpoint", "layer", "gain", "gain_lo", "gain_hi"]].merge(
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


def probe_finding(probes: pd.DataFrame, *, margin: float = 0.05) -> Finding:
    """Return finding 1: concepts become linearly separable early, best in middle layers.

    A checkpoint "separates" a dataset when its best layer beats the shuffled-label
    control by ``margin`` with the accuracy interval's lower end above the control. The
    dataset is separable *from* the first checkpoint after which every later one separates
    it (a chance success early on, e.g. at initialisation, does not count), and never if
    the last checkpoint does not.

    Args:
        probes: :meth:`Store.probe_grid` rows of all datasets (a ``dataset`` column).
        margin: Required accuracy margin over the control.

    """
    title = "1 · Trustworthiness concepts become linearly separable early in pre-training"
    pre = probes[~probes["is_chat"].astype(bool)]
    if pre.empty:
        return Finding(title, "no data", "No probe results yet: run the probe stage.")
    rows = []
    for dataset, group in pre.groupby("dataset", sort=False):
        best = best_layer_per_checkpoint(group)
        separates = ((best["accuracy"] - best["control_accuracy"] >= margin)
                     & (best["accuracy_lo"] > best["control_accuracy"])).to_numpy()
        # Reversed cumulative AND: True where this and every later checkpoint separates.
        stays = np.logical_and.accumulate(separates[::-1])[::-1]
        last = best.iloc[-1]
        n_layers = int(group["layer"].max()) + 1
        total = float(best["step"].max()) or 1.0
        first = float(best["step"].to_numpy()[stays.argmax()]) if stays[-1] else None
        rows.append({
            "dataset": dataset, "first_separable": first,
            "share_separating": float(separates.mean()),
            "share_of_training": None if first is None else first / total,
            "final_accuracy": float(last["accuracy"]),
            "final_accuracy_lo": float(last["accuracy_lo"]),
            "final_accuracy_hi": float(last["accuracy_hi"]),
            "final_control": float(last["control_accuracy"]),
            "final_best_layer": int(last["best_layer"]),
            "depth": float(last["best_layer"]) / max(n_layers - 1, 1),
        })
    details = pd.DataFrame(rows)
    separable = details.dropna(subset=["first_separable"])
    early = separable[separable["share_of_training"] <= 0.2]
    middle = details[(details["depth"] > 0.2) & (details["depth"] < 0.8)]
    parts = [
        f"From some checkpoint on, probes beat their shuffled-label control by at least "
        f"{margin:.0%} at every later checkpoint for {len(separable)} of {len(details)} "
        "datasets"
        + (f"; for {len(early)} of them from within the first 20% of training steps"
           if len(separable) else "") + ".",
    ]
    for _, r in details.iterrows():
        since = (f"from {_fmt_step(r['first_separable'])}" if r["first_separable"] is not None
                 and not pd.isna(r["first_separable"]) else "not separable at the end")
        parts.append(f"{r['dataset']}: {since} (final accuracy {r['final_accuracy']:.2f} vs "
                     f"control {r['final_control']:.2f}, best layer {r['final_best_layer']}; "
                     f"{r['share_separating']:.0%} of checkpoints separate it).")
    parts.append(f"At the last checkpoint the best layer lies in the middle of the network "
                 f"(20-80% depth) for {len(middle)} of {len(details)} datasets.")
    verdict = ("supported" if len(early) == len(details) and len(details) else
               "mixed" if len(separable) else "not supported")
    return Finding(title, verdict, " ".join(parts), details)


def information_finding(turns: pd.DataFrame) -> Finding:
    """Return finding 2: I(X;T) rises then falls (fitting, then compression) in training.

    Args:
        turns: ``info_turns`` rows of the suite.

    """
    title = "2 · Representations first fit, then compress (mutual information turns)"
    if turns.empty:
        return Finding(title, "no data", "No turns detected yet: run the info stage over "
                       "every pre-training checkpoint.")
    grouped = turns.groupby(["dataset", "estimator"])
    details = grouped.agg(
        layers=("layer", "size"),
        with_turn=("turn_step", lambda s: int(s.notna().sum())),
        distinguishable=("distinguishable", lambda s: int(s.fillna(False).astype(bool).sum())),
        median_turn_step=("turn_step", "median"),
    ).reset_index()
    total = int(details["layers"].sum())
    clear = int(details["distinguishable"].sum())
    text = (f"Across datasets and estimators, {clear} of {total} layer curves show a turn "
            "that rises and then falls by more than the estimator's noise (a fitting → "
            "compression turn distinguishable from the permutation null).")
    renyi = details[details["estimator"] == "renyi"]
    if len(renyi) and renyi["median_turn_step"].notna().any():
        text += (f" With the Rényi estimator the median turn is at "
                 f"{_fmt_step(float(renyi['median_turn_step'].median()))}.")
    if clear == 0:
        text += (" In this study the turn is not distinguishable from noise; the paper's "
                 "claim is not reproduced here.")
    verdict = ("supported" if total and clear >= total / 2 else
               "mixed" if clear else "not supported")
    return Finding(title, verdict, text, details)


def steering_finding(evals: pd.DataFrame, probes: pd.DataFrame) -> Finding:
    """Return finding 3: vectors from pre-training checkpoints steer the chat model.

    Counts, per dataset, pre-training sources whose test gain interval lies above zero,
    compares with the chat model's own vector and a random one, and reports the
    probe-accuracy/gain correlation.

    Args:
        evals: :meth:`Store.steering_eval_table` rows.
        probes: :meth:`Store.probe_grid` rows of all datasets.

    """
    title = "3 · Directions from pre-training checkpoints steer the finished chat model"
    gains = evals[(evals["metric"] == "gain") & (evals["split"] == "test")]
    if gains.empty:
        return Finding(title, "no data", "No steering evaluation yet: run the steering stage.")
    rows = []
    for (target, dataset), group in gains.groupby(["target", "dataset"], sort=False):
        pre = group[group["role"] == "pretraining"] if group["role"].notna().any() else \
            group[~group["vector_source"].isin([RANDOM_SOURCE, target])]
        chat = group[group["vector_source"] == target]
        random = group[group["vector_source"] == RANDOM_SOURCE]
        _, corr = gain_vs_probe(evals, probes[probes["dataset"] == dataset], str(target),
                                str(dataset))
        rows.append({
            "target": target, "dataset": dataset, "pretraining_sources": len(pre),
            "significant_gains": int((pre["ci_lo"] > 0).sum()),
            "best_pretraining_gain": float(pre["value"].max()) if len(pre) else np.nan,
            "chat_gain": float(chat["value"].iloc[0]) if len(chat) else np.nan,
            "random_gain": float(random["value"].iloc[0]) if len(random) else np.nan,
            "corr_probe_gain": corr.r, "corr_n": corr.n,
        })
    details = pd.DataFrame(rows)
    helped = details[details["significant_gains"] > 0]
    text = (f"Vectors read from pre-training checkpoints raise the chat model's primary "
            f"metric (95% interval above zero) for {len(helped)} of {len(details)} datasets.")
    beats_random = details[details["best_pretraining_gain"] > details["random_gain"]]
    text += f" The best of them beats the random direction for {len(beats_random)}."
    with_r = details.dropna(subset=["corr_probe_gain"])
    if len(with_r):
        text += (" Gain and probe accuracy correlate with Pearson r from "
                 f"{with_r['corr_probe_gain'].min():.2f} to "
                 f"{with_r['corr_probe_gain'].max():.2f}"
                 " across datasets (the paper reports r ≈ 0.72 on TruthfulQA).")
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
    """Return the README's headline table: per dataset, the story's probe finding.

    From which step every later checkpoint separates the dataset (best layer ≥ 5 points
    over its shuffled-label control, interval above it), the share of checkpoints that
    separate it, and the best layer at the last pre-training checkpoint with its control.
    """
    details = probe_finding(all_probes(store, suite)).details
    if details.empty:
        return details
    return pd.DataFrame({
        "dataset": details["dataset"],
        "separable_from_step": details["first_separable"].astype("Int64"),
        "checkpoints_separating": details["share_separating"].map("{:.0%}".format),
        "best_layer": details["final_best_layer"],
        "accuracy": details["final_accuracy"].round(3),
        "ci": [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(
            details["final_accuracy_lo"], details["final_accuracy_hi"], strict=True)],
        "control": details["final_control"].round(3),
    })


