"""The conditions' vector sources: pre-training checkpoints, the chat model, a random control.

Vectors come from the study file's ``steering_vectors`` rows (the random control: a seeded
random unit direction with the chat vector's scale at each layer; the optional contrastive
source beyond the paper: vectors the caller computed on the chat model with
:mod:`~trustdyn.evaluation.contrastive`), scaled in the unit the
evaluation asks for (:data:`~trustdyn.evaluation.config.SCALINGS`); the module also holds
the sign conventions (toward the card's desirable label, both signs when it has none), the
words stored in ``steer_direction`` and the yardstick of applied norms (the chat model's
mean residual norm per layer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import pandas as pd
from torch import nn

from trustdyn.activations import extract_activations
from trustdyn.datasets import DatasetCard
from trustdyn.evaluation.contrastive import ContrastiveVectors
from trustdyn.schema import CONTRASTIVE_SOURCE, RANDOM_SOURCE
from trustdyn.steering import SteeringVector, random_vector, vector_from_row


@dataclass(frozen=True)
class VectorSource:
    """Where a condition's vectors come from, one vector per candidate layer.

    Attributes:
        name: The ``vector_source`` column (checkpoint name, ``"random"`` or
            ``"contrastive"``).
        role: ``"pretraining"``, ``"chat"``, ``"random"`` or
            :data:`~trustdyn.schema.CONTRASTIVE_SOURCE`.
        step: Pre-training step of the checkpoint (chat: its base step), if known.
        vectors: Vector per layer, its ``scale`` the unit of α.
        source_sigma: Per layer, the σ of the source checkpoint's own statements projected
            onto its direction (the paper's unit; the random control has none of its
            own and carries the chat model's).
        recipe: How vectors that the study file does not store were made (the
            contrastive source), stored in the ``params`` of every row; empty otherwise.

    """

    name: str
    role: str
    step: int | None
    vectors: Mapping[int, SteeringVector] = field(default_factory=dict)
    source_sigma: Mapping[int, float] = field(default_factory=dict)
    recipe: Mapping[str, Any] = field(default_factory=dict)


def every_kth(names: Sequence[str], k: int) -> list[str]:
    """Return every ``k``-th name from the first, always including the last one."""
    chosen = list(names[::k])
    if names and names[-1] not in chosen:
        chosen.append(names[-1])
    return chosen


def build_sources(vectors: pd.DataFrame, *, suite: str, chat: str,
                  pretraining: Sequence[tuple[str, int | None]], layers: Sequence[int],
                  chat_step: int | None, seed: int, scaling: str = "target",
                  contrastive: ContrastiveVectors | None = None) -> list[VectorSource]:
    """Return the conditions' vector sources: pre-training checkpoints, chat, contrastive, random.

    Args:
        vectors: ``steering_vectors`` rows of one dataset, with directions.
        suite: Suite name.
        chat: The target chat checkpoint's name.
        pretraining: ``(name, step)`` of the pre-training checkpoints to use, in order
            (the chat checkpoint is skipped if listed: its vector is the chat source).
        layers: Candidate layers.
        chat_step: Base step of the chat model, if known.
        seed: Seed of the random control (layer ℓ uses ``seed + ℓ``).
        scaling: ``"target"``: every vector's scale becomes the chat model's σ at its
            layer (same applied norm at the same α); ``"source-sigma"``: each keeps its
            own checkpoint's σ (the paper's).
        contrastive: The chat model's contrastive vectors at ``layers``, if evaluated
            (scaled like every other source; its own σ is the ``source_sigma``).

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

    chat_vectors = load(chat)
    target_sigma = {ell: v.scale for ell, v in chat_vectors.items()}

    def source(name: str, role: str, step: int | None, vectors: Mapping[int, SteeringVector],
               recipe: Mapping[str, Any] | None = None) -> VectorSource:
        own_sigma = {ell: v.scale for ell, v in vectors.items()}
        if scaling == "target":
            vectors = {ell: replace(v, scale=target_sigma[ell]) for ell, v in vectors.items()}
        return VectorSource(name, role, step, vectors, own_sigma, recipe or {})

    sources = [source(name, "pretraining", step, load(name))
               for name, step in pretraining if name != chat]
    sources.append(source(chat, "chat", chat_step, chat_vectors))
    if contrastive is not None:
        missing = sorted(set(layers) - set(contrastive.vectors))
        if missing:
            raise ValueError(f"No contrastive vector at layer(s) {missing}.")
        sources.append(source(CONTRASTIVE_SOURCE, CONTRASTIVE_SOURCE, None,
                              {ell: contrastive.vectors[ell] for ell in layers},
                              contrastive.recipe))
    control = {ell: random_vector(v, seed=seed + ell) for ell, v in chat_vectors.items()}
    return [*sources, VectorSource(RANDOM_SOURCE, "random", None, control, target_sigma)]


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


def residual_norms(model: nn.Module, tokenizer: Any, texts: Sequence[str], *,
                   batch_size: int = 32) -> dict[int, float]:
    """Return the model's mean residual-stream L2 norm per layer, over ``texts``.

    The norm of each decoder block's output at each text's last token, averaged over the
    texts: the yardstick a steering vector's applied norm is reported against.
    """
    acts = extract_activations(model, tokenizer, texts, batch_size=batch_size)
    return {ell: float(norm) for ell, norm in enumerate(acts.blocks.norm(dim=-1).mean(dim=1))}
