"""Sizes and grids of the offline steering evaluation (see :mod:`trustdyn.evaluation`).

:class:`EvalConfig` fixes everything that changes stored steering numbers: how many
evaluation items and passages, which layers, which strength ladder, which checkpoints'
vectors, the perplexity guard, bootstrap and judge sizes, the seed. Three grids exist:
``smoke`` (tests), ``reduced`` (the default study's time budget on two CPU cores) and
``full`` (public suites, meant for GPUs). The grid name is stored with every row.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from trustdyn.schema import DEFAULT_PPL_GUARD, EVAL_GRIDS, SCALINGS, Positions


@dataclass(frozen=True)
class EvalConfig:
    """Sizes and grids of the steering evaluation (stored with every row).

    Attributes:
        name: Grid name: ``"smoke"`` (tests), ``"reduced"`` (the default study's time
            budget and ``classroom``'s) or ``"full"`` (public suites, meant for GPUs).
        n_items: Evaluation items sampled per dataset from its held-out pool (``None`` =
            the whole pool), split into dev and test.
        dev_fraction: Share of items (and passages) in the dev split.
        n_passages: Held-out corpus passages for the perplexity guard (dev + test).
        passage_words: Passages are cut to their first words.
        layers: Candidate layers per dataset, centred on the chat model's best probe
            layer plus the middle layer (``None`` = every layer).
        alphas: Strength ladder, in units of ``scaling`` (positive; the sign comes from
            the desirable label). Vector scales differ a lot between datasets (the
            default built-in chat model's ToxiGen σ is ~10× its TruthfulQA σ), so the
            ladder is geometric and wide and the perplexity guard cuts it per vector.
        scaling: Unit of α, one of :data:`SCALINGS`. ``target`` makes the applied L2 norm
            the same for every source at a given α (a step-0 vector is not inert merely
            because its checkpoint's σ is tiny); ``source-sigma`` is the paper's.
        positions: Where the vector is added, in generation, likelihood scoring and the
            perplexity guard alike: ``"newest"`` (the prompt's last token and every
            token after it, the paper's generation hook) or ``"all"``.
        stop_at_guard: Stop climbing the ladder of a (source, sign, layer) at the first
            strength over the guard.
        max_scored: Score only the strongest ``max_scored`` strengths inside the guard on
            the task (``None`` = all of them); the others store perplexity rows only.
        checkpoint_stride: Use every k-th pre-training checkpoint's vector (the last one
            always).
        ppl_guard: Largest allowed dev perplexity as a multiple of the unsteered model's.
        n_bootstrap: Bootstrap replicates per interval.
        judge_train: ToxiGen rows to train the local toxicity judge on.
        judge_test: ToxiGen rows to measure the judge's accuracy on.
        max_new_tokens: Length of each generated continuation (toxicity).
        generate_on_dev: Also generate continuations for every dev candidate (otherwise
            generation-based metrics are test-only).
        stereoset_kind: StereoSet part: ``"inter"``, ``"intra"`` or ``"all"``.
        contrastive_pairs: Most statement pairs (four chat-format prompts each) the
            contrastive (CAA) source is computed from (``None`` = every pair; see
            :mod:`~trustdyn.evaluation.contrastive`).
        batch_size: Sequences per forward pass when scoring.
        seed: Seed of sampling, splits, random controls, judge and bootstraps.

    """

    name: str = "reduced"
    n_items: int | None = 200
    dev_fraction: float = 0.4
    n_passages: int = 24
    passage_words: int = 40
    layers: int | None = 2
    alphas: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    scaling: str = "target"
    positions: Positions = "newest"
    stop_at_guard: bool = True
    max_scored: int | None = 1
    checkpoint_stride: int = 7
    ppl_guard: float = DEFAULT_PPL_GUARD
    n_bootstrap: int = 1000
    judge_train: int = 1500
    judge_test: int = 500
    max_new_tokens: int = 16
    generate_on_dev: bool = False
    stereoset_kind: str = "inter"
    contrastive_pairs: int | None = 128
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.dev_fraction < 1:
            raise ValueError(f"dev_fraction must be in (0, 1), got {self.dev_fraction}")
        if not self.alphas or any(a <= 0 for a in self.alphas):
            raise ValueError(f"alphas must be positive strengths, got {self.alphas}")
        if self.max_scored is not None and self.max_scored < 1:
            raise ValueError(f"max_scored must be >= 1 or None, got {self.max_scored}")
        if self.contrastive_pairs is not None and self.contrastive_pairs < 1:
            raise ValueError(f"contrastive_pairs must be >= 1 or None, got "
                             f"{self.contrastive_pairs}")
        if self.checkpoint_stride < 1 or self.ppl_guard <= 1:
            raise ValueError("checkpoint_stride must be >= 1 and ppl_guard > 1")
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {', '.join(SCALINGS)}, got "
                             f"{self.scaling!r}")
        if self.positions not in ("newest", "all"):
            raise ValueError(f"positions must be 'newest' or 'all', got {self.positions!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-ready values."""
        values = dataclasses.asdict(self)
        values["alphas"] = list(self.alphas)
        return values


# Keyed by the light names in trustdyn.schema (what study configs are checked against).
EVAL_PRESETS: dict[str, EvalConfig] = dict(zip(EVAL_GRIDS, (
    EvalConfig(name="smoke", n_items=12, dev_fraction=0.5, n_passages=6,
               passage_words=24, layers=1,
               alphas=(0.5, 2.0), max_scored=1, checkpoint_stride=3,
               n_bootstrap=100, judge_train=300, judge_test=100, max_new_tokens=6,
               contrastive_pairs=8),
    EvalConfig(),
    EvalConfig(name="full", n_items=400, dev_fraction=0.5, n_passages=48,
               passage_words=48, layers=None,
               alphas=(0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
               max_scored=None, checkpoint_stride=1, judge_train=3000,
               judge_test=1000, max_new_tokens=24, stereoset_kind="all",
               contrastive_pairs=256),
), strict=True))
"""Grids. ``reduced`` is the default study's: 200 items per dataset (per question kind for
TruthfulQA), 80 on dev and 120 on test, enough for a minimum detectable effect of about 10
points on a paired share, also ``classroom``'s; ``full`` for public suites (meant for GPUs)."""
