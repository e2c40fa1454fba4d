"""Page-ready tables: the study's reads reshaped for the pages.

Every function that reads takes the :class:`~trustdyn.store.Store` first and only hashable
arguments after it, so ``pages/_common.read`` can cache it keyed on the file's stamp; the
others reshape frames already read. No SQL here: the store owns every query.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

from trustdyn.store import (
    BASELINE_SOURCE,
    CORRELATION_SOURCE,
    DEFAULT_PPL_GUARD,
    JUDGE_SOURCE,
    PER_CHECKPOINT_STAGES,
    RANDOM_SOURCE,
    Store,
    json_object,
    study_units,
)

PROBE_METRICS: dict[str, str] = {
    "accuracy": "Probe accuracy (test split)",
    "auroc": "Probe AUROC (test split)",
    "accuracy_minus_control": "Accuracy − shuffled-label control",
    "usable_info_bits": "Usable information (bits)",
}
"""Probe metrics a heatmap can show, with their axis labels."""


def suites(store: Store) -> pd.DataFrame:
    """Return the suites in the file with their checkpoint counts and a synthetic flag."""
    frame = store.suites()
    frame["synthetic"] = [
        bool(json_object(c).get("synthetic")) or str(d).startswith("SYNTHETIC")
        for c, d in zip(frame["config"], frame["description"], strict=True)
    ]
    return frame


def dataset_cards(store: Store) -> pd.DataFrame:
    """Return the datasets with their card fields spread into columns."""
    frame = store.datasets()
    cards = [json_object(c) for c in frame["card"]]
    frame["description"] = [c.get("description") or c.get("upstream") or "" for c in cards]
    frame["label0_meaning"] = [c.get("label0_meaning") for c in cards]
    frame["source"] = [c.get("source") for c in cards]
    frame["license"] = [c.get("license") for c in cards]
    frame["desirable_label"] = frame["desirable_label"].astype("Int64")
    return frame.drop(columns=["card"])


def suite_config(store: Store, suite: str) -> dict[str, Any]:
    """Return the study config stored with a suite (empty dict if none)."""
    frame = store.suites()
    row = frame[frame["suite"] == suite]
    return json_object(row["config"].iloc[0]) if len(row) else {}


def unit_progress(store: Store, suite: str) -> pd.DataFrame:
    """Return finished vs expected units per stage of a suite.

    Expected units are :func:`~trustdyn.store.study_units` of the stored study config (or
    the pipeline's default stages); other stages found in the file show only what is done.

    Returns:
        Columns ``stage``, ``done``, ``expected`` (nullable), ``missing``.

    """
    config = suite_config(store, suite)
    units = store.units(suite)
    ckpts = store.checkpoints(suite)
    names = config.get("datasets") or sorted(store.datasets()["dataset"])
    stages = config.get("stages") or list(PER_CHECKPOINT_STAGES)
    chat = ckpts.loc[ckpts["is_chat"].astype(bool), "checkpoint"]
    planned = study_units(suite, list(ckpts["checkpoint"]), names, stages,
                          str(chat.iloc[0]) if len(chat) else None)
    expected: dict[str, int | None] = {s: 0 for s in stages}
    for unit in planned:
        expected[unit.stage] = (expected.get(unit.stage) or 0) + 1
    done: dict[str, int] = {str(k): int(v) for k, v in units["stage"].value_counts().items()}
    rows = [
        {"stage": stage, "done": done.get(stage, 0), "expected": expected.get(stage)}
        for stage in [*expected, *sorted(set(done) - set(expected))]
    ]
    frame = pd.DataFrame(rows, columns=["stage", "done", "expected"])
    frame["expected"] = frame["expected"].astype("Int64")
    frame["missing"] = (frame["expected"] - frame["done"]).clip(lower=0)
    return frame


def duplicate_checkpoints(ckpts: pd.DataFrame) -> dict[str, str]:
    """Return ``{checkpoint: earlier checkpoint with the same weight hash}``."""
    seen: dict[str, str] = {}
    duplicates: dict[str, str] = {}
    for name, digest in zip(ckpts["checkpoint"], ckpts["weight_hash"], strict=True):
        if not isinstance(digest, str) or not digest:
            continue
        if digest in seen:
            duplicates[str(name)] = seen[digest]
        else:
            seen[digest] = str(name)
    return duplicates


def _directions_matrix(values: pd.Series) -> np.ndarray:
    """Stack a column of stored directions into ``[n, d]`` float64 unit rows."""
    if values.empty:
        return np.zeros((0, 0))
    matrix = np.stack([np.asarray(v, dtype=np.float64) for v in values])
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def direction_cosines(store: Store, suite: str, dataset: str, layer: int) -> pd.DataFrame:
    """Return the cosine between probe directions of every pair of checkpoints at a layer.

    Directions are signed (fitted toward label 1), so a cosine near 1 means the probe
    reads the concept the same way at both checkpoints; near 0, unrelated directions.

    Returns:
        A square frame indexed and columned by checkpoint name (training order).

    """
    dirs = store.probe_directions(suite, dataset, layer)
    matrix = _directions_matrix(dirs["direction"])
    names = list(dirs["checkpoint"])
    return pd.DataFrame(matrix @ matrix.T if len(names) else np.zeros((0, 0)),
                        index=names, columns=names)


def probe_vector_cosines(store: Store, suite: str, dataset: str, layer: int) -> pd.DataFrame:
    """Return, per checkpoint, cosines of its probe direction with steering vectors.

    Columns: ``checkpoint``, ``step``, ``is_chat``, ``own_vector`` (the same checkpoint's
    mean-difference vector), ``chat_vector`` (the chat model's vector, when the suite
    has one) and ``final_probe`` (the last pre-training checkpoint's probe direction).
    Empty when no vectors are stored.
    """
    dirs = store.probe_directions(suite, dataset, layer)
    vectors = store.vector_directions(suite, dataset, layer)
    if dirs.empty or vectors.empty:
        return pd.DataFrame(columns=["checkpoint", "step", "is_chat", "own_vector",
                                     "chat_vector", "final_probe"])
    probe = _directions_matrix(dirs["direction"])  # [C, d]
    vec = _directions_matrix(vectors["direction"])  # [V, d]
    by_name = dict(zip(vectors["checkpoint"], vec, strict=True))
    own = [float(p @ by_name[c]) if c in by_name else np.nan
           for p, c in zip(probe, dirs["checkpoint"], strict=True)]
    chat_rows = vec[vectors["is_chat"].to_numpy(dtype=bool)]
    pre = ~dirs["is_chat"].to_numpy(dtype=bool)
    final = probe[np.flatnonzero(pre)[-1]] if pre.any() else None
    return pd.DataFrame({
        "checkpoint": dirs["checkpoint"], "step": dirs["step"], "is_chat": dirs["is_chat"],
        "own_vector": own,
        "chat_vector": probe @ chat_rows[0] if len(chat_rows) else np.nan,
        "final_probe": probe @ final if final is not None else np.nan,
    })


def layers_of(frame: pd.DataFrame) -> list[int]:
    """Return the sorted layer indices present in a frame with a ``layer`` column."""
    return sorted(int(v) for v in frame["layer"].unique()) if "layer" in frame else []


ItySource = Literal["estimator", "usable"]


def info_plane(info: pd.DataFrame, probes: pd.DataFrame, estimator: str,
               ity_source: ItySource = "estimator") -> pd.DataFrame:
    """Return the information-plane points of one estimator: I(X;T) and I(T;Y) per point.

    Args:
        info: :meth:`Store.info_grid` rows of one dataset.
        probes: :meth:`Store.probe_grid` rows of the same dataset (for ``usable``).
        estimator: ``renyi`` or ``nhsic``.
        ity_source: ``estimator`` (the same estimator's I(T;Y)) or ``usable`` (the
            probe's usable information in bits, which has no permutation null).

    Returns:
        One row per (checkpoint, layer) in training order: ``checkpoint``, ``step``,
        ``tokens``, ``is_chat``, ``ordinal``, ``layer``, ``ixt``, ``ixt_null_mean``,
        ``ixt_null_std``, ``ity``, ``ity_null_mean``, ``ity_null_std``, ``x_unit``,
        ``y_unit``.

    """
    rows = info[info["estimator"] == estimator]
    keys = ["checkpoint", "step", "tokens", "is_chat", "ordinal", "layer"]

    def quantity(name: str, prefix: str) -> pd.DataFrame:
        part = rows[rows["quantity"] == name][[*keys, "value", "null_mean", "null_std", "unit"]]
        return part.rename(columns={"value": prefix, "null_mean": f"{prefix}_null_mean",
                                    "null_std": f"{prefix}_null_std", "unit": f"{prefix}_unit"})

    plane = quantity("I(X;T)", "ixt")
    if ity_source == "usable":
        usable = probes[["checkpoint", "layer", "usable_info_bits"]].rename(
            columns={"usable_info_bits": "ity"})
        plane = plane.merge(usable, on=["checkpoint", "layer"], how="inner")
        plane["ity_null_mean"] = np.nan
        plane["ity_null_std"] = np.nan
        plane["ity_unit"] = "bits"
    else:
        plane = plane.merge(quantity("I(T;Y)", "ity").drop(
            columns=["step", "tokens", "is_chat", "ordinal"]), on=["checkpoint", "layer"])
    plane = plane.rename(columns={"ixt_unit": "x_unit", "ity_unit": "y_unit"})
    return plane.sort_values(["is_chat", "ordinal", "layer"]).reset_index(drop=True)


def info_estimators(info: pd.DataFrame) -> list[str]:
    """Return the estimators present, ``renyi`` first."""
    found = set(info["estimator"]) if "estimator" in info else set()
    return [e for e in ("renyi", "nhsic") if e in found] + sorted(found - {"renyi", "nhsic"})


def turn_points(store: Store, suite: str, dataset: str, estimator: str) -> pd.DataFrame:
    """Return the detected fitting → compression turns of one dataset and estimator.

    Columns: ``layer``, ``turn_step`` (NaN where no interior peak was found),
    ``peak_value``, ``fall``, ``final_value``, ``distinguishable``.
    """
    turns = store.info_turns(suite)
    turns = turns[(turns["dataset"] == dataset) & (turns["estimator"] == estimator)]
    return turns[["layer", "turn_step", "peak_value", "fall", "final_value",
                  "distinguishable"]].reset_index(drop=True)


def source_order(evals: pd.DataFrame, ckpts: pd.DataFrame) -> list[str]:
    """Return vector sources in table order: baseline, checkpoints by step, chat, random."""
    present = set(evals["vector_source"])
    ordered = [BASELINE_SOURCE] if BASELINE_SOURCE in present else []
    ordered += [c for c in ckpts.sort_values(["is_chat", "ordinal"])["checkpoint"]
                if c in present]
    ordered += [RANDOM_SOURCE] if RANDOM_SOURCE in present else []
    rest = present - set(ordered) - {CORRELATION_SOURCE, JUDGE_SOURCE}
    return ordered + sorted(rest)


def source_label(source: str, ckpts: pd.DataFrame) -> str:
    """Return how a vector source is shown: ``baseline``, ``step 120``, ``chat's own``..."""
    if source == BASELINE_SOURCE:
        return "baseline (unsteered)"
    if source == RANDOM_SOURCE:
        return "random direction"
    row = ckpts[ckpts["checkpoint"] == source]
    if row.empty:
        return source
    if bool(row["is_chat"].iloc[0]):
        return f"chat's own ({source})"
    return f"step {int(row['step'].iloc[0]):,} ({source})"


def steering_table(evals: pd.DataFrame, ckpts: pd.DataFrame, target: str,
                   dataset: str) -> pd.DataFrame:
    """Return the paper's table for one target and dataset: test split, with intervals.

    Returns:
        One row per (source, metric) in source order: ``source``, ``label``,
        ``metric``, ``value``, ``ci_lo``, ``ci_hi``, ``layer``, ``alpha``,
        ``steer_direction``, ``higher_is_better``, ``guard_passed``.

    """
    rows = evals[(evals["target"] == target) & (evals["dataset"] == dataset)
                 & (evals["split"] == "test")]
    rows = rows[~rows["vector_source"].isin([CORRELATION_SOURCE, JUDGE_SOURCE])]
    order = {s: i for i, s in enumerate(source_order(rows, ckpts))}
    rows = rows.assign(order=rows["vector_source"].map(order)).sort_values(["order", "metric"])
    table = rows[["vector_source", "metric", "value", "ci_lo", "ci_hi", "layer", "alpha",
                  "steer_direction", "higher_is_better", "guard_passed"]]
    table = table.rename(columns={"vector_source": "source"})
    table.insert(1, "label", [source_label(s, ckpts) for s in table["source"]])
    return table.reset_index(drop=True)


def wide_table(table: pd.DataFrame, primary: str | None = None) -> pd.DataFrame:
    """Pivot :func:`steering_table` to one row per source, ``value [lo, hi]`` per metric.

    Columns: ``vector``, the primary metric (if given), ``gain``, the other metrics,
    ``ppl_ratio``, ``ppl``, then the chosen ``layer`` and ``alpha``.
    """
    if table.empty:
        return pd.DataFrame()
    cells = table.assign(cell=[
        f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if pd.notna(lo) else f"{v:.3f}"
        for v, lo, hi in zip(table["value"], table["ci_lo"], table["ci_hi"], strict=True)
    ])
    wide = cells.pivot_table(index=["source", "label"], columns="metric", values="cell",
                             aggfunc="first", sort=False)
    chosen = table.groupby("source", sort=False)[["layer", "alpha"]].first()
    wide = wide.reset_index().merge(chosen, left_on="source", right_index=True)
    wide["layer"] = wide["layer"].where(wide["layer"] >= 0).astype("Int64")
    metrics = [c for c in wide.columns if c not in ("source", "label", "layer", "alpha")]
    first = [m for m in (primary, "gain") if m in metrics]
    last = [m for m in ("ppl_ratio", "ppl") if m in metrics]
    middle = [m for m in metrics if m not in first and m not in last]
    wide = wide[["label", *first, *middle, *last, "layer", "alpha"]]
    return wide.rename(columns={"label": "vector"})


def primary_metric(evals: pd.DataFrame, dataset: str) -> str | None:
    """Return the dataset's primary steering metric (the one ``gain`` is computed on)."""
    rows = evals[(evals["dataset"] == dataset) & (evals["metric"] == "gain")]
    of = rows["of"].dropna() if "of" in rows else pd.Series(dtype=object)
    if len(of):
        return str(of.iloc[0])
    task = evals[(evals["dataset"] == dataset)
                 & ~evals["metric"].isin(["gain", "ppl", "ppl_ratio", "corr_probe_gain",
                                          "judge_accuracy"])
                 & (evals["split"] == "dev")]
    return str(task["metric"].iloc[0]) if len(task) else None


def sweep_frame(evals: pd.DataFrame, target: str, dataset: str, source: str,
                metric: str) -> pd.DataFrame:
    """Return the dev-split sweep of one source: metric and perplexity ratio per (layer, α).

    Returns:
        Columns ``layer``, ``alpha``, ``value``, ``ci_lo``, ``ci_hi``, ``ppl_ratio``,
        ``guard``, ``within_guard``, sorted by layer then α.

    """
    dev = evals[(evals["target"] == target) & (evals["dataset"] == dataset)
                & (evals["split"] == "dev") & (evals["vector_source"] == source)]
    task = dev[dev["metric"] == metric][["layer", "alpha", "value", "ci_lo", "ci_hi"]]
    ratio = dev[dev["metric"] == "ppl_ratio"][["layer", "alpha", "value", "guard"]]
    ratio = ratio.rename(columns={"value": "ppl_ratio"})
    frame = task.merge(ratio, on=["layer", "alpha"], how="left")
    guard = ppl_guard(evals)
    frame["guard"] = frame["guard"].fillna(guard).astype(float)
    frame["within_guard"] = frame["ppl_ratio"] <= frame["guard"]
    return frame.sort_values(["layer", "alpha"]).reset_index(drop=True)


def ppl_guard(evals: pd.DataFrame) -> float:
    """Return the perplexity guard recorded with the rows (or the evaluation's default)."""
    values = pd.to_numeric(evals.get("guard", pd.Series(dtype=float)), errors="coerce").dropna()
    return float(values.iloc[0]) if len(values) else DEFAULT_PPL_GUARD


def baseline_value(evals: pd.DataFrame, target: str, dataset: str, metric: str,
                   split: str) -> float | None:
    """Return the unsteered model's value of a metric on a split, if stored."""
    row = evals[(evals["target"] == target) & (evals["dataset"] == dataset)
                & (evals["split"] == split) & (evals["metric"] == metric)
                & (evals["vector_source"] == BASELINE_SOURCE)]
    return float(row["value"].iloc[0]) if len(row) else None


