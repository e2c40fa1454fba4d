"""A SYNTHETIC study of any size with made-up numbers, for the dashboard's tests and benchmark.

Shapes resemble the paper's (probe accuracy rising with training, I(X;T) rising then
falling, gains growing with probe accuracy) so every page has something to draw; nothing is
measured from a model, and the suite, cards and checkpoints all say SYNTHETIC.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from trustdyn.evaluation.metrics import minimum_detectable_effect
from trustdyn.provenance import code_version
from trustdyn.schema import (
    BASELINE_SOURCE,
    CORRELATION_SOURCE,
    DEFAULT_PPL_GUARD,
    NO_LAYER,
    PER_CHECKPOINT_STAGES,
    RANDOM_SOURCE,
    STEERING_STAGE,
    TURNS_STAGE,
    study_units,
)
from trustdyn.stats import CI_LEVEL
from trustdyn.store import Store
from trustdyn.verdicts import turn_table

_Z_CI = float(stats.norm.isf((1 - CI_LEVEL) / 2))
"""Half-width of a :data:`~trustdyn.stats.CI_LEVEL` interval in standard errors."""

SYNTHETIC_MARK = "SYNTHETIC"
"""Word every synthetic suite description and dataset card starts with."""

ESTIMATORS: dict[str, str] = {"renyi": "bits", "nhsic": "score"}
"""Information estimators written, with the unit of their values."""

QUANTITIES: tuple[str, str] = ("I(X;T)", "I(T;Y)")
"""Information quantities written per (checkpoint, dataset, layer, estimator)."""

ALPHAS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
"""Strengths of the synthetic dev-split sweep."""


@dataclass(frozen=True)
class SyntheticDataset:
    """What the synthetic study records about one probe dataset.

    Attributes:
        name: Dataset name (the built-in names, so the lab's dimension mapping applies).
        dimension: Trustworthiness dimension it probes.
        label1_meaning: What label 1 stands for.
        desirable_label: The label steering should move toward (``None``: no side).
        gain: Highest probe-accuracy gain over chance this dataset reaches.
        metric: Name of its primary steering metric.
        higher_is_better: Whether a larger value of ``metric`` is more trustworthy.

    """

    name: str
    dimension: str
    label1_meaning: str
    desirable_label: int | None
    gain: float
    metric: str
    higher_is_better: bool = True


BUILTIN: tuple[SyntheticDataset, ...] = (
    SyntheticDataset("truthfulqa", "reliability", "the answer is true", 1, 0.30, "mc1"),
    SyntheticDataset("confaide", "privacy", "the information flow violates privacy norms", 0,
                     0.38, "accuracy"),
    SyntheticDataset("toxigen", "toxicity", "toxic", 0, 0.34, "loglik_gap", False),
    SyntheticDataset("stereoset", "fairness", "the continuation is the anti-stereotype", 1,
                     0.18, "icat"),
    SyntheticDataset("sst2", "robustness", "the sentence was perturbed", None, 0.42,
                     "agreement"),
)
"""The five built-in probe datasets as the synthetic study describes them (names, sides
and primary metrics as in ``trustdyn.datasets`` and ``trustdyn.evaluation.tasks``)."""

def write_synthetic_study(
    path: Path | str,
    *,
    n_checkpoints: int = 12,
    n_layers: int = 4,
    datasets: Sequence[SyntheticDataset] = BUILTIN,
    seed: int = 0,
    suite: str = "synthetic",
    hidden_size: int = 16,
    with_chat: bool = True,
    stages: Sequence[str] = (*PER_CHECKPOINT_STAGES, TURNS_STAGE, STEERING_STAGE),
    n_eval_sources: int = 6,
) -> Store:
    """Write a complete (or, with fewer ``stages``, partial) SYNTHETIC study into ``path``.

    Args:
        path: DuckDB file to create or extend (the suite's rows are replaced).
        n_checkpoints: Pre-training checkpoints (the chat model comes on top).
        n_layers: Decoder blocks per checkpoint.
        datasets: Probe datasets to include.
        seed: Seed of every random draw; the same arguments write the same numbers.
        suite: Suite name.
        hidden_size: Width of stored probe directions and steering vectors.
        with_chat: Add a chat checkpoint (``is_chat``) after the last one.
        stages: Which stages to write: any of ``probe``, ``info``, ``vectors`` (per
            checkpoint), ``turns`` and ``steer_eval`` (per suite and dataset, as the
            pipeline names them). Leaving some out makes a partial study, as if the
            pipeline had been stopped.
        n_eval_sources: Pre-training checkpoints whose vectors the steering table uses.

    Returns:
        The store, ready to read.

    Raises:
        ValueError: for fewer than 2 checkpoints, no layers or no datasets.

    """
    if n_checkpoints < 2 or n_layers < 1 or not datasets:
        raise ValueError(
            f"A synthetic study needs >= 2 checkpoints, >= 1 layer and a dataset; got "
            f"{n_checkpoints}, {n_layers}, {len(datasets)}."
        )
    start = time.perf_counter()
    store = Store(path)
    ckpts = checkpoint_frame(suite, n_checkpoints, n_layers, hidden_size, with_chat, seed)
    store.put_suite(
        suite,
        description=f"{SYNTHETIC_MARK} study written by trustdyn.testing.synthetic (seed {seed}); "
        "made-up numbers for tests and benchmarks, not measured from any model.",
        chat_checkpoint=str(ckpts["checkpoint"].iloc[-1]) if with_chat else None,
        config={"synthetic": True, "seed": seed, "datasets": [d.name for d in datasets],
                "stages": list(PER_CHECKPOINT_STAGES)},
        checkpoints=ckpts,
    )
    store.put_datasets([_card(d) for d in datasets])
    grid = _Grid(ckpts, datasets, n_layers, hidden_size, seed)
    tables: dict[str, pd.DataFrame] = {}
    for stage in PER_CHECKPOINT_STAGES:
        if stage in stages:
            tables.update(_STAGE_TABLES[stage](grid))
    if TURNS_STAGE in stages:
        tables["info_turns"] = grid.turns()
    if STEERING_STAGE in stages:
        tables["steering_evals"] = grid.steering_evals(n_eval_sources)
    target = str(ckpts["checkpoint"].iloc[-1])  # the chat model, else the last one
    units = [unit for unit in study_units(suite, list(ckpts["checkpoint"]),
                                          [d.name for d in datasets], PER_CHECKPOINT_STAGES,
                                          target)
             if unit.stage in stages]
    store.write_units(units, tables, seconds=time.perf_counter() - start)
    return store


def _card(d: SyntheticDataset) -> dict[str, Any]:
    return {
        "name": d.name, "dimension": d.dimension, "label1_meaning": d.label1_meaning,
        "desirable_label": d.desirable_label, "rows": 600, "sha256": None,
        "description": f"{SYNTHETIC_MARK}: stands in for the {d.dimension} dataset "
        f"{d.name!r}; no statements were read.",
        "source": "trustdyn.testing.synthetic", "license": "n/a (generated numbers)",
    }


def synthetic_steps(n: int, total: int | None = None) -> np.ndarray:
    """Return ``n`` strictly increasing steps from 0, roughly log-spaced, ending at ``total``.

    Args:
        n: Number of checkpoints (>= 2).
        total: Last step; defaults to ``2000 · n``.

    """
    total = total or 2000 * n
    raw = np.ceil(np.geomspace(1, total, n - 1)).astype(np.int64)
    steps = np.concatenate([[0], raw])
    for i in range(1, n):
        steps[i] = max(steps[i], steps[i - 1] + 1)
    return steps


def checkpoint_frame(suite: str, n_checkpoints: int, n_layers: int, hidden_size: int,
                     with_chat: bool, seed: int) -> pd.DataFrame:
    """Return the synthetic ``checkpoints`` rows (a power-law loss curve, chat last)."""
    rng = np.random.default_rng(seed)
    steps = synthetic_steps(n_checkpoints)
    loss = 2.4 + 8.5 * (1 + steps / 40.0) ** -0.45 + rng.normal(0, 0.02, n_checkpoints)
    rows = [
        {"checkpoint": f"step-{int(s):07d}", "step": int(s), "is_chat": False,
         "train_loss": float(loss[i]), "heldout_loss": float(loss[i] + 0.08)}
        for i, s in enumerate(steps)
    ]
    if with_chat:
        rows.append({"checkpoint": "chat", "step": int(steps[-1]), "is_chat": True,
                     "train_loss": None, "heldout_loss": float(loss[-1] + 0.05)})
    frame = pd.DataFrame(rows)
    frame.insert(0, "suite", suite)
    frame["ordinal"] = np.arange(len(frame))
    frame["tokens"] = frame["step"] * 1_048_576
    frame["source"] = "synthetic"
    frame["revision"] = None
    frame["weight_hash"] = None
    frame["n_layers"] = n_layers
    frame["hidden_size"] = hidden_size
    frame["extra"] = pd.Series([{"synthetic": True}] * len(frame), dtype=object)
    return frame


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


class _Grid:
    """The (checkpoint, dataset, layer) grid and the smooth curves every table derives from.

    Arrays below are indexed ``[c, k, l]`` = (checkpoint, dataset, layer), flattened in
    that order for the row tables.
    """

    n_test = 180

    def __init__(self, ckpts: pd.DataFrame, datasets: Sequence[SyntheticDataset],
                 n_layers: int, hidden_size: int, seed: int) -> None:
        self.ckpts = ckpts
        self.datasets = list(datasets)
        self.n_layers = n_layers
        self.hidden = hidden_size
        self.seed = seed
        self.suite = str(ckpts["suite"].iloc[0])
        steps = ckpts["step"].to_numpy(dtype=float)
        is_chat = ckpts["is_chat"].to_numpy(dtype=bool)
        # Training progress in [0, 1] on a log scale; the chat model sits a bit past 1.
        progress = np.log1p(steps) / np.log1p(steps.max())
        self.progress = np.where(is_chat, 1.08, progress)  # [C]
        depth = np.arange(n_layers) / max(n_layers - 1, 1)
        self.layer_quality = np.exp(-((depth - 0.6) ** 2) / 0.08)  # [L], middle layers best
        self.gain = np.array([d.gain for d in self.datasets])  # [K]
        self.shape = (len(ckpts), len(self.datasets), n_layers)

    # -- shared pieces -----------------------------------------------------------------

    def _rng(self, table: int) -> np.random.Generator:
        """Return a generator per table, so a partial study draws the same numbers."""
        return np.random.default_rng([self.seed, table])

    def _keys(self) -> pd.DataFrame:
        """Return the flattened (suite, checkpoint, dataset, layer) key columns."""
        c, k, layer = np.indices(self.shape).reshape(3, -1)
        return pd.DataFrame({
            "suite": self.suite,
            "checkpoint": self.ckpts["checkpoint"].to_numpy()[c],
            "dataset": np.array([d.name for d in self.datasets])[k],
            "layer": layer.astype(np.int32),
        })

    @functools.cached_property
    def accuracy(self) -> np.ndarray:
        """Probe accuracy ``[C, K, L]``: rising with progress, best mid-depth."""
        rise = _sigmoid(9.0 * (self.progress - 0.45))[:, None, None]
        level = (0.35 + 0.65 * self.layer_quality)[None, None, :]
        noise = self._rng(1).normal(0, 0.012, self.shape)
        acc = 0.5 + self.gain[None, :, None] * rise * level + noise
        return np.clip(acc, 0.4, 0.995)

    def _unit_vectors(self, raw: np.ndarray) -> np.ndarray:
        return raw / np.linalg.norm(raw, axis=-1, keepdims=True)

    @functools.cached_property
    def base_directions(self) -> np.ndarray:
        """The direction each probe converges to, ``[K, L, d]`` unit vectors."""
        raw = self._rng(2).normal(size=(len(self.datasets), self.n_layers, self.hidden))
        return self._unit_vectors(raw)

    def directions(self) -> np.ndarray:
        """Return probe directions ``[C, K, L, d]``: noisy early, settling as training goes."""
        noise = self._rng(3).normal(size=(*self.shape, self.hidden))
        spread = (2.5 * (1.05 - np.minimum(self.progress, 1.0)))[:, None, None, None]
        return self._unit_vectors(self.base_directions[None] + spread * noise / np.sqrt(
            self.hidden)).astype(np.float32)

    # -- tables --------------------------------------------------------------------------

    def probe_tables(self) -> dict[str, pd.DataFrame]:
        """Rows of ``probe_results`` and ``probe_directions``."""
        acc = self.accuracy.reshape(-1)
        rng = self._rng(4)
        n = self.n_test
        half = 1.96 * np.sqrt(acc * (1 - acc) / n)
        auroc = np.clip(0.5 + 1.3 * (acc - 0.5), 0.3, 0.999)
        control = 0.5 + rng.normal(0, 0.02, acc.shape)
        usable = np.maximum(1.0 - _binary_entropy(acc), 0.0)
        results = self._keys()
        results = results.assign(
            accuracy=acc, accuracy_lo=np.clip(acc - half, 0, 1),
            accuracy_hi=np.clip(acc + half, 0, 1), accuracy_se=half / 1.96,
            balanced_accuracy=acc, balanced_accuracy_se=half / 1.96,
            auroc=auroc, auroc_lo=np.clip(auroc - 1.2 * half, 0, 1),
            auroc_hi=np.clip(auroc + 1.2 * half, 0, 1),
            control_accuracy=control, control_auroc=control + rng.normal(0, 0.01, acc.shape),
            test_ce_bits=1.0 - usable, usable_info_bits=usable,
            n_train=420, n_test=n, n_test_groups=n, seed=self.seed,
            params='{"probe": "logistic", "synthetic": true}', code_version=code_version(),
        )
        directions = self._keys()
        directions["direction"] = pd.Series(list(self.directions().reshape(-1, self.hidden)),
                                            dtype=object)
        return {"probe_results": results, "probe_directions": directions}

    @functools.cached_property
    def info_table(self) -> pd.DataFrame:
        """Rows of ``info_results``: I(X;T) rises then falls, I(T;Y) follows accuracy."""
        rng = self._rng(5)
        depth = np.arange(self.n_layers) / max(self.n_layers - 1, 1)
        turn = (0.35 + 0.2 * depth)[None, None, :]  # later layers turn later
        p = np.minimum(self.progress, 1.0)[:, None, None] + 1e-3
        ixt = (1.5 + 2.0 * depth)[None, None, :] * (0.6 + 0.9 * (p / turn) * np.exp(1 - p / turn))
        ity = np.maximum(1.0 - _binary_entropy(self.accuracy), 0.0) * 0.9 + 0.02
        frames = []
        for estimator, unit in ESTIMATORS.items():
            # nHSIC is a bounded dependence score, not bits: squash the same curves.
            scale = (lambda x: np.tanh(x / 4)) if estimator == "nhsic" else (lambda x: x)
            for quantity, values in zip(QUANTITIES, (ixt, ity), strict=True):
                noisy = scale(values + rng.normal(0, 0.02, self.shape))
                keys = self._keys()
                null_mean = scale(np.full(noisy.size, 0.03))
                null_std = scale(np.full(noisy.size, 0.015))
                corrected = noisy.reshape(-1) - null_mean
                se = scale(np.full(noisy.size, 0.02))
                frames.append(keys.assign(
                    estimator=estimator, quantity=quantity, value=noisy.reshape(-1),
                    null_mean=null_mean, null_std=null_std, corrected=corrected,
                    z=corrected / null_std, se=se, corrected_lo=corrected - 1.96 * se,
                    corrected_hi=corrected + 1.96 * se, status="ok", reason=None,
                    unit=unit, n=256,
                    seed=self.seed, params='{"synthetic": true}', code_version=code_version(),
                ))
        return pd.concat(frames, ignore_index=True)

    def turns(self) -> pd.DataFrame:
        """Rows of ``info_turns``: the pipeline's turn test run on the synthetic curves."""
        info = self.info_table.merge(self.ckpts[["checkpoint", "step", "is_chat"]],
                                     on="checkpoint")
        info = info[~info["is_chat"].astype(bool)]
        rows = []
        for ds in self.datasets:
            rows += turn_table(self.suite, ds.name, info[info["dataset"] == ds.name],
                               n_datasets=len(self.datasets), seed=self.seed)
        for row in rows:
            row["params"] = {**row["params"], "synthetic": True}
            row["code_version"] = code_version()
        return pd.DataFrame(rows)

    def vector_table(self) -> pd.DataFrame:
        """Rows of ``steering_vectors``: close to the probe directions, scale grows."""
        noise = self._rng(6).normal(size=(*self.shape, self.hidden)) * 0.3 / np.sqrt(self.hidden)
        base = self.base_directions[None] + noise
        directions = self._unit_vectors(base).astype(np.float32).reshape(-1, self.hidden)
        scale = (0.5 + 3.0 * np.minimum(self.progress, 1.0))[:, None, None] * (
            1 + np.arange(self.n_layers))[None, None, :] / self.n_layers
        keys = self._keys()
        return keys.assign(
            direction=list(directions), scale=np.broadcast_to(scale, self.shape).reshape(-1),
            toward_label=1, site="block_output", operation="add", hidden_size=self.hidden,
            model="synthetic", revision=None, n=420, seed=self.seed,
            params='{"method": "mean_difference", "synthetic": true}',
            code_version=code_version(),
        )

    def steering_evals(self, n_sources: int) -> pd.DataFrame:
        """Rows of ``steering_evals`` in ``trustdyn.evaluation``'s layout.

        Per dataset: the unsteered baseline (``"none"``) on dev and test; for each source
        (``n_sources`` pre-training checkpoints, the chat model's own vectors, ``random``)
        a dev sweep over layers × :data:`ALPHAS` (primary metric, ``ppl_ratio``), the
        candidate chosen on dev under the perplexity guard scored on test with its
        ``gain`` and (not for ``random``) its ``gain_vs_random``; and the
        probe-accuracy/gain correlation. A checkpoint's gain grows with its probe accuracy;
        random vectors only raise perplexity. Steered rows carry an applied norm of
        ``|α|`` and a norm ratio of ``|α| / 10``.
        """
        rng = self._rng(7)
        pre = np.flatnonzero(~self.ckpts["is_chat"].to_numpy())
        picks = pre[np.unique(np.linspace(0, len(pre) - 1, n_sources).round().astype(int))]
        chat = np.flatnonzero(self.ckpts["is_chat"].to_numpy())
        names = self.ckpts["checkpoint"].to_numpy()
        target = str(names[chat[0]]) if len(chat) else str(names[pre[-1]])
        sources = [(str(names[i]), int(i)) for i in [*picks, *chat]]
        rows: list[dict[str, Any]] = []
        for k, ds in enumerate(self.datasets):
            rows += self._dataset_evals(rng, target, k, ds, sources, len(picks))
        frame = pd.DataFrame(rows)
        frame["suite"] = self.suite
        frame["target"] = target
        frame["seed"] = self.seed
        frame["code_version"] = code_version()
        return frame

    def _dataset_evals(self, rng: np.random.Generator, target: str, k: int,
                       ds: SyntheticDataset, sources: list[tuple[str, int]],
                       n_pre: int) -> list[dict[str, Any]]:
        """Return the steering rows of one dataset (see :meth:`steering_evals`)."""
        sign = 1.0 if ds.higher_is_better else -1.0
        base = 0.4 + 0.1 * k / len(self.datasets)
        toward = 1 if ds.desirable_label is None else ds.desirable_label
        meaning = f"label 1 ({ds.label1_meaning})"
        text = f"toward {meaning}" if toward == 1 else f"away from {meaning}"
        rows = []
        for split in ("dev", "test"):
            rows += self._rows(rng, ds, BASELINE_SOURCE, split, NO_LAYER, 0.0, "none",
                               {"role": "baseline"}, base, 1.0)
        pairs: list[tuple[float, float]] = []
        for name, c in [*sources, (RANDOM_SOURCE, -1)]:
            role = ("random" if c < 0 else "chat" if bool(self.ckpts["is_chat"].iloc[c])
                    else "pretraining")
            label = f"random direction (control), signed as {text}" if c < 0 else text
            params = {"role": role, "step": None if c < 0 else int(self.ckpts["step"].iloc[c])}
            best: tuple[float, int, float] | None = None
            for layer in range(self.n_layers):
                for alpha in ALPHAS:
                    effect = 0.0 if c < 0 else 0.6 * (self.accuracy[c, k, layer] - 0.5)
                    effect *= 2.5 * (1 - np.exp(-alpha / 3))
                    ppl = 1.0 + 0.01 * alpha ** 2 * (1 + layer / self.n_layers)
                    signed = alpha if toward == 1 else -alpha
                    rows += self._rows(rng, ds, name, "dev", layer, signed, label, params,
                                       base + sign * effect, ppl)
                    if ppl <= DEFAULT_PPL_GUARD and (best is None or effect > best[0]):
                        best = (effect, layer, signed)
            effect, layer, signed = best or (0.0, 0, 0.0)
            selected = {**params, "selection": {"on": "dev", "guard": DEFAULT_PPL_GUARD,
                                                "guard_passed": best is not None}}
            ppl = 1.0 + 0.01 * signed ** 2 * (1 + layer / self.n_layers)
            rows += self._rows(rng, ds, name, "test", layer, signed, label, selected,
                               base + sign * effect, ppl)
            gain = effect + rng.normal(0, 0.01)
            rows.append(self._row(ds, name, "gain", "test", layer, signed, label, gain, 0.04,
                                  {**selected, "of": ds.metric, "higher_is_better": True}))
            if role != "random":
                versus = gain + rng.normal(0, 0.01)
                p_value = float(stats.norm.sf(versus / 0.02))
                rows.append(self._row(ds, name, "gain_vs_random", "test", layer, signed, label,
                                      versus, 0.04, {**selected, "of": ds.metric,
                                                     "p_value": p_value,
                                                     "guard_passed": best is not None}))
            if role == "pretraining":
                acc = float(self.accuracy[c, k, layer])
                pairs.append((acc, gain))
        if len(pairs) >= 3:
            r = float(np.corrcoef(np.array(pairs).T)[0, 1])
            rows.append(self._row(ds, CORRELATION_SOURCE, "corr_probe_gain", "test", NO_LAYER,
                                  0.0, "none", r, 0.3, {"role": "correlation"}))
        return rows

    def _rows(self, rng: np.random.Generator, ds: SyntheticDataset, source: str, split: str,
              layer: int, alpha: float, direction: str, params: dict[str, Any],
              value: float, ppl: float) -> list[dict[str, Any]]:
        """Return the primary-metric, ``ppl`` and (steered) ``ppl_ratio`` rows."""
        value = float(np.clip(value + rng.normal(0, 0.01), 0.0, 1.0))
        primary = {**params, "higher_is_better": ds.higher_is_better, "primary": ds.metric}
        rows = [
            self._row(ds, source, ds.metric, split, layer, alpha, direction, value,
                      1.96 * np.sqrt(max(value * (1 - value), 1e-4) / 40), primary),
            self._row(ds, source, "ppl", split, layer, alpha, direction, 30.0 * ppl, 1.5,
                      {**params, "higher_is_better": False}),
        ]
        if source != BASELINE_SOURCE:
            rows.append(self._row(ds, source, "ppl_ratio", split, layer, alpha, direction, ppl,
                                  0.02, {**params, "guard": DEFAULT_PPL_GUARD}))
        return rows

    @staticmethod
    def _row(ds: SyntheticDataset, source: str, metric: str, split: str, layer: int,
             alpha: float, direction: str, value: float, half: float,
             params: dict[str, Any]) -> dict[str, Any]:
        return {
            "vector_source": source, "dataset": ds.name, "metric": metric, "split": split,
            "layer": layer, "alpha": float(alpha), "steer_direction": direction,
            "value": float(value), "ci_lo": float(value - half), "ci_hi": float(value + half),
            "n": 40, "mde": minimum_detectable_effect(half / _Z_CI) if metric.startswith("gain")
            else None,
            "applied_norm": abs(alpha) if layer != NO_LAYER else None,
            "norm_ratio": abs(alpha) / 10 if layer != NO_LAYER else None, "status": "ok",
            "reason": None,
            "params": json.dumps({**params, "synthetic": True}, sort_keys=True),
        }


_STAGE_TABLES: dict[str, Any] = {
    "probe": _Grid.probe_tables,
    "info": lambda grid: {"info_results": grid.info_table},
    "vectors": lambda grid: {"steering_vectors": grid.vector_table()},
}
