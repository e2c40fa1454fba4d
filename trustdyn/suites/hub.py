"""Named public checkpoint suites on the Hugging Face hub (for users with network and a GPU).

Each suite is a base repository whose pre-training checkpoints are hub revisions
(branches), in step order, plus the chat model fine-tuned from it. :func:`public_suite`
turns a name into a :class:`~trustdyn.suites.base.Suite` of hub refs, optionally narrowed
by a :class:`~trustdyn.suites.selection.RevisionSelection`. Nothing is downloaded here:
weights are fetched (and hashed) when the pipeline loads each checkpoint through
:func:`trustdyn.suites.loading.load_checkpoint`, which also honours the
``TRUSTDYN_HUB_MIRROR`` folder for air-gapped machines.

Steps and token counts come from the model cards, cited next to each table below. Where a
card gives only a rule (an interval, a batch size), the revision list is generated from
that rule, and the comment says so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from trustdyn.suites.base import CheckpointRef, Suite, SuiteError
from trustdyn.suites.selection import RevisionSelection, select_revisions


@dataclass(frozen=True)
class HubRevision:
    """One pre-training checkpoint of a public suite.

    Attributes:
        name: Checkpoint name within the suite (usually the revision itself).
        revision: Hub revision (branch) to load.
        step: Optimiser step, or the checkpoint index where the card gives no steps.
        tokens: Pre-training tokens seen, if known (approximate where noted in ``note``).
        repo: Repository override for revisions published in a sibling repository.
        note: Provenance caveat stored with the checkpoint (e.g. "tokens approximate").

    """

    name: str
    revision: str
    step: int
    tokens: int | None = None
    repo: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class PublicSuiteSpec:
    """A public suite: a base repository, its ordered revisions and its chat model.

    Attributes:
        name: Suite name used by the registry, e.g. ``"amber"``.
        repo: Base repository id.
        description: One line for the dashboard.
        revisions: Known checkpoints in step order.
        chat_repo: Repository of the fine-tuned chat model, if any.
        chat_step: Step of the checkpoint the chat model was fine-tuned from, -1 if unknown.
        source: Where the revision list and token counts come from.
        parse: For suites with more revisions than listed: maps a revision name to a
            :class:`HubRevision`, or ``None`` if the name does not follow the suite's scheme.

    """

    name: str
    repo: str
    description: str
    revisions: tuple[HubRevision, ...]
    chat_repo: str | None = None
    chat_step: int = -1
    source: str = ""
    parse: Callable[[str], HubRevision | None] | None = field(default=None, compare=False)


def _plain(names_steps: Sequence[tuple[str, int]], tokens_per_step: int,
           repo: str | None = None) -> tuple[HubRevision, ...]:
    return tuple(HubRevision(name, name, step, step * tokens_per_step, repo)
                 for name, step in names_steps)


# --- LLM360 Amber --------------------------------------------------------------------
# Model card (huggingface.co/LLM360/Amber, README "Loading Amber"): revisions "ckpt_000"
# to "ckpt_358"; no revision (main) loads "ckpt_359", the final checkpoint. The card's
# DataMix table totals 1259.13B tokens, released as 360 equal data chunks with one
# checkpoint after each, so ckpt_i has seen about (i + 1) / 360 of them (~3.5B per chunk).
# The card gives no optimiser steps, so `step` is the checkpoint index. AmberChat is
# fine-tuned from the final checkpoint (step 359). A 2026 survey of hub refs lists the same
# branches under IFM/Amber; if the LLM360 id stops resolving, that is the one to try.
AMBER_TOKENS = 1_259_130_000_000
AMBER_CHUNKS = 360


def _amber_revisions() -> tuple[HubRevision, ...]:
    note = "step = checkpoint index (one per data chunk); tokens approximate (equal chunks)"
    revs = [
        HubRevision(f"ckpt_{i:03d}", "main" if i == AMBER_CHUNKS - 1 else f"ckpt_{i:03d}", i,
                    round(AMBER_TOKENS * (i + 1) / AMBER_CHUNKS), note=note)
        for i in range(AMBER_CHUNKS)
    ]
    return tuple(revs)


# --- SmolLM2-135M ---------------------------------------------------------------------
# Model card (huggingface.co/HuggingFaceTB/SmolLM2-135M-intermediate-checkpoints): "the
# checkpoint every 240000 steps which correspond to ~250B tokens", revisions "step-N", and
# "The GBS (Global Batch Size) in token of SmolLM2-135M is 1 048 576 ... nb_tokens =
# nb_step * GBS". The card does not list the branches; the list below is generated from
# that interval up to 8 x 240000 steps (~2.0T tokens, the 135M model's training budget),
# which matches the 8 branches a public survey of the repository's refs reported. Which
# base checkpoint SmolLM2-135M-Instruct was tuned from is not stated, so its step is -1.
SMOLLM2_GBS = 1_048_576
SMOLLM2_INTERVAL = 240_000
SMOLLM2_COUNT = 8


# --- OLMo-2 1B (0425) -----------------------------------------------------------------
# Model card (huggingface.co/allenai/OLMo-2-0425-1B): pre-training revisions are named
# `stage1-stepXXX-tokensYYYB` (e.g. "stage1-step140000-tokens294B"), annealing ones
# `stage2-ingredientN-stepXXX-tokensYYYB`; `main` is the final model (a soup of the three
# stage-2 ingredients), which OLMo-2-0425-1B-Instruct is fine-tuned from. Tokens per step
# are 2,097,152 (4096 x 512); every published label equals ceil(step * 2097152 / 1e9),
# e.g. step1907359 -> 4001B, step950000 -> 1993B, step23100 -> 49B. The repository holds
# ~267 irregularly spaced branches, so the list below is the dense early run from the
# sibling repository allenai/OLMo-2-0425-1B-early-training (every 1000 steps, 0-36000)
# followed by stage-1 branches of the main repository seen in public use, and `main`.
# Any other `stage1-stepN-tokensMB` name is accepted when a selection names it.
OLMO2_TOKENS_PER_STEP = 2_097_152
OLMO2_REPO = "allenai/OLMo-2-0425-1B"
OLMO2_EARLY_REPO = "allenai/OLMo-2-0425-1B-early-training"
OLMO2_STAGE1_END = 1_907_359
OLMO2_STAGE2_STEPS = 23_852
_OLMO2_STAGE1_STEPS = (50_000, 90_000, 120_000, 140_000, 480_000, 950_000, 1_020_000,
                       1_840_000, OLMO2_STAGE1_END)
_OLMO2_PATTERN = re.compile(r"stage1-step(\d+)-tokens(\d+)B")


def olmo2_revision_name(step: int) -> str:
    """Return the OLMo-2 stage-1 branch name of ``step`` (the token label is rounded up)."""
    return f"stage1-step{step}-tokens{math.ceil(step * OLMO2_TOKENS_PER_STEP / 1e9)}B"


def _olmo2_parse(name: str) -> HubRevision | None:
    match = _OLMO2_PATTERN.fullmatch(name)
    if match is None or olmo2_revision_name(int(match[1])) != name:
        return None
    step = int(match[1])
    return HubRevision(name, name, step, step * OLMO2_TOKENS_PER_STEP)


def _olmo2_revisions() -> tuple[HubRevision, ...]:
    early = [HubRevision(olmo2_revision_name(s), olmo2_revision_name(s), s,
                         s * OLMO2_TOKENS_PER_STEP, repo=OLMO2_EARLY_REPO)
             for s in range(0, 36_001, 1000)]
    late = [HubRevision(olmo2_revision_name(s), olmo2_revision_name(s), s,
                        s * OLMO2_TOKENS_PER_STEP) for s in _OLMO2_STAGE1_STEPS]
    final_step = OLMO2_STAGE1_END + OLMO2_STAGE2_STEPS
    final = HubRevision("main", "main", final_step, final_step * OLMO2_TOKENS_PER_STEP,
                        note="soup of three stage-2 annealing runs of 23852 steps each")
    return (*early, *late, final)


# --- Pythia-160M ----------------------------------------------------------------------
# Pythia model cards (huggingface.co/EleutherAI/pythia-160m): 154 checkpoints, branches
# step0, step1, step2, step4, ..., step512 (log-spaced) and step1000 to step143000 every
# 1000 steps; `main` equals step143000. Batch 1024 x 2048 tokens = 2,097,152 per step.
PYTHIA_TOKENS_PER_STEP = 2_097_152


def _pythia_steps() -> list[int]:
    return [0] + [2 ** k for k in range(10)] + list(range(1000, 143_001, 1000))


PUBLIC_SUITES: dict[str, PublicSuiteSpec] = {
    spec.name: spec
    for spec in (
        PublicSuiteSpec(
            name="amber",
            repo="LLM360/Amber",
            description="LLM360 Amber 7B: 360 checkpoints over 1.26T tokens, with AmberChat "
                        "(the setting of Qian et al. 2024).",
            revisions=_amber_revisions(),
            chat_repo="LLM360/AmberChat",
            chat_step=AMBER_CHUNKS - 1,
            source="huggingface.co/LLM360/Amber model card",
        ),
        PublicSuiteSpec(
            name="smollm2-135m",
            repo="HuggingFaceTB/SmolLM2-135M-intermediate-checkpoints",
            description="SmolLM2-135M: a checkpoint every 240k steps (~250B tokens), with "
                        "SmolLM2-135M-Instruct.",
            revisions=_plain([(f"step-{SMOLLM2_INTERVAL * k}", SMOLLM2_INTERVAL * k)
                              for k in range(1, SMOLLM2_COUNT + 1)], SMOLLM2_GBS),
            chat_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
            source="huggingface.co/HuggingFaceTB/SmolLM2-135M-intermediate-checkpoints card",
        ),
        PublicSuiteSpec(
            name="olmo2-1b",
            repo=OLMO2_REPO,
            description="OLMo-2 1B (0425): dense early stage-1 checkpoints, later stage-1 "
                        "ones and the final soup, with OLMo-2-0425-1B-Instruct.",
            revisions=_olmo2_revisions(),
            chat_repo="allenai/OLMo-2-0425-1B-Instruct",
            chat_step=OLMO2_STAGE1_END + OLMO2_STAGE2_STEPS,
            source="huggingface.co/allenai/OLMo-2-0425-1B model card",
            parse=_olmo2_parse,
        ),
        PublicSuiteSpec(
            name="pythia-160m",
            repo="EleutherAI/pythia-160m",
            description="Pythia-160M: 154 checkpoints (log-spaced to step 512, then every "
                        "1000 steps to 143000); no chat model.",
            revisions=_plain([(f"step{s}", s) for s in _pythia_steps()],
                             PYTHIA_TOKENS_PER_STEP),
            source="huggingface.co/EleutherAI/pythia-160m model card",
        ),
    )
}


def _parsed(spec: PublicSuiteSpec, wanted: Sequence[str]) -> list[HubRevision]:
    """Return revisions named in ``wanted`` that the table lacks but the suite's scheme allows."""
    if spec.parse is None:
        return []
    known = {r.name for r in spec.revisions} | {r.revision for r in spec.revisions}
    found = (spec.parse(name) for name in wanted if name not in known)
    return [rev for rev in found if rev is not None]


def _ref(spec: PublicSuiteSpec, rev: HubRevision) -> CheckpointRef:
    extra: dict[str, str] = {"card": spec.source}
    if rev.note:
        extra["note"] = rev.note
    return CheckpointRef(suite=spec.name, name=rev.name, step=rev.step, tokens=rev.tokens,
                         source=rev.repo or spec.repo, revision=rev.revision, extra=extra)


def _chat_ref(spec: PublicSuiteSpec) -> CheckpointRef | None:
    if spec.chat_repo is None:
        return None
    return CheckpointRef(suite=spec.name, name=spec.chat_repo.split("/")[-1],
                         step=spec.chat_step, source=spec.chat_repo, revision="main",
                         is_chat=True, extra={"card": spec.source})


def public_suite(name: str, selection: RevisionSelection | None = None) -> Suite:
    """Return the public suite ``name`` as hub refs (no download happens here).

    Args:
        name: One of :data:`PUBLIC_SUITES` (``amber``, ``smollm2-135m``, ``olmo2-1b``,
            ``pythia-160m``).
        selection: Which revisions to keep (default: all). Named revisions may be
            checkpoint names or hub revisions, and, for suites with a naming scheme
            (OLMo-2), revisions the table does not list.

    Raises:
        SuiteError: for an unknown suite or revision (listing what exists), or a
            selection that keeps nothing.

    """
    spec = PUBLIC_SUITES.get(name)
    if spec is None:
        raise SuiteError(
            f"Unknown public suite {name!r}; known: {', '.join(sorted(PUBLIC_SUITES))}."
        )
    selection = selection or RevisionSelection()
    revs = sorted([*spec.revisions, *_parsed(spec, selection.revisions or ())],
                  key=lambda r: r.step)
    suite = Suite(name=spec.name, description=spec.description,
                  checkpoints=tuple(_ref(spec, r) for r in revs), chat=_chat_ref(spec))
    return select_revisions(suite, selection)
