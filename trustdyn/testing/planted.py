"""Simulated studies with known answers, for measuring the verdicts' error rates.

Null studies carry no effect but temporally structured noise (white, random walk, AR(1),
a monotone trend); planted studies add a known effect (separation from a given step, a
rise-then-fall turn). Both go through the store and the verdict code the pipeline uses.
Simulated steering evaluations (vectors against the same-norm random direction on shared
items) calibrate the "helps" verdict the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from trustdyn.datasets import BUILTIN_DATASETS
from trustdyn.evaluation.metrics import column_mean, paired_bootstrap
from trustdyn.findings import information_finding, probe_details
from trustdyn.probes import balanced_accuracy, bootstrap_counts, weighted_balanced_accuracy
from trustdyn.schema import ALL_CHECKPOINTS, PER_CHECKPOINT_STAGES, TURNS_STAGE, Unit, study_units
from trustdyn.store import Store
from trustdyn.suites.builtin_presets import PRESETS
from trustdyn.verdicts import helps_verdict, turn_table

NULL_FAMILIES: tuple[str, ...] = ("white", "random_walk", "ar0.5", "ar0.8", "ar0.95",
                                  "monotone")
"""Noise over checkpoints with no effect: the verdicts must stay quiet on every one."""
STEPS: tuple[int, ...] = PRESETS["default"].checkpoints
"""The default study's checkpoint schedule."""
DEFAULT_LAYERS: int = PRESETS["default"].layers
"""The default study's decoder blocks (the calibration's small shape; Amber's 32 the big)."""
ESTIMATORS: tuple[str, ...] = ("renyi", "nhsic")


@dataclass(frozen=True)
class Plan:
    """One simulated study.

    Attributes:
        family: Noise over checkpoints (one of :data:`NULL_FAMILIES`).
        n_layers: Layers per checkpoint.
        n_datasets: Datasets in one study (the verdicts' level is shared among them).
        effect: Planted effect: the probe's rise in balanced accuracy at its middle layers
            (separation), or the turn's height in units of the curve's noise (turn); 0 for
            a null study.
        onset: Checkpoint index where the planted separation starts, or the turn peaks.
        n_items: Probe test items per dataset (in pairs: a group holds one of each label).
        n_bootstrap: Bootstrap replicates for the probe's standard errors.

    """

    family: str
    n_layers: int
    n_datasets: int = len(BUILTIN_DATASETS)
    effect: float = 0.0
    onset: int = 8
    n_items: int = 180
    n_bootstrap: int = 200


def noise_paths(family: str, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Return ``[m, *shape]`` noise over ``m`` checkpoints with the family's time structure."""
    e = rng.standard_normal(shape)
    m = shape[0]
    if family == "white":
        return e
    if family == "random_walk":
        return np.cumsum(e, axis=0)
    if family.startswith("ar"):
        phi = float(family[2:])
        out = np.empty_like(e)
        out[0] = e[0]
        for t in range(1, m):
            out[t] = phi * out[t - 1] + np.sqrt(1 - phi**2) * e[t]
        return out
    if family == "monotone":
        trend = np.linspace(0.0, 3.0, m).reshape((m,) + (1,) * (len(shape) - 1))
        return trend + e
    raise ValueError(f"unknown noise family {family!r}; choose one of {NULL_FAMILIES}")


def _checkpoints(suite: str) -> pd.DataFrame:
    return pd.DataFrame({
        "suite": suite, "checkpoint": [f"step-{s:04d}" for s in STEPS],
        "ordinal": np.arange(len(STEPS)), "step": list(STEPS), "tokens": None,
        "source": "planted", "is_chat": False,
    })


def _register(store: Store, suite: str, plan: Plan, n_datasets: int) -> list[str]:
    names = [f"d{k}" for k in range(n_datasets)]
    store.put_suite(suite, description=f"SYNTHETIC planted study ({plan})",
                    chat_checkpoint=None, config={"synthetic": True, "datasets": names},
                    checkpoints=_checkpoints(suite))
    store.put_datasets([{"name": n, "dimension": n, "label1_meaning": "planted",
                         "desirable_label": 1, "rows": plan.n_items,
                         "description": "SYNTHETIC", "source": "trustdyn.testing.planted",
                         "license": "n/a"} for n in names])
    return names


def _ramp(plan: Plan) -> np.ndarray:
    """``[m]`` 0 before the onset, rising to 1 over four checkpoints after it."""
    return np.clip((np.arange(len(STEPS)) - plan.onset + 1) / 4.0, 0.0, 1.0)


def _probe_rows(rng: np.random.Generator, plan: Plan, suite: str, dataset: str
                ) -> pd.DataFrame:
    """Balanced accuracy and its grouped-bootstrap se of simulated probe scores."""
    m, n_layers, n = len(STEPS), plan.n_layers, plan.n_items
    labels = np.tile([0, 1], n // 2)
    groups = np.repeat(np.arange(n // 2), 2)
    # Scores: noise shared by a group, by all layers and per layer, each with the family's
    # structure over checkpoints, plus the planted signal at the middle layers.
    shared = noise_paths(plan.family, rng, (m, 1, n // 2))[..., groups]
    layer = noise_paths(plan.family, rng, (m, n_layers, n))
    scores = 0.6 * shared + 0.8 * layer
    scores = scores - scores.mean(axis=2, keepdims=True)  # a refitted intercept
    middle = np.zeros(n_layers)
    middle[n_layers // 4: max(n_layers // 4 + 1, 3 * n_layers // 4)] = 1.0
    # Classes 2 Φ⁻¹(0.5 + effect) spreads apart: balanced accuracy 0.5 + effect.
    spread = scores.std(axis=2, keepdims=True)
    shift = 2.0 * _probit(0.5 + plan.effect) if plan.effect else 0.0
    scores = scores + shift * spread * (_ramp(plan)[:, None, None] * middle[None, :, None]) * (
        labels - 0.5)
    y = torch.from_numpy(labels)
    logits = torch.from_numpy(scores.reshape(m * n_layers, n))
    counts, _ = bootstrap_counts(n, plan.n_bootstrap, rng, groups)
    correct = ((logits > 0) == y.bool()).to(torch.float64)
    value = balanced_accuracy(logits, y).numpy()
    se = np.nanstd(weighted_balanced_accuracy(correct, y, counts).numpy(), axis=1)
    return pd.DataFrame({
        "suite": suite, "checkpoint": np.repeat([f"step-{s:04d}" for s in STEPS], n_layers),
        "dataset": dataset, "layer": np.tile(np.arange(n_layers), m), "accuracy": value,
        "balanced_accuracy": value, "balanced_accuracy_se": se, "n_test": n,
        "n_test_groups": n // 2, "seed": 0, "params": '{"synthetic": true}',
    })


def _probit(p: float) -> float:
    return float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))


def _info_rows(rng: np.random.Generator, plan: Plan, suite: str, dataset: str
               ) -> pd.DataFrame:
    """Null-corrected I(X;T) and I(T;Y) curves; layer 0 is X itself (undefined)."""
    m, n_layers = len(STEPS), plan.n_layers
    shape = (m, len(ESTIMATORS), n_layers)
    ixt = 0.6 * noise_paths(plan.family, rng, (m, 1, 1)) + 0.8 * noise_paths(plan.family, rng,
                                                                               shape)
    peak = plan.onset
    tent = np.concatenate([np.linspace(0, 1, peak + 1), np.linspace(1, 0, m - peak)[1:]])
    turning = np.zeros(n_layers)
    turning[1: max(2, n_layers // 2 + 1)] = 1.0
    ixt = ixt + plan.effect * tent[:, None, None] * turning[None, None, :]
    ixt[:, :, 0] = np.nan  # X is block 0's output
    ity = np.linspace(0.0, 1.0, m)[:, None, None] + 0.1 * rng.standard_normal(shape)
    t, e, layer = (a.reshape(-1) for a in np.indices(shape))
    frames = []
    for quantity, values in (("I(X;T)", ixt.reshape(-1)), ("I(T;Y)", ity.reshape(-1))):
        defined = np.isfinite(values)
        frames.append(pd.DataFrame({
            "suite": suite, "checkpoint": np.array([f"step-{s:04d}" for s in STEPS])[t],
            "dataset": dataset, "layer": layer, "estimator": np.array(ESTIMATORS)[e],
            "quantity": quantity, "value": values + 0.2,
            "null_mean": np.where(defined, 0.2, np.nan),
            "null_std": np.where(defined, 0.01, np.nan), "corrected": values,
            "se": np.where(defined, 0.1, np.nan),
            "status": np.where(defined, "ok", "undefined"),
            "reason": [None if ok else "T is X itself" for ok in defined],
            "unit": "bits", "n": 256, "seed": 0, "params": '{"synthetic": true}',
        }))
    return pd.concat(frames, ignore_index=True)


def write_planted_study(store: Store, suite: str, plan: Plan, kind: str, *,
                        replicates: int = 1, seed: int = 0) -> None:
    """Write ``replicates`` simulated studies of ``kind`` (``separation`` or ``turn``).

    They form one suite whose datasets are the studies' datasets side by side. Turns are
    tested at the level of a study of ``plan.n_datasets`` datasets, as the pipeline's turn
    stage would.
    """
    rng = np.random.default_rng(seed)
    plan_datasets = plan.n_datasets * replicates
    names = _register(store, suite, plan, plan_datasets)
    checkpoints = [f"step-{s:04d}" for s in STEPS]
    if kind == "separation":
        probes = pd.concat([_probe_rows(rng, plan, suite, d) for d in names])
        store.write_units(study_units(suite, checkpoints, names, ["probe"], None),
                          {"probe_results": probes}, seconds=0.0)
    elif kind == "turn":
        estimates = pd.concat([_info_rows(rng, plan, suite, d) for d in names])
        store.write_units([u for u in study_units(suite, checkpoints, names, ["info"], None)
                           if u.stage in PER_CHECKPOINT_STAGES],
                          {"info_results": estimates}, seconds=0.0)
        info = store.info_results(suite)
        turns = [row for name, frame in info.groupby("dataset", sort=False)
                 for row in turn_table(suite, str(name), frame, n_datasets=plan.n_datasets,
                                       seed=seed)]
        store.write_units([Unit(suite, ALL_CHECKPOINTS, n, TURNS_STAGE) for n in names],
                          {"info_turns": turns}, seconds=0.0)
    else:
        raise ValueError(f"kind must be 'separation' or 'turn', got {kind!r}")


def study_verdicts(store: Store, suite: str, kind: str, n_datasets: int) -> pd.Series:
    """Return, per dataset, whether the story reports the effect (emergence, or a turn).

    ``n_datasets`` is the size of the study the verdicts' level is shared among.
    """
    if kind == "separation":
        details = probe_details(store.probe_grid(suite, None), n_datasets=n_datasets)
        return details.set_index("dataset")["onset"].notna()
    details = information_finding(store.info_turns(suite)).details
    return details.set_index("dataset")["turning"] > 0


def error_rates(path: str, kind: str, plans: Sequence[Plan], n_studies: int, seed: int = 0
                ) -> pd.DataFrame:
    """Simulate ``n_studies`` studies per plan into one file; rates of reported effects.

    Returns:
        One row per plan: ``family``, ``n_layers``, ``effect``, ``per_dataset`` (share of
        datasets the story reports) and ``per_study`` (share of studies reporting any).

    """
    store = Store(path)
    rows = []
    for p, plan in enumerate(plans):
        suite = f"{kind}-{p}"
        write_planted_study(store, suite, plan, kind, replicates=n_studies,
                            seed=seed * 1_000_003 + p)
        reported = study_verdicts(store, suite, kind, plan.n_datasets)
        by_study = reported.reindex([f"d{k}" for k in range(plan.n_datasets * n_studies)])
        flags = by_study.fillna(False).to_numpy(bool).reshape(n_studies, plan.n_datasets)
        rows.append({"family": plan.family, "n_layers": plan.n_layers, "effect": plan.effect,
                     "per_dataset": float(flags.mean()),
                     "per_study": float(flags.any(axis=1).mean()), "studies": n_studies})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class SteeringPlan:
    """Simulated steering evaluations: vectors against the same-norm random direction.

    Each item's outcome under a condition is ``1[ρ d + √(1 − ρ²) ε < t]`` with a shared
    item difficulty ``d`` and independent noise ``ε`` (both standard normal), so
    conditions agree on most items as steered runs of one model do; ``t`` sets the
    condition's rate.

    Attributes:
        n_datasets: Datasets in one study (the verdict's level is shared among them).
        n_sources: Pre-training vectors per dataset, tested against the random direction.
        n_items: Test items per dataset.
        base_rate: Share of items the random direction gets right.
        item_correlation: ρ, how strongly two conditions' outcomes share the item.
        effect: Planted rise of that share for ``planted_sources`` of the vectors; 0 for
            a null study.
        planted_sources: Vectors carrying the effect.
        n_bootstrap: Bootstrap replicates per paired gain.

    """

    n_datasets: int = len(BUILTIN_DATASETS)
    n_sources: int = 8
    n_items: int = 120
    base_rate: float = 0.5
    item_correlation: float = 0.8
    effect: float = 0.0
    planted_sources: int = 1
    n_bootstrap: int = 1000


def _outcomes(rng: np.random.Generator, difficulty: np.ndarray, rate: float, rho: float
              ) -> np.ndarray:
    latent = rho * difficulty + np.sqrt(1.0 - rho * rho) * rng.standard_normal(difficulty.shape)
    return (latent < _probit(rate)).astype(float)[:, None]


def helps_rates(plan: SteeringPlan, n_studies: int, seed: int = 0) -> dict[str, float]:
    """Return the shares of datasets and of studies where some vector "helps".

    Every dataset's vectors go through the evaluation's paired bootstrap against the
    random direction and :func:`trustdyn.verdicts.helps_verdict`, as in the pipeline.
    """
    rng = np.random.default_rng(seed)
    flags = np.zeros((n_studies, plan.n_datasets), dtype=bool)
    for study in range(n_studies):
        for dataset in range(plan.n_datasets):
            difficulty = rng.standard_normal(plan.n_items)
            control = _outcomes(rng, difficulty, plan.base_rate, plan.item_correlation)
            for source in range(plan.n_sources):
                shift = plan.effect if source < plan.planted_sources else 0.0
                table = _outcomes(rng, difficulty, plan.base_rate + shift,
                                  plan.item_correlation)
                gain = paired_bootstrap(table, control, column_mean(0), np.subtract,
                                        n_boot=plan.n_bootstrap, seed=int(rng.integers(2**31)))
                flags[study, dataset] |= helps_verdict(
                    gain.p, True, n_sources=plan.n_sources, n_datasets=plan.n_datasets)
    return {"per_dataset": float(flags.mean()), "per_study": float(flags.any(axis=1).mean()),
            "studies": n_studies}
