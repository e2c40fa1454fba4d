"""The conditions' vector sources: pre-training checkpoints, the chat model, a random control.

Vectors come from the study file's ``steering_vectors`` rows (the random control: a seeded
random unit direction with the chat vector's scale at each layer); the module also holds
the sign conventions (toward the card's desirable label, both signs when it has none) and
the words stored in ``steer_direction``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd
import torch

from trustdyn.datasets import DatasetCard
from trustdyn.schema import RANDOM_SOURCE
from trustdyn.steering import SteeringVector, random_vector


@dataclass(frozen=True)
class VectorSource:
    """Where a condition's vectors come from, one vector per candidate layer.

    Attributes:
        name: The ``vector_source`` column (checkpoint name, or ``"random"``).
        role: ``"pretraining"``, ``"chat"`` or ``"random"``.
        step: Pre-training step of the checkpoint (chat: its base step), if known.
        vectors: Vector per layer.

    """

    name: str
    role: str
    step: int | None
    vectors: Mapping[int, SteeringVector] = field(default_factory=dict)


def vector_from_row(row: Mapping[str, Any], suite: str) -> SteeringVector:
    """Rebuild a :class:`SteeringVector` from a ``steering_vectors`` row."""
    params = row.get("params")
    return SteeringVector(
        direction=torch.from_numpy(np.asarray(row["direction"], dtype=np.float32)),
        scale=float(row["scale"]), layer=int(row["layer"]), dataset=str(row["dataset"]),
        toward_label=int(row["toward_label"]), source=f"{suite}/{row['checkpoint']}",
        model=str(row["model"]), revision=None if pd.isna(row.get("revision")) else
        str(row["revision"]), hidden_size=int(row["hidden_size"]), site=str(row["site"]),
        operation=str(row["operation"]), meta={"params": params} if params else {},
    )


def every_kth(names: Sequence[str], k: int) -> list[str]:
    """Return every ``k``-th name from the first, always including the last one."""
    chosen = list(names[::k])
    if names and names[-1] not in chosen:
        chosen.append(names[-1])
    return chosen


def build_sources(vectors: pd.DataFrame, *, suite: str, chat: str,
                  pretraining: Sequence[tuple[str, int | None]], layers: Sequence[int],
                  chat_step: int | None, seed: int) -> list[VectorSource]:
    """Return the conditions' vector sources: pre-training checkpoints, chat, random.

    Args:
        vectors: ``steering_vectors`` rows of one dataset, with directions.
        suite: Suite name.
        chat: The target chat checkpoint's name.
        pretraining: ``(name, step)`` of the pre-training checkpoints to use, in order
            (the chat checkpoint is skipped if listed: its vector is the chat source).
        layers: Candidate layers.
        chat_step: Base step of the chat model, if known.
        seed: Seed of the random control (layer ℓ uses ``seed + ℓ``).

    Raises:
        ValueError: if a needed vector is missing.

    """
    records = cast(list[dict[str, Any]], vectors.to_dict(orient="records"))
    by_key = {(str(r["checkpoint"]), int(r["layer"])): r for r in records}

    def load(checkpoint: str) -> dict[int, SteeringVector]:
        missing = [ell for ell in layers if (checkpoint, ell) not in by_key]
        if missing:
            raise ValueError(f"No stored steering vector of checkpoint {checkpoint!r} at "
                             f"layer(s) {missing}; run the vectors stage first.")
        return {ell: vector_from_row(by_key[(checkpoint, ell)], suite) for ell in layers}

    sources = [VectorSource(name, "pretraining", step, load(name))
               for name, step in pretraining if name != chat]
    own = VectorSource(chat, "chat", chat_step, load(chat))
    control = {ell: random_vector(v, seed=seed + ell) for ell, v in own.vectors.items()}
    return [*sources, own, VectorSource(RANDOM_SOURCE, "random", None, control)]


def candidate_layers(n_layers: int, probe_accuracy: Mapping[int, float] | None,
                     count: int | None) -> list[int]:
    """Return candidate layers: the best probe layer and the middle one, then neighbours.

    Args:
        n_layers: Decoder blocks of the chat model.
        probe_accuracy: Probe test accuracy by layer (the chat model's), if known.
        count: How many layers (``None`` or ``>= n_layers`` = all).

    """
    if count is None or count >= n_layers:
        return list(range(n_layers))
    middle = n_layers // 2
    best = middle
    if probe_accuracy:
        best = max(sorted(probe_accuracy), key=lambda ell: probe_accuracy[ell])
    chosen = [best] if best == middle else [best, middle]
    offset = 1
    while len(chosen) < count and offset < n_layers:
        for ell in (best - offset, best + offset):
            if 0 <= ell < n_layers and ell not in chosen and len(chosen) < count:
                chosen.append(ell)
        offset += 1
    return sorted(chosen[:count])


def target_labels(card: DatasetCard) -> tuple[int, ...]:
    """Labels to steer toward: the desirable one, or both (reference sign 1 first)."""
    return (card.desirable_label,) if card.desirable_label is not None else (1, 0)


def direction_text(card: DatasetCard, toward: int, role: str) -> str:
    """Return the ``steer_direction`` string, e.g. ``"away from label 1 (toxic)"``."""
    meaning = card.label1_meaning or "label 1"
    text = (f"toward label 1 ({meaning})" if toward == 1
            else f"away from label 1 ({meaning})")
    return f"random direction (control), signed as {text}" if role == "random" else text
