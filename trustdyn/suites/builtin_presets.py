"""Presets of the built-in pre-training run: model size, schedule, checkpoints, chat stage.

``smoke`` runs in seconds for tests; ``default`` (8 blocks) pre-trains in about five
minutes on two CPU cores and is what the default study reads (the whole study within 15
minutes); ``classroom`` (12 blocks, wider, longer) keeps its whole study within 45.
Checkpoints are dense early, where the fitting→compression turn happens, and roughly
log-spaced afterwards.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from trustdyn.suites.base import SuiteError


def log_spaced_steps(total: int, count: int) -> tuple[int, ...]:
    """Return ``count`` distinct checkpoint steps from 0 to ``total``.

    After 0 come 1, 2, 3... thinning out roughly geometrically up to ``total``.

    Raises:
        ValueError: if ``count`` is not between 2 and ``total + 1``.

    """
    if not 2 <= count <= total + 1:
        raise ValueError(f"Need 2 <= count <= total + 1 checkpoints, got {count} for {total}")
    # Rounded geometric points collide at small steps; ask for more points until enough
    # distinct ones remain, which fills the early range with every step.
    n_points = count - 1
    while True:
        steps = {round(total ** (i / (n_points - 1))) for i in range(n_points)} if (
            n_points > 1) else {total}
        if len(steps) >= count - 1:
            break
        n_points += 1
    chosen = sorted(steps)
    # Trim surplus points from the dense start (keep the sparse tail as planned).
    while len(chosen) > count - 1:
        gaps = [(chosen[i + 1] - chosen[i - 1], i) for i in range(1, len(chosen) - 1)]
        chosen.pop(min(gaps)[1])
    return (0, *chosen)


@dataclass(frozen=True)
class Preset:
    """Everything that defines a built-in run (with the corpus and code version).

    Attributes:
        name: Preset name; the suite is called ``builtin-<name>``.
        hidden: Model width (``hidden_size``).
        layers: Decoder blocks.
        heads: Attention heads.
        kv_heads: Key/value heads (grouped-query attention when fewer than ``heads``).
        intermediate: MLP width.
        seq_len: Tokens per packed pre-training sequence.
        vocab: BPE vocabulary size requested from the tokenizer trainer.
        steps: Pre-training optimiser steps.
        batch_size: Sequences per pre-training step.
        lr: Peak learning rate.
        warmup_steps: Linear warmup steps before the cosine decay.
        min_lr_ratio: Final learning rate as a fraction of ``lr``.
        checkpoints: Steps saved as checkpoints, from 0 (the initialisation) to ``steps``.
        chat_steps: Supervised chat fine-tuning steps after the last checkpoint.
        chat_batch_size: Examples per chat step.
        chat_lr: Peak chat learning rate.
        seed: Seed for initialisation, data order, splits and the chat mixture.
        corpus_lines: Read only the first lines of each corpus text file (tiny presets).
        heldout_fraction: Fraction of passages and glosses held out of all training.
        heldout_seqs: Held-out sequences the held-out loss averages over.
        weight_decay: AdamW weight decay on matrices (not on norms).

    """

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    seq_len: int
    vocab: int
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    min_lr_ratio: float
    checkpoints: tuple[int, ...]
    chat_steps: int
    chat_batch_size: int
    chat_lr: float
    seed: int = 0
    corpus_lines: int | None = None
    heldout_fraction: float = 0.05
    heldout_seqs: int = 64
    weight_decay: float = 0.1

    def __post_init__(self) -> None:
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError(f"Preset {self.name!r}: heads must divide hidden and kv_heads "
                             "must divide heads")
        ckpts = list(self.checkpoints)
        if ckpts != sorted(set(ckpts)) or ckpts[0] != 0 or ckpts[-1] != self.steps:
            raise ValueError(f"Preset {self.name!r}: checkpoints must be increasing, start "
                             f"at 0 and end at steps={self.steps}")
        if not 0 < self.heldout_fraction < 1 or self.warmup_steps >= self.steps:
            raise ValueError(f"Preset {self.name!r}: need 0 < heldout_fraction < 1 and "
                             "warmup_steps < steps")

    @property
    def tokens_per_step(self) -> int:
        """Tokens read per optimiser step."""
        return self.batch_size * self.seq_len

    def lr_at(self, step: int) -> float:
        """Learning rate of optimiser step ``step`` (1-based): warmup, then cosine."""
        if step <= self.warmup_steps:
            return self.lr * step / self.warmup_steps
        progress = (step - self.warmup_steps) / (self.steps - self.warmup_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)

    def to_json(self) -> dict[str, Any]:
        """Return the preset as JSON-ready values (tuples become lists)."""
        values = asdict(self)
        values["checkpoints"] = list(self.checkpoints)
        return values


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="smoke", hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64,
            seq_len=32, vocab=384, steps=20, batch_size=8, lr=3e-3, warmup_steps=4,
            min_lr_ratio=0.1, checkpoints=log_spaced_steps(20, 6), chat_steps=6,
            chat_batch_size=8, chat_lr=1e-3, corpus_lines=400, heldout_fraction=0.1,
            heldout_seqs=8,
        ),
        Preset(
            name="default", hidden=96, layers=8, heads=4, kv_heads=2, intermediate=288,
            seq_len=128, vocab=4096, steps=480, batch_size=16, lr=3e-3, warmup_steps=30,
            min_lr_ratio=0.1, checkpoints=log_spaced_steps(480, 20), chat_steps=150,
            chat_batch_size=32, chat_lr=1e-3, heldout_seqs=64,
        ),
        Preset(
            name="classroom", hidden=128, layers=12, heads=4, kv_heads=2, intermediate=384,
            seq_len=128, vocab=4096, steps=800, batch_size=16, lr=2e-3, warmup_steps=50,
            min_lr_ratio=0.1, checkpoints=log_spaced_steps(800, 24), chat_steps=300,
            chat_batch_size=32, chat_lr=1e-3, heldout_seqs=96,
        ),
    )
}


def get_preset(name: str, seed: int | None = None) -> Preset:
    """Return the preset called ``name`` (with ``seed`` substituted if given).

    Raises:
        SuiteError: for an unknown name, listing the presets.

    """
    if name not in PRESETS:
        raise SuiteError(f"Unknown built-in preset {name!r}; choose one of: "
                         + ", ".join(PRESETS))
    preset = PRESETS[name]
    return preset if seed is None else replace(preset, seed=seed)
