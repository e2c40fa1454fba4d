"""Per-unit computations: turn one checkpoint's activations into result-table rows.

Each stage function takes the suite, the checkpoint, a prepared dataset and its
activations, and returns ``{table name: rows}`` for :meth:`trustdyn.store.Store.write_unit`.
Every row carries what it needs to be reproduced: seed, sizes, estimator parameters and
the code version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from precompute.study import INFO_X, StudyConfig
from trustdyn.activations import Activations
from trustdyn.datasets import (
    ProbeDataset,
    Split,
    load_study_dataset,
    sample_dataset,
    split_dataset,
)
from trustdyn.information import information_grid
from trustdyn.probes import fit_probe_grid
from trustdyn.provenance import code_version
from trustdyn.steering import mean_difference_vectors
from trustdyn.suites import CheckpointRef, LoadOptions, Suite, SuiteError
from trustdyn.verdicts import turn_table


@dataclass(frozen=True)
class PreparedDataset:
    """A dataset sampled and split once per study, so every checkpoint sees the same rows.

    Attributes:
        dataset: The sampled dataset.
        split: Probe train/test indices into ``dataset`` (train = vector-fitting rows).
        info_rows: Indices of the fixed sample used for information estimates.
    """

    dataset: ProbeDataset
    split: Split
    info_rows: np.ndarray


def prepare_dataset(name: str, config: StudyConfig) -> PreparedDataset:
    """Load, sample and split a study's dataset (builtin or the user's) with its seed."""
    full = load_study_dataset(name, config.user_datasets)
    dataset = (sample_dataset(full, config.n_per_dataset, seed=config.seed)
               if config.n_per_dataset else full)
    split = split_dataset(dataset, test_fraction=config.test_fraction, seed=config.seed)
    rng = np.random.default_rng(config.seed)
    n_info = min(config.info_n, len(dataset))
    info = np.sort(rng.choice(len(dataset), size=n_info, replace=False))
    return PreparedDataset(dataset=dataset, split=split, info_rows=info)


def _indices(rows: np.ndarray) -> torch.Tensor:
    """Return row indices as a tensor of its own (split arrays are shared and read-only)."""
    return torch.from_numpy(np.array(rows))


def study_layers(config: StudyConfig, n_layers: int) -> list[int]:
    """Return the decoder blocks the study computes, in order, for a model with ``n_layers``.

    Raises:
        SuiteError: the study names a block the model does not have.
    """
    if config.layers is None:
        return list(range(n_layers))
    missing = [layer for layer in config.layers if layer >= n_layers]
    if missing:
        raise SuiteError(f"layers {missing} do not exist: this model has {n_layers} decoder "
                         f"blocks (0 to {n_layers - 1}); fix the study's layers")
    return sorted(config.layers)


def _study_blocks(acts: Activations, config: StudyConfig) -> tuple[torch.Tensor, list[int]]:
    """Return the study's blocks ``[k, n, d]`` of ``acts`` and their layer ids."""
    ids = study_layers(config, acts.n_layers)
    return (acts.blocks if config.layers is None else acts.blocks[ids]), ids


def _key(suite: Suite, ref: CheckpointRef, prepared: PreparedDataset) -> dict[str, Any]:
    return {"suite": suite.name, "checkpoint": ref.name, "dataset": prepared.dataset.name}


def probe_rows(suite: Suite, ref: CheckpointRef, prepared: PreparedDataset,
               acts: Activations, config: StudyConfig) -> dict[str, Any]:
    """Fit the per-layer probe grid; rows for ``probe_results`` and ``probe_directions``."""
    labels = prepared.dataset.labels
    train, test = _indices(prepared.split.train), _indices(prepared.split.test)
    y = torch.tensor(np.asarray(labels), dtype=torch.long)
    # Fit where the model ran: on a GPU worker the probe grid is far faster there.
    chosen, ids = _study_blocks(acts, config)
    blocks = chosen.to(LoadOptions(device=config.device).torch_device())
    groups = prepared.dataset.groups
    grid = fit_probe_grid(
        blocks[:, train.to(blocks.device)], y[train], blocks[:, test.to(blocks.device)], y[test],
        seed=config.seed, n_bootstrap=config.n_bootstrap,
        test_groups=None if groups is None else groups[prepared.split.test],
    )
    key = _key(suite, ref, prepared)
    results = []
    for row in grid.to_rows():
        solver = {"n_iter": row.pop("n_iter"), "converged": row.pop("converged")}
        results.append({
            **key, **row, "layer": ids[row["layer"]],
            "seed": config.seed,
            "params": {**grid.params, **solver, "pooling": acts.pooling, "site": acts.site,
                       "study": config.digest()},
            "code_version": code_version(),
        })
    directions = [
        {**key, "layer": layer, "direction": grid.directions[position]}
        for position, layer in enumerate(ids)
    ]
    return {"probe_results": results, "probe_directions": directions}


def info_rows(suite: Suite, ref: CheckpointRef, prepared: PreparedDataset,
              acts: Activations, config: StudyConfig) -> dict[str, Any]:
    """Estimate I(X;T) and I(T;Y) per layer on the fixed information sample."""
    rows = prepared.info_rows
    chosen, ids = _study_blocks(acts, config)
    if config.info_x == "block0":
        x, x_layer = acts.blocks[0, rows], 0
    else:
        x, x_layer = acts.embeddings[rows], None
    groups = prepared.dataset.groups
    estimates = information_grid(
        chosen[:, rows], x, prepared.dataset.labels[rows], layers=ids,
        seed=config.seed, n_permutations=config.n_permutations,
        groups=None if groups is None else groups[rows], n_resamples=config.n_resamples,
        x_is_layer=x_layer, device=LoadOptions(device=config.device).torch_device(),
    )
    key = _key(suite, ref, prepared)
    return {"info_results": [
        {
            **key,
            "layer": e.layer, "estimator": e.estimator, "quantity": e.quantity,
            "value": e.value, "null_mean": e.null_mean, "null_std": e.null_std,
            "corrected": e.corrected, "z": e.z, "se": e.se,
            "corrected_lo": e.corrected_lo, "corrected_hi": e.corrected_hi,
            "status": e.status, "reason": e.reason,
            "unit": e.unit, "n": len(rows), "seed": config.seed,
            "params": {**e.params, "x": INFO_X[config.info_x], "study": config.digest()},
            "code_version": code_version(),
        }
        for e in estimates
    ]}


def vector_rows(suite: Suite, ref: CheckpointRef, prepared: PreparedDataset,
                acts: Activations, config: StudyConfig) -> dict[str, Any]:
    """Mean-difference steering vectors per layer from the vector-fitting (train) split."""
    train = prepared.split.train
    chosen, ids = _study_blocks(acts, config)
    vectors = mean_difference_vectors(
        chosen[:, _indices(train)], prepared.dataset.labels[train],
        dataset=prepared.dataset.name, source=f"{suite.name}/{ref.name}",
        model=ref.source, revision=ref.revision,
        meta={"seed": config.seed, "n": len(train), "study": config.digest()},
    )
    key = _key(suite, ref, prepared)
    return {"steering_vectors": [
        {
            **key,
            "layer": ids[v.layer], "direction": v.direction.numpy(), "scale": v.scale,
            "toward_label": v.toward_label, "site": v.site, "operation": v.operation,
            "hidden_size": v.hidden_size, "model": v.model, "revision": v.revision,
            "n": len(train), "seed": config.seed,
            "params": {"method": "mean_difference", "scale": "std of projections",
                       "split": "probe train", "study": config.digest()},
            "code_version": code_version(),
        }
        for v in vectors
    ]}


def turn_rows(suite: str, dataset: str, info: pd.DataFrame,
              config: StudyConfig) -> list[dict[str, Any]]:
    """Test the dataset's I(X;T) curves for a fitting → compression turn; ``info_turns`` rows."""
    rows = turn_table(suite, dataset, info, n_datasets=len(config.datasets), seed=config.seed)
    for row in rows:
        row["params"] = {**row["params"], "study": config.digest()}
        row["code_version"] = code_version()
    return rows
