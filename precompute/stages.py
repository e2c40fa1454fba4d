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

from precompute.study import StudyConfig
from trustdyn.activations import Activations
from trustdyn.datasets import ProbeDataset, Split, load_dataset, sample_dataset, split_dataset
from trustdyn.information import information_grid
from trustdyn.probes import fit_probe_grid
from trustdyn.provenance import code_version
from trustdyn.steering import mean_difference_vectors
from trustdyn.suites import CheckpointRef, LoadOptions, Suite
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
    """Load, sample and split a builtin dataset with the study's seed."""
    full = load_dataset(name)
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


def _key(suite: Suite, ref: CheckpointRef, prepared: PreparedDataset) -> dict[str, Any]:
    return {"suite": suite.name, "checkpoint": ref.name, "dataset": prepared.dataset.name}


def probe_rows(suite: Suite, ref: CheckpointRef, prepared: PreparedDataset,
               acts: Activations, config: StudyConfig) -> dict[str, Any]:
    """Fit the per-layer probe grid; rows for ``probe_results`` and ``probe_directions``."""
    labels = prepared.dataset.labels
    train, test = _indices(prepared.split.train), _indices(prepared.split.test)
    y = torch.tensor(np.asarray(labels), dtype=torch.long)
    # Fit where the model ran: on a GPU worker the probe grid is far faster there.
    blocks = acts.blocks.to(LoadOptions(device=config.device).torch_device())
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
            **key, **row,
            "seed": config.seed,
            "params": {**grid.params, **solver, "pooling": acts.pooling, "site": acts.site,
                       "study": config.digest()},
            "code_version": code_version(),
        })
    directions = [
        {**key, "layer": layer, "direction": grid.directions[layer]}
        for layer in range(grid.directions.shape[0])
    ]
    return {"probe_results": results, "probe_directions": directions}


INFO_X = {"block0": "output of decoder block 0 at the pooled position",
          "embedding": "token embedding at the pooled position"}
"""The choices of X for I(X;T), as recorded in each row's ``params``."""


def info_rows(suite: Suite, ref: CheckpointRef, prepared: PreparedDataset,
              acts: Activations, config: StudyConfig) -> dict[str, Any]:
    """Estimate I(X;T) and I(T;Y) per layer on the fixed information sample."""
    rows = prepared.info_rows
    if config.info_x == "block0":
        x, x_layer = acts.blocks[0, rows], 0
    else:
        x, x_layer = acts.embeddings[rows], None
    groups = prepared.dataset.groups
    estimates = information_grid(
        acts.blocks[:, rows], x, prepared.dataset.labels[rows],
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
    vectors = mean_difference_vectors(
        acts.blocks[:, _indices(train)], prepared.dataset.labels[train],
        dataset=prepared.dataset.name, source=f"{suite.name}/{ref.name}",
        model=ref.source, revision=ref.revision,
        meta={"seed": config.seed, "n": len(train), "study": config.digest()},
    )
    key = _key(suite, ref, prepared)
    return {"steering_vectors": [
        {
            **key,
            "layer": v.layer, "direction": v.direction.numpy(), "scale": v.scale,
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
