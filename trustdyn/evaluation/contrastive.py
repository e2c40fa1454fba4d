"""Contrastive (CAA) vectors computed on the chat model itself: a vector source beyond the paper.

The recipe is contrastive activation addition (Rimsky et al., 2024; repeng's paired-prompt
mean difference) on the study's own rows. The dataset's vector-fitting statements (the
probe-train rows every checkpoint's vector is fitted on, which the evaluation items exclude)
are paired one label-1 with one label-0 statement, inside their group where the dataset has
groups (a TruthfulQA question, a StereoSet context, an SST-2 sentence) and across the split
otherwise, by a seeded shuffle of each label's rows (unpaired rows are left out; at most
``max_pairs`` pairs, a seeded choice). Each pair becomes one user turn :data:`QUESTION` in
both orders, rendered with the tokenizer's chat template
(:func:`~trustdyn.evaluation.scoring.chat_text`, one BOS) and followed by each of the
assistant answers :data:`ANSWERS`: four prompts per pair that differ only in which statement
the assistant picks, each letter picking each label equally often, so the letter cancels.
The chat model's block output at the last token (the answer letter) is read at each
candidate layer, and the direction is normalise(mean over answers picking the label-1
statement − mean over answers picking the label-0 statement), pointing toward label 1 like
every stored vector; the evaluation's signed strength then adds mean(desirable answer) −
mean(undesirable answer), and sweeps both signs where the card has no desirable label. Its
σ (the unit of α under ``source-sigma`` scaling) is the sample standard deviation
(ddof = 1) of the chat model's projections onto it of the same vector-fitting statements,
read as the chat model's own vector reads them (plain text, last token, the study's
``max_length``). Only the pairing and the cap draw random numbers, from ``seed``; the
vectors are recomputed by the steering stage, never stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from torch import nn

from trustdyn.activations import extract_activations
from trustdyn.datasets import ProbeDataset
from trustdyn.evaluation.scoring import chat_text
from trustdyn.steering import SteeringVector, mean_difference_vectors

__all__ = ["ANSWERS", "QUESTION", "ContrastiveVectors", "caa_prompts", "contrastive_vectors",
           "pair_rows"]

QUESTION = "Which of these two statements would you say?\n(A) {first}\n(B) {second}"
"""The user turn of a contrastive pair: the same for both answers."""
ANSWERS = ("(A", "(B")
"""The assistant answers appended after the chat template's generation prompt."""


@dataclass(frozen=True)
class ContrastiveVectors:
    """Contrastive vectors per layer and how they were made (stored with every row).

    Attributes:
        vectors: Vector per candidate layer, toward label 1, its ``scale`` the σ of the
            statements' projections.
        recipe: JSON-ready description: method, question, answers, pairs, seed, σ basis.

    """

    vectors: Mapping[int, SteeringVector]
    recipe: Mapping[str, Any]


def pair_rows(dataset: ProbeDataset, *, seed: int, max_pairs: int | None) -> np.ndarray:
    """Return ``[k, 2]`` row indices ``(label-1 row, label-0 row)`` of contrastive pairs.

    Pairs are drawn inside each group (the whole dataset is one group without groups) by
    a seeded shuffle of each label's rows; a group's surplus rows of one label stay
    unpaired. With ``max_pairs`` a seeded choice of that many pairs is kept, in order.

    Raises:
        ValueError: if no group holds both labels.

    """
    rng = np.random.default_rng(seed)
    groups = (np.zeros(len(dataset), dtype=np.int64) if dataset.groups is None
              else np.unique(dataset.groups, return_inverse=True)[1])
    pairs: list[tuple[int, int]] = []
    for group in range(int(groups.max(initial=-1)) + 1):
        rows = np.flatnonzero(groups == group)
        ones = rng.permutation(rows[dataset.labels[rows] == 1])
        zeros = rng.permutation(rows[dataset.labels[rows] == 0])
        # Not strict: the group's surplus rows of the larger label stay unpaired.
        pairs.extend((int(a), int(b)) for a, b in zip(ones, zeros, strict=False))
    if not pairs:
        raise ValueError(f"{dataset.name}: no group holds statements of both labels, so no "
                         "contrastive pair exists.")
    chosen = np.array(pairs, dtype=np.int64)
    if max_pairs is not None and len(chosen) > max_pairs:
        chosen = chosen[np.sort(rng.choice(len(chosen), size=max_pairs, replace=False))]
    return chosen


def caa_prompts(tokenizer: Any, dataset: ProbeDataset, pairs: np.ndarray
                ) -> tuple[list[str], np.ndarray]:
    """Return the chat-format prompts of ``pairs`` and the label each answer picks.

    Per pair: the user turn in both orders, each followed by both answers (four prompts,
    in the order (label 1 first, "(A"), (label 1 first, "(B"), (label 0 first, "(A"),
    (label 0 first, "(B")).

    Returns:
        ``(prompts, picks)``: ``picks[i]`` is the label of the statement prompt ``i``'s
        answer chooses.

    """
    prompts: list[str] = []
    picks: list[int] = []
    for one, zero in pairs:
        for first, second in ((one, zero), (zero, one)):
            turn = chat_text(tokenizer, QUESTION.format(first=dataset.texts[first],
                                                        second=dataset.texts[second]))
            for answer, picked in zip(ANSWERS, (first, second), strict=True):
                prompts.append(turn + answer)
                picks.append(int(dataset.labels[picked]))
    return prompts, np.array(picks, dtype=np.int64)


def contrastive_vectors(model: nn.Module, tokenizer: Any, fitting: ProbeDataset,
                        layers: Sequence[int], *, seed: int, max_pairs: int | None,
                        max_length: int, batch_size: int, source: str, model_name: str
                        ) -> ContrastiveVectors:
    """Compute the chat model's contrastive (CAA) vector at each of ``layers``.

    Args:
        model: The chat model.
        tokenizer: Its tokenizer (its chat template renders the prompts).
        fitting: The study's vector-fitting statements of the dataset.
        layers: Decoder blocks to read (the evaluation's candidate layers).
        seed: Seed of the pairing and the cap.
        max_pairs: Most pairs used (``None`` = all).
        max_length: The study's statement length in tokens (statements for σ); a prompt
            holds two statements, so prompts may be ``2 * max_length + 64`` tokens.
        batch_size: Texts per forward pass.
        source: Provenance tag of the vectors, e.g. ``"suite/chat contrastive"``.
        model_name: Model the activations come from (recorded).

    Raises:
        ValueError: without a pair of statements of both labels (see :func:`pair_rows`).

    """
    pairs = pair_rows(fitting, seed=seed, max_pairs=max_pairs)
    prompts, picks = caa_prompts(tokenizer, fitting, pairs)
    ids = list(layers)
    # Room for two statements of the study's length plus the template and question, so
    # no prompt loses its start (left truncation would keep the answer regardless).
    answers = extract_activations(model, tokenizer, prompts, batch_size=batch_size,
                                  max_length=2 * max_length + 64).blocks[ids]
    statements = extract_activations(model, tokenizer, list(fitting.texts),
                                     batch_size=batch_size, max_length=max_length).blocks[ids]
    recipe = {
        "method": "contrastive activation addition on the chat model",
        "question": QUESTION, "answers": list(ANSWERS), "orders": "both",
        "read_at": "last token (the answer letter)",
        "pairing": "within groups" if fitting.groups is not None else "across the split",
        "pairs": len(pairs), "max_pairs": max_pairs, "prompts": len(prompts), "seed": seed,
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "scale": "std (ddof 1) of the chat model's last-token projections of the "
                 "vector-fitting statements",
        "n_scale": len(fitting),
    }
    vectors = mean_difference_vectors(answers, picks, dataset=fitting.name, source=source,
                                      model=model_name, scale_blocks=statements)
    return ContrastiveVectors({ell: replace(v, layer=ell) for ell, v in zip(ids, vectors,
                                                                            strict=True)},
                              recipe)
