"""Page-ready tables: the study's reads reshaped for the pages.

Every function that reads takes the :class:`~trustdyn.store.Store` first and only hashable
arguments after it, so ``pages/_common.read`` can cache it keyed on the file's stamp; the
others reshape frames already read. No SQL here: the store owns every query.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

from trustdyn import findings
from trustdyn.schema import (
    BASELINE_SOURCE,
    CONTRASTIVE_SOURCE,
    CORRELATION_SOURCE,
    DEFAULT_PPL_GUARD,
    JUDGE_SOURCE,
    PER_CHECKPOINT_STAGES,
    RANDOM_SOURCE,
    STEERING_STAGE,
    study_units,
)
from trustdyn.store import Store, json_object

PROBE_METRICS: dict[str, str] = {
    "balanced_accuracy": "Balanced accuracy (test split)",
    "accuracy": "Probe accuracy (test split)",
    "auroc": "Probe AUROC (test split)",
    "accuracy_minus_control": "Accuracy − shuffled-label control",
    "usable_info_bits": "Usable information (bits)",
}
"""Probe metrics a heatmap can show, with their axis labels (the first is the default)."""

ESTIMATOR_LABELS: dict[str, str] = {
    "renyi": "matrix Rényi entropy (bits)",
    "nhsic": "normalised HSIC, scale-free width (score, not bits)",
    "nhsic_paper": "normalised HSIC as in the paper (σ = 50·√d, ε = 1e-5; score)",
}
"""Information estimators in display order, with honest labels of what their values are."""

Z95 = 1.959963984540054
"""Two-sided 95% normal quantile: an interval is value ± ``Z95`` standard errors."""


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


def unevaluated_datasets(store: Store, suite: str) -> list[str]:
    """Return the suite's datasets without an offline steering evaluation: the user's own.

    The evaluation has tasks for the builtin datasets only; the pipeline skips the others
    (their vectors are stored all the same and the Steering lab offers them).
    """
    specs = suite_config(store, suite).get("user_datasets") or []
    return [str(spec["meta"]["name"]) for spec in specs]


def unit_progress(store: Store, suite: str) -> pd.DataFrame:
    """Return finished vs expected units per stage of a suite.

    Expected units are :func:`~trustdyn.schema.study_units` of the stored study config (or
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
    skipped = set(unevaluated_datasets(store, suite))
    planned = [u for u in planned if u.stage != STEERING_STAGE or u.dataset not in skipped]
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

_PLANE_KEYS = ["checkpoint", "step", "tokens", "is_chat", "ordinal", "layer"]


def _quantity(rows: pd.DataFrame, name: str, prefix: str) -> pd.DataFrame:
    """One quantity's rows as ``prefix``, ``prefix_lo/hi/raw``, unit, status and reason."""
    part = rows[rows["quantity"] == name]
    return pd.DataFrame({
        **{key: part[key] for key in _PLANE_KEYS},
        prefix: part["corrected"], f"{prefix}_lo": part["corrected_lo"],
        f"{prefix}_hi": part["corrected_hi"], f"{prefix}_raw": part["value"],
        f"{prefix}_unit": part["unit"], f"{prefix}_status": part["status"],
        f"{prefix}_reason": part["reason"],
    })


def info_plane(info: pd.DataFrame, probes: pd.DataFrame, estimator: str,
               ity_source: ItySource = "estimator") -> pd.DataFrame:
    """Return the information-plane points of one estimator, null-corrected, with intervals.

    ``ixt`` and ``ity`` are the stored ``corrected`` values (estimate − mean of its
    permutation null, so 0 is chance level) with their 95% intervals (``_lo``/``_hi``,
    half-sample standard errors over statements); ``_raw`` keeps the uncorrected estimate.
    With ``ity_source="usable"``, I(T;Y) is the probe's usable information in bits, which
    has no null and no interval (``ity_lo``/``ity_hi`` NaN, ``ity == ity_raw``).

    Args:
        info: :meth:`Store.info_grid` rows of one dataset.
        probes: :meth:`Store.probe_grid` rows of the same dataset (for ``usable``).
        estimator: ``renyi``, ``nhsic`` or ``nhsic_paper``.
        ity_source: ``estimator`` (the same estimator's I(T;Y)) or ``usable``.

    Returns:
        One row per (checkpoint, layer) in training order: ``checkpoint``, ``step``,
        ``tokens``, ``is_chat``, ``ordinal``, ``layer``, ``ixt``, ``ixt_lo``, ``ixt_hi``,
        ``ixt_raw``, ``ity``, ``ity_lo``, ``ity_hi``, ``ity_raw``, ``x_unit``, ``y_unit``,
        ``status`` (``ok`` when both coordinates are defined, else ``undefined``; undefined
        coordinates are NaN) and ``reason`` (why, per quantity; empty when ok).

    """
    rows = info[info["estimator"] == estimator]
    plane = _quantity(rows, "I(X;T)", "ixt")
    if ity_source == "usable":
        bits = probes["usable_info_bits"].astype(float)
        known = np.isfinite(bits.to_numpy())
        usable = pd.DataFrame({
            "checkpoint": probes["checkpoint"], "layer": probes["layer"], "ity": bits,
            "ity_lo": np.nan, "ity_hi": np.nan, "ity_raw": bits, "ity_unit": "bits",
            "ity_status": np.where(known, "ok", "undefined"),
            "ity_reason": [None if k else "the probe's usable information is missing"
                           for k in known],
        })
        plane = plane.merge(usable, on=["checkpoint", "layer"], how="inner")
    else:
        plane = plane.merge(_quantity(rows, "I(T;Y)", "ity").drop(
            columns=["step", "tokens", "is_chat", "ordinal"]), on=["checkpoint", "layer"])
    ok = (plane["ixt_status"] == "ok") & (plane["ity_status"] == "ok")
    reasons = [
        "; ".join(f"{name}: {reason}" for name, status, reason in
                  (("I(X;T)", xs, xr), ("I(T;Y)", ys, yr)) if status != "ok")
        for xs, xr, ys, yr in zip(plane["ixt_status"], plane["ixt_reason"],
                                  plane["ity_status"], plane["ity_reason"], strict=True)
    ]
    plane = plane.assign(status=np.where(ok, "ok", "undefined"), reason=reasons)
    plane = plane.rename(columns={"ixt_unit": "x_unit", "ity_unit": "y_unit"})
    columns = [*_PLANE_KEYS, "ixt", "ixt_lo", "ixt_hi", "ixt_raw", "ity", "ity_lo", "ity_hi",
               "ity_raw", "x_unit", "y_unit", "status", "reason"]
    return plane[columns].sort_values(["is_chat", "ordinal", "layer"]).reset_index(drop=True)


def info_estimators(info: pd.DataFrame) -> list[str]:
    """Return the estimators present, in :data:`ESTIMATOR_LABELS` order, others after."""
    found = set(info["estimator"]) if "estimator" in info else set()
    return [e for e in ESTIMATOR_LABELS if e in found] + sorted(found - set(ESTIMATOR_LABELS))


def undefined_estimates(info: pd.DataFrame, estimator: str) -> pd.DataFrame:
    """Return which of an estimator's estimates are undefined, and why, grouped.

    Args:
        info: :meth:`Store.info_grid` rows of one dataset.
        estimator: The estimator.

    Returns:
        One row per (layer, quantity, reason): ``layer``, ``quantity``, ``reason``,
        ``checkpoints`` (how many are undefined) and ``of`` (how many were estimated).

    """
    rows = info[info["estimator"] == estimator]
    columns = ["layer", "quantity", "reason", "checkpoints", "of"]
    bad = rows[rows["status"] != "ok"]
    if bad.empty:
        return pd.DataFrame(columns=columns)
    counts = (bad.assign(reason=bad["reason"].fillna("no reason recorded"))
              .groupby(["layer", "quantity", "reason"], sort=True)
              .size().rename("checkpoints").reset_index())
    per_curve = rows.groupby(["layer", "quantity"]).size().rename("of").reset_index()
    return counts.merge(per_curve, on=["layer", "quantity"])[columns]


def undefined_notes(undefined: pd.DataFrame) -> list[str]:
    """Return one sentence per :func:`undefined_estimates` row: layer, reason, extent."""
    notes = []
    for layer, quantity, reason, count, total in zip(
            undefined["layer"], undefined["quantity"], undefined["reason"],
            undefined["checkpoints"].astype(int), undefined["of"].astype(int), strict=True):
        extent = "all" if count == total else f"{count} of"
        notes.append(f"layer {layer}: {reason} ({quantity} undefined at {extent} {total} "
                     "checkpoints)")
    return notes


def turn_points(store: Store, suite: str, dataset: str, estimator: str) -> pd.DataFrame:
    """Return the tested fitting → compression turns of one dataset and estimator.

    Columns: ``layer``, ``estimator``, ``turn_step`` (the candidate peak of null-corrected
    I(X;T); NaN when the curve is too short or flat), ``peak_value``, ``fall``,
    ``final_value``, ``statistic`` (rise-then-fall evidence), ``p_value`` (surrogate test,
    family-wise over the dataset's curves), ``level`` (the p-value a turn needs),
    ``ity_falls`` (I(T;Y) falls after the peak) and ``distinguishable`` (the curve turns).
    """
    turns = store.info_turns(suite)
    turns = turns[(turns["dataset"] == dataset) & (turns["estimator"] == estimator)]
    level = [json_object(p).get("alpha") for p in turns["params"]]
    turns = turns.assign(level=pd.to_numeric(pd.Series(level, index=turns.index,
                                                       dtype=object), errors="coerce"))
    return turns[["layer", "estimator", "turn_step", "peak_value", "fall", "final_value",
                  "statistic", "p_value", "level", "ity_falls",
                  "distinguishable"]].reset_index(drop=True)


def best_layers(probes: pd.DataFrame) -> pd.DataFrame:
    """Return each checkpoint's best layer by balanced accuracy, against its step-0 level.

    Args:
        probes: :meth:`Store.probe_grid` rows of one dataset.

    Returns:
        One row per checkpoint in training order: ``checkpoint``, ``step``, ``tokens``,
        ``is_chat``, ``best_layer``, ``balanced_accuracy`` with ``bacc_lo``/``bacc_hi``
        (95%), ``init_bacc`` (the first pre-training checkpoint's balanced accuracy at the
        same layer: what a network has before pre-training) and ``gain_over_init``.

    """
    best = findings.best_layer_per_checkpoint(probes, "balanced_accuracy")
    if probes.empty:
        return best.assign(bacc_lo=[], bacc_hi=[], init_bacc=[], gain_over_init=[])
    keyed = probes.set_index(["checkpoint", "layer"])
    se = keyed["balanced_accuracy_se"].reindex(
        pd.MultiIndex.from_arrays([best["checkpoint"], best["best_layer"]])).to_numpy(float)
    pre = probes[~probes["is_chat"].astype(bool)]
    first = pre[pre["ordinal"] == pre["ordinal"].min()] if len(pre) else pre
    init = dict(zip(first["layer"], first["balanced_accuracy"], strict=True))
    value = best["balanced_accuracy"].to_numpy(float)
    init_bacc = best["best_layer"].map(init).astype(float)
    return best.assign(bacc_lo=value - Z95 * se, bacc_hi=value + Z95 * se,
                       init_bacc=init_bacc, gain_over_init=value - init_bacc)


def _cell(value: float, lo: float, hi: float, fmt: str = ".3f") -> str:
    if pd.isna(value):
        return "—"
    return f"{value:{fmt}}" if pd.isna(lo) else f"{value:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def story_probe_table(details: pd.DataFrame) -> pd.DataFrame:
    """Return :func:`trustdyn.findings.probe_details` as the story's readable table.

    Columns: ``dataset``; ``step-0 balanced accuracy [95%]`` (the first checkpoint's level,
    with its layer; the header names its step when it is not 0); ``separable at
    initialisation``; ``becomes separable from step`` (pre-training makes it more
    separable than at initialisation from that step on); ``checkpoints above init``;
    ``last checkpoint: balanced accuracy [95%]`` (with its layer) and ``gain over
    initialisation [95%]`` (at that layer).
    """
    if details.empty:
        return pd.DataFrame()
    first = int(details["init_step"].iloc[0])
    init_header = f"step-{first:,} balanced accuracy [95%]"
    return pd.DataFrame({
        "dataset": details["dataset"],
        init_header: [f"{_cell(v, lo, hi)} at layer {int(layer)}" for v, lo, hi, layer in
                      zip(details["init_bacc"], details["init_lo"], details["init_hi"],
                          details["init_layer"], strict=True)],
        "separable at initialisation": details["at_init"].astype(bool),
        "becomes separable from step": ["not during pre-training" if pd.isna(s) else
                                        f"{int(s):,}" for s in details["onset"]],
        "checkpoints above init": ["—" if pd.isna(v) else f"{v:.0%}"
                                   for v in details["share_above_init"]],
        "last checkpoint: balanced accuracy [95%]": [
            f"{_cell(v, lo, hi)} at layer {int(layer)}" for v, lo, hi, layer in
            zip(details["final_bacc"], details["final_lo"], details["final_hi"],
                details["final_layer"], strict=True)],
        "gain over initialisation [95%]": [
            _cell(v, lo, hi, "+.3f") for v, lo, hi in
            zip(details["gain_over_init"], details["gain_lo"], details["gain_hi"],
                strict=True)],
    })


CONTRASTIVE_LABEL = "contrastive (CAA on the chat model; beyond the paper)"
"""How the contrastive source (:data:`~trustdyn.schema.CONTRASTIVE_SOURCE`) is shown."""
CONTRASTIVE_NOTE = (
    f"{CONTRASTIVE_LABEL}: not one of the paper's sources. Computed on the chat model itself "
    "from paired chat-format prompts built from the same study statements as the other "
    "vectors (one user turn asking which of two statements to say, answered once for each; "
    "read at the answer letter), recomputed by the evaluation rather than stored, and "
    "judged like the chat's own vector: against the random direction of the same applied "
    "norm, as a family of one.")
"""What the steering table says under the per-source table when the contrastive source is in it."""


def source_order(evals: pd.DataFrame, ckpts: pd.DataFrame) -> list[str]:
    """Return sources in table order: baseline, checkpoints by step, chat, contrastive, random."""
    present = set(evals["vector_source"])
    ordered = [BASELINE_SOURCE] if BASELINE_SOURCE in present else []
    ordered += [c for c in ckpts.sort_values(["is_chat", "ordinal"])["checkpoint"]
                if c in present]
    ordered += [s for s in (CONTRASTIVE_SOURCE, RANDOM_SOURCE) if s in present]
    rest = present - set(ordered) - {CORRELATION_SOURCE, JUDGE_SOURCE}
    return ordered + sorted(rest)


def source_label(source: str, ckpts: pd.DataFrame) -> str:
    """Return how a vector source is shown: ``baseline``, ``step 120``, ``chat's own``..."""
    if source == BASELINE_SOURCE:
        return "baseline (unsteered)"
    if source == RANDOM_SOURCE:
        return "random direction"
    if source == CONTRASTIVE_SOURCE:
        return CONTRASTIVE_LABEL
    row = ckpts[ckpts["checkpoint"] == source]
    if row.empty:
        return source
    if bool(row["is_chat"].iloc[0]):
        return f"chat's own ({source})"
    return f"step {int(row['step'].iloc[0]):,} ({source})"


_TABLE_COLUMNS = ["vector_source", "role", "metric", "value", "ci_lo", "ci_hi", "mde", "p_value",
                  "status", "reason", "layer", "alpha", "applied_norm", "norm_ratio", "scaling",
                  "steer_direction", "higher_is_better", "guard_passed"]


def steering_table(evals: pd.DataFrame, ckpts: pd.DataFrame, target: str,
                   dataset: str) -> pd.DataFrame:
    """Return the paper's table for one target and dataset: test split, with intervals.

    Returns:
        One row per (source, metric) in source order: ``source``, ``label``, ``role``,
        ``metric``, ``value`` (NaN when not ``ok``), ``ci_lo``, ``ci_hi``, ``mde``,
        ``p_value``, ``status``, ``reason``, ``layer``, ``alpha``, ``applied_norm``,
        ``norm_ratio``, ``scaling``, ``steer_direction``, ``higher_is_better``,
        ``guard_passed``.

    """
    rows = evals[(evals["target"] == target) & (evals["dataset"] == dataset)
                 & (evals["split"] == "test")]
    rows = rows[~rows["vector_source"].isin([CORRELATION_SOURCE, JUDGE_SOURCE])]
    order = {s: i for i, s in enumerate(source_order(rows, ckpts))}
    rows = rows.assign(order=rows["vector_source"].map(order)).sort_values(["order", "metric"])
    table = rows[_TABLE_COLUMNS].rename(columns={"vector_source": "source"})
    table.insert(1, "label", [source_label(s, ckpts) for s in table["source"]])
    return table.reset_index(drop=True)


def status_text(status: object, reason: object) -> str:
    """Return ``status: reason`` of a row without a number.

    A NULL value stored as ``ok`` reads ``undefined`` too: there is no number to show.
    """
    word = status if isinstance(status, str) and status != "ok" else "undefined"
    return f"{word}: {reason}" if isinstance(reason, str) and reason else word


def _estimate_cell(value: float, lo: float, hi: float, status: object, reason: object,
                   fmt: str = ".3f") -> str:
    """``value [lo, hi]``, or the status and reason when the value is not defined."""
    if status != "ok" or pd.isna(value):
        return status_text(status, reason)
    return _cell(value, lo, hi, fmt)


def wide_table(table: pd.DataFrame, primary: str | None = None) -> pd.DataFrame:
    """Pivot :func:`steering_table` to one row per source, ``value [lo, hi]`` per metric.

    Columns: ``vector``, the primary metric (if given), ``gain``, the other metrics,
    ``ppl_ratio``, ``ppl``, then the chosen ``layer`` and ``alpha`` (missing without a
    chosen setting). A metric that is not defined shows its status and reason.
    """
    if table.empty:
        return pd.DataFrame()
    cells = table.assign(cell=[
        _estimate_cell(*row) for row in zip(table["value"], table["ci_lo"], table["ci_hi"],
                                            table["status"], table["reason"], strict=True)
    ])
    wide = cells.pivot_table(index=["source", "label"], columns="metric", values="cell",
                             aggfunc="first", sort=False)
    chosen = table.groupby("source", sort=False)[["layer", "alpha"]].first()
    wide = wide.reset_index().merge(chosen, left_on="source", right_index=True)
    metrics = [c for c in wide.columns if c not in ("source", "label", "layer", "alpha")]
    wide[metrics] = wide[metrics].fillna("—")  # a metric the source was not scored on
    steered = wide["layer"] >= 0
    wide["layer"] = wide["layer"].where(steered).astype("Int64")
    wide["alpha"] = wide["alpha"].where(steered)
    first = [m for m in (primary, "gain", "gain_vs_random") if m in metrics]
    last = [m for m in ("ppl_ratio", "ppl") if m in metrics]
    middle = [m for m in metrics if m not in first and m not in last]
    wide = wide[["label", *first, *middle, *last, "layer", "alpha"]]
    return wide.rename(columns={"label": "vector"})


def _gain_part(table: pd.DataFrame, metric: str, prefix: str) -> pd.DataFrame:
    """One gain metric's rows of :func:`steering_table` as ``source`` and prefixed columns."""
    rows = table[table["metric"] == metric]
    return pd.DataFrame({
        "source": rows["source"], prefix: rows["value"], f"{prefix}_lo": rows["ci_lo"],
        f"{prefix}_hi": rows["ci_hi"], f"{prefix}_mde": rows["mde"],
        f"{prefix}_p": rows["p_value"], f"{prefix}_status": rows["status"],
        f"{prefix}_reason": rows["reason"], f"{prefix}_guard": rows["guard_passed"],
    })


def _flag(value: object) -> bool | None:
    """A nullable boolean cell as ``bool`` or ``None``."""
    return bool(value) if isinstance(value, bool | np.bool_) else None


def helps_family(details: pd.DataFrame, target: str, dataset: str) -> tuple[int, int]:
    """Return the family of a dataset's "helps" tests as ``findings.steering_details`` set it.

    ``(n_sources, n_datasets)``: the dataset's pre-training sources and the datasets of
    the study, the arguments of :func:`trustdyn.verdicts.helps_verdict`.
    """
    if details.empty:
        return 0, 1
    row = details[(details["target"] == target) & (details["dataset"] == dataset)]
    n_sources = int(row["pretraining_sources"].iloc[0]) if len(row) else 0
    return n_sources, max(int(details["dataset"].nunique()), 1)


def steering_sources(table: pd.DataFrame, n_sources: int, n_datasets: int) -> pd.DataFrame:
    """Return one row per steered source of :func:`steering_table`: setting, gains, verdict.

    Args:
        table: :func:`steering_table` rows of one target and dataset.
        n_sources: The dataset's pre-training sources (:func:`helps_family`).
        n_datasets: The study's datasets (:func:`helps_family`).

    Returns:
        In source order: ``source``, ``label``, ``role``, the chosen ``layer`` (``<NA>``
        without an admissible setting), ``alpha``, ``applied_norm``, ``norm_ratio``,
        ``scaling``; ``gain``, ``gain_lo``, ``gain_hi``, ``gain_mde``, ``gain_p``,
        ``gain_status``, ``gain_reason`` (over the unsteered model) and the same with the
        prefix ``vs_random`` (over the random direction of the same applied norm; missing
        for the random direction itself); ``guard_passed`` (of the comparison with the
        random direction where there is one, else of the dev selection);
        ``test_ppl_ratio``; ``helps`` (:func:`trustdyn.findings.vector_helps`; ``<NA>``
        for the random direction, which is the reference).

    """
    gains = table[table["metric"] == "gain"]
    frame = gains[["source", "label", "role", "layer", "alpha", "applied_norm", "norm_ratio",
                   "scaling"]]
    frame = frame.merge(_gain_part(table, "gain", "gain"), on="source", how="left")
    frame = frame.merge(_gain_part(table, "gain_vs_random", "vs_random"), on="source",
                        how="left")
    ratio = table[table["metric"] == "ppl_ratio"][["source", "value"]]
    frame = frame.merge(ratio.rename(columns={"value": "test_ppl_ratio"}), on="source",
                        how="left")
    setting = frame["layer"] >= 0
    frame["layer"] = frame["layer"].where(setting).astype("Int64")
    frame["alpha"] = frame["alpha"].where(setting)
    frame["guard_passed"] = pd.array(
        [_flag(v) if isinstance(s, str) else _flag(g) for v, s, g in zip(
            frame["vs_random_guard"], frame["vs_random_status"], frame["gain_guard"],
            strict=True)], dtype="boolean")
    verdicts = findings.vector_helps(frame.rename(columns={"vs_random_p": "p_value"}),
                                     n_sources, n_datasets)
    frame["helps"] = verdicts.astype("boolean").mask(frame["source"] == RANDOM_SOURCE)
    return frame.drop(columns=["gain_guard", "vs_random_guard"]).reset_index(drop=True)


def _number(value: float, fmt: str) -> str:
    return "—" if pd.isna(value) else f"{value:{fmt}}"


def _guard_text(passed: object, ratio: float, has_setting: bool) -> str:
    """How the chosen setting fared under the perplexity guard, in words."""
    if not has_setting:
        return "no dev setting within it"
    on_test = "" if pd.isna(ratio) else f" (test ×{ratio:.2f})"
    flag = _flag(passed)
    return "not recorded" if flag is None else ("within" if flag else "over") + on_test


def _versus_cell(row: pd.Series) -> str:
    """The gain over the random direction, or why there is none."""
    if row["source"] == RANDOM_SOURCE:
        return "— (the reference)"
    if not isinstance(row["vs_random_status"], str):  # no comparison: the source has no gain
        return status_text(row["gain_status"], None)
    return _estimate_cell(row["vs_random"], row["vs_random_lo"], row["vs_random_hi"],
                          row["vs_random_status"], row["vs_random_reason"], "+.3f")


def steering_sources_view(sources: pd.DataFrame) -> pd.DataFrame:
    """Return :func:`steering_sources` as the page shows it, one text cell per number.

    A source without an admissible setting, or whose gain is undefined, shows its status
    and reason instead of numbers; ``helps`` stays a (nullable) boolean.
    """
    ok = sources["gain_status"] == "ok"
    return pd.DataFrame({
        "vector": sources["label"],
        "layer": [_number(v, "d") for v in sources["layer"]],
        "α": [_number(v, "+g") for v in sources["alpha"]],
        "applied norm": [_number(v, ".3g") for v in sources["applied_norm"]],
        "norm ratio": [_number(v, ".3f") for v in sources["norm_ratio"]],
        "gain over unsteered [95%]": [
            _estimate_cell(*row, "+.3f") for row in zip(
                sources["gain"], sources["gain_lo"], sources["gain_hi"],
                sources["gain_status"], sources["gain_reason"], strict=True)],
        "MDE": [_number(v, ".3f") if good else "—"
                for v, good in zip(sources["gain_mde"], ok, strict=True)],
        "gain over same-norm random [95%]": [_versus_cell(r) for _, r in sources.iterrows()],
        "p (one-sided)": [_number(p, ".2g") if s == "ok" else "—"
                          for p, s in zip(sources["vs_random_p"], sources["vs_random_status"],
                                          strict=True)],
        "MDE vs random": [_number(v, ".3f") if s == "ok" else "—"
                          for v, s in zip(sources["vs_random_mde"],
                                          sources["vs_random_status"], strict=True)],
        "perplexity guard": [_guard_text(*row) for row in zip(
            sources["guard_passed"], sources["test_ppl_ratio"], sources["layer"].notna(),
            strict=True)],
        "helps": sources["helps"],
    })


SCALING_NOTES: dict[str, str] = {
    "target": "α counts the chat model's own projection σ at the layer, so every source is "
              "added with the same norm at the same α",
    "source-sigma": "α counts each source checkpoint's own projection σ (the paper's "
                    "scaling), so sources at one α are added with different norms",
}
"""What α means under each ``scaling`` of the steering evaluation."""


def scaling_note(table: pd.DataFrame) -> str:
    """Return one line on the unit of α and the norm columns of :func:`steering_table` rows."""
    found = sorted({str(s) for s in table["scaling"].dropna()})
    units = "; ".join(f"scaling “{s}”: {SCALING_NOTES.get(s, 'unit not known')}"
                      for s in found) or "scaling not recorded with these rows"
    return (f"{units[0].upper()}{units[1:]}. Applied norm = |α|·σ, the L2 norm of the vector "
            "added; norm ratio = applied norm ÷ the chat model's mean residual-stream norm "
            "at that layer.")


def not_drawn(table: pd.DataFrame, metric: str) -> list[str]:
    """Return ``label: status: reason`` of the rows of ``metric`` a figure leaves out."""
    rows = table[(table["metric"] == metric)
                 & ((table["status"] != "ok") | table["value"].isna())]
    return [f"{label}: {status_text(status, reason)}" for label, status, reason in
            zip(rows["label"], rows["status"], rows["reason"], strict=True)]


HELPS_NOTE = (
    "A vector helps when its test gain over the random direction of the same applied norm "
    "(same layer, same items) is above zero at the one-sided level shown, which keeps the "
    "error ≤ 5% over the dataset's pre-training vectors and the study's datasets, and its "
    "setting stayed within the perplexity guard. MDE: the smallest true gain the test "
    "detects with 80% power (2.8 × its standard error); a gain below it may be missed.")
"""The "helps" rule in words, for captions under the tables that show it."""


_CORRELATIONS = {"corr_probe_gain": "r", "partial_corr_probe_gain": "partial r (norm held fixed)"}


def stored_correlations(evals: pd.DataFrame, target: str, dataset: str) -> list[str]:
    """Return a sentence per probe-accuracy ↔ gain correlation the pipeline stored.

    Each gives r with its Fisher-z interval and the checkpoints behind it, or why it is
    undefined: the raw correlation and the one with the log applied norm held fixed.
    """
    rows = evals[(evals["dataset"] == dataset) & (evals["target"] == target)
                 & evals["metric"].isin(list(_CORRELATIONS))]
    return [
        f"Stored by the pipeline: {_CORRELATIONS[str(metric)]} = "
        f"{_estimate_cell(value, lo, hi, status, reason)} over {int(n)} checkpoints "
        "(Fisher-z interval)."
        for metric, value, lo, hi, status, reason, n in zip(
            rows["metric"], rows["value"], rows["ci_lo"], rows["ci_hi"], rows["status"],
            rows["reason"], rows["n"], strict=True)
    ]


def steering_details(store: Store, suite: str) -> pd.DataFrame:
    """Return :func:`trustdyn.findings.steering_details` of a suite (with every probe)."""
    return findings.steering_details(store.steering_eval_table(suite),
                                     findings.all_probes(store, suite))


def _r_cell(value: float) -> str:
    return "undefined" if pd.isna(value) else f"{value:+.2f}"


def story_steering_table(details: pd.DataFrame) -> pd.DataFrame:
    """Return :func:`trustdyn.findings.steering_details` as a readable table.

    Columns: ``target``, ``dataset``, ``pre-training vectors that help`` (``k of n``),
    ``no admissible setting``, ``level per vector`` (one-sided), ``best pre-training
    vector``, ``its gain over random [95%]``, ``its MDE``, ``chat's own vector helps``,
    ``chat's gain over random``, ``contrastive vector helps``, ``contrastive's gain over
    random`` (— without that source), ``r (probe, gain)``, ``r, norm held fixed`` and
    ``checkpoints`` (pairs behind the correlations).
    """
    if details.empty:
        return pd.DataFrame()
    return pd.DataFrame({
        "target": details["target"], "dataset": details["dataset"],
        "pre-training vectors that help": [
            f"{h} of {n}" for h, n in zip(details["helping"], details["pretraining_sources"],
                                          strict=True)],
        "no admissible setting": details["no_admissible"],
        "level per vector": [f"{v:.2g}" for v in details["level"]],
        "best pre-training vector": details["best_source"].fillna("—"),
        "its gain over random [95%]": [
            _cell(v, lo, hi, "+.3f") for v, lo, hi in zip(
                details["best_gain_vs_random"], details["best_lo"], details["best_hi"],
                strict=True)],
        "its MDE": [_number(v, ".3f") for v in details["mde"]],
        "chat's own vector helps": details["chat_helps"].astype(bool),
        "chat's gain over random": [_number(v, "+.3f")
                                    for v in details["chat_gain_vs_random"]],
        "contrastive vector helps": details["contrastive_helps"].astype(bool),
        "contrastive's gain over random": [_number(v, "+.3f")
                                           for v in details["contrastive_gain_vs_random"]],
        "r (probe, gain)": [_r_cell(v) for v in details["corr_probe_gain"]],
        "r, norm held fixed": [_r_cell(v) for v in details["partial_corr_probe_gain"]],
        "checkpoints": details["corr_n"],
    })


NON_TASK_METRICS: frozenset[str] = frozenset({
    "gain", "gain_vs_random", "ppl", "ppl_ratio", "corr_probe_gain", "partial_corr_probe_gain",
    "judge_accuracy", "judge_accuracy_truncated"})
"""Steering metrics that are not a task's own: gains, perplexity, correlations, the judge."""


def primary_metric(evals: pd.DataFrame, dataset: str) -> str | None:
    """Return the dataset's primary steering metric (the one ``gain`` is computed on)."""
    rows = evals[(evals["dataset"] == dataset) & (evals["metric"] == "gain")]
    of = rows["of"].dropna() if "of" in rows else pd.Series(dtype=object)
    if len(of):
        return str(of.iloc[0])
    task = evals[(evals["dataset"] == dataset) & ~evals["metric"].isin(NON_TASK_METRICS)
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


