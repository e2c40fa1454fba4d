"""Vectors out and in: stored mean-difference vectors as safetensors and GGUF control vectors.

:func:`export_vectors` reads one (suite, checkpoint, dataset)'s stored vectors, orients
them toward a label (by default the dataset card's desirable one) and gives them the unit of
strength the study's steering uses (:data:`SCALINGS`: ``target`` = the chat model's
projection σ at the layer, the steering table's default; ``source-sigma`` = the
checkpoint's own σ, the paper's; ``unit`` = the bare unit direction). It writes a trustdyn
safetensors file (:func:`trustdyn.steering.save_vectors`, every layer, provenance in the
metadata) and a GGUF control vector as llama.cpp and repeng read it: architecture
``controlvector``, ``controlvector.model_hint``, ``controlvector.layer_count`` and one F32
tensor ``direction.<N>`` = ``scale · direction`` per layer, so strength 1 in llama.cpp is
α = 1 in the chosen unit. Layer numbering: llama.cpp adds ``direction.N`` to the output of
decoder block N (0-based, its loader rejects N = 0) and repeng names its layers the same way,
which is trustdyn's layer N, so N is written unchanged and layer 0 goes to the safetensors
file only. :func:`read_vector_file` reads either kind of file (any llama.cpp or repeng
control vector too) back as :class:`~trustdyn.steering.SteeringVector` objects whose
``scale`` is the tensor's norm, so α = 1 adds the file's vector as it is.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import gguf
import numpy as np
import pandas as pd
import torch

from trustdyn.schema import SCALINGS as STUDY_SCALINGS
from trustdyn.steering import (
    SteeringError,
    SteeringVector,
    load_vectors,
    oriented,
    save_vectors,
    vector_from_row,
)
from trustdyn.store import Store, StoreError

SCALINGS: tuple[str, ...] = (*STUDY_SCALINGS, "unit")
"""Units of strength an export can carry: the study's two, or the bare unit direction."""

ARCHITECTURE = "controlvector"
"""``general.architecture`` of a GGUF control vector."""

SUFFIXES = (".safetensors", ".gguf")
"""The two files :func:`export_vectors` writes, by suffix."""

_TRUSTDYN_KEYS = ("dataset", "source", "scaling", "toward_label")
"""``trustdyn.*`` GGUF keys (ignored by llama.cpp and repeng, read back by trustdyn)."""


class VectorExportError(ValueError):
    """A user-facing problem with a vector export or a vector file."""


@dataclass(frozen=True)
class VectorRequest:
    """Which stored vectors to export and how.

    Attributes:
        suite: Study suite.
        checkpoint: Checkpoint whose vectors are exported.
        dataset: Probe dataset they were derived from.
        layers: Layers to export (``None``: every stored layer).
        scaling: Unit of strength, one of :data:`SCALINGS`.
        toward_label: Label a positive strength moves toward (``None``: the dataset card's
            desirable label, label 1 for a dataset without one).

    """

    suite: str
    checkpoint: str
    dataset: str
    layers: tuple[int, ...] | None = None
    scaling: str = "target"
    toward_label: int | None = None


@dataclass(frozen=True)
class VectorExport:
    """What :func:`export_vectors` wrote.

    Attributes:
        safetensors: The trustdyn safetensors file (every chosen layer).
        gguf: The GGUF control vector.
        gguf_layers: Layers written to the GGUF file.
        skipped: Layers left out of the GGUF file (layer 0: llama.cpp cannot steer it).
        toward_label: The label a positive strength moves toward.

    """

    safetensors: Path
    gguf: Path
    gguf_layers: tuple[int, ...]
    skipped: tuple[int, ...]
    toward_label: int


def parse_layers(text: str) -> tuple[int, ...] | None:
    """Parse ``"all"`` (→ ``None``) or a list like ``"3,5-7"`` (→ ``(3, 5, 6, 7)``).

    Raises:
        VectorExportError: for anything else, with an example.

    """
    if text.strip() == "all":
        return None
    layers: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None or (match[2] is not None and int(match[2]) < int(match[1])):
            raise VectorExportError(f"Cannot read layers {text!r}; write e.g. '3', '3,5-7' "
                                    "or 'all'.")
        layers += range(int(match[1]), int(match[2] or match[1]) + 1)
    return tuple(dict.fromkeys(layers))


def stored_vectors(store: Store, request: VectorRequest) -> list[SteeringVector]:
    """Return the requested stored vectors, oriented and scaled, in layer order.

    Raises:
        VectorExportError: naming what is missing (study file, suite, checkpoint, dataset,
            layers, the chat model's vectors for ``target``) and what exists instead.

    """
    if request.scaling not in SCALINGS:
        raise VectorExportError(f"Unknown scaling {request.scaling!r}; use one of "
                                f"{', '.join(SCALINGS)}.")
    try:
        suites = store.suites()
    except StoreError as exc:
        raise VectorExportError(str(exc)) from exc
    if request.suite not in set(suites["suite"]):
        raise VectorExportError(f"The study has no suite {request.suite!r}; it has "
                                f"{', '.join(suites['suite']) or 'none'}.")
    frame = store.steering_vectors(request.suite, request.dataset)  # no directions: cheap
    sigma = _sigmas(store, frame, request, request.checkpoint)
    layers = list(sigma) if request.layers is None else list(request.layers)
    missing = [ell for ell in layers if ell not in sigma]
    if missing:
        raise VectorExportError(f"No stored {request.dataset} vector of {request.checkpoint} "
                                f"at layer(s) {missing}; stored layers are {sorted(sigma)}.")
    unit = _units(store, frame, request, suites, sigma, layers)
    toward = _toward_label(store, request)
    vectors = []
    for ell in layers:
        row = store.steering_vector(request.suite, request.checkpoint, request.dataset, ell)
        assert row is not None  # listed in ``frame`` a moment ago
        vec = vector_from_row(row, request.suite)
        # The checkpoint's own σ stays in the metadata so a file's strengths can be converted.
        vectors.append(oriented(replace(vec, scale=unit[ell], meta={
            **vec.meta, "scaling": request.scaling, "source_sigma": sigma[ell]}), toward))
    return vectors


def _sigmas(store: Store, frame: pd.DataFrame, request: VectorRequest, checkpoint: str
            ) -> dict[int, float]:
    """Return ``checkpoint``'s stored σ by layer from ``frame`` (or say what exists)."""
    mine = frame[frame["checkpoint"] == checkpoint]
    if mine.empty:
        others = store.steering_vectors(request.suite)
        have = others.loc[others["checkpoint"] == checkpoint, "dataset"].unique()
        where = (f"it has vectors for {', '.join(sorted(have))}" if len(have) else
                 f"checkpoints with {request.dataset} vectors: "
                 f"{', '.join(frame['checkpoint'].unique()) or 'none'}")
        raise VectorExportError(f"No {request.dataset} vectors of {request.suite}/"
                                f"{checkpoint} in the study; {where}.")
    return {int(ell): float(scale) for ell, scale in zip(mine["layer"], mine["scale"],
                                                         strict=True)}


def _units(store: Store, frame: pd.DataFrame, request: VectorRequest, suites: pd.DataFrame,
           sigma: dict[int, float], layers: list[int]) -> dict[int, float]:
    """Return the unit of strength at each layer for the request's scaling."""
    if request.scaling != "target":
        return {ell: 1.0 if request.scaling == "unit" else sigma[ell] for ell in layers}
    chat = suites.loc[suites["suite"] == request.suite, "chat_checkpoint"].iloc[0]
    if not isinstance(chat, str) or not chat:
        raise VectorExportError(f"Suite {request.suite} has no chat model, so there is no "
                                "target σ; use --scaling source-sigma or unit.")
    target = _sigmas(store, frame, request, chat)
    missing = [ell for ell in layers if ell not in target]
    if missing:
        raise VectorExportError(f"The chat model {chat} has no {request.dataset} vector at "
                                f"layer(s) {missing} to take σ from; use --scaling "
                                "source-sigma.")
    return {ell: target[ell] for ell in layers}


def _toward_label(store: Store, request: VectorRequest) -> int:
    """Return the request's label, or the dataset card's desirable one (else label 1)."""
    if request.toward_label is not None:
        if request.toward_label not in (0, 1):
            raise VectorExportError(f"toward_label must be 0 or 1, got {request.toward_label}.")
        return request.toward_label
    cards = store.datasets()
    desirable = cards.loc[cards["dataset"] == request.dataset, "desirable_label"]
    return 1 if desirable.empty or pd.isna(desirable.iloc[0]) else int(desirable.iloc[0])


# --------------------------------------------------------------------------- files


def output_paths(out: Path) -> tuple[Path, Path]:
    """Return the safetensors and GGUF paths for the output stem ``out``.

    A trailing ``.safetensors`` or ``.gguf`` on ``out`` is replaced, so either file's name
    can be given.
    """
    stem = out.with_suffix("") if out.suffix in SUFFIXES else out
    safetensors, gguf_file = (stem.parent / f"{stem.name}{suffix}" for suffix in SUFFIXES)
    return safetensors, gguf_file


def export_vectors(store: Store, request: VectorRequest, out: Path,
                   *, force: bool = False) -> VectorExport:
    """Write the requested vectors as ``<out>.safetensors`` and ``<out>.gguf``.

    Everything is checked before either file is written; both are written to temporary
    files first and renamed into place together.

    Raises:
        VectorExportError: for a bad request (see :func:`stored_vectors`), existing files
            without ``force``, or no layer the GGUF file can hold (only layer 0 chosen).

    """
    paths = output_paths(out)
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise VectorExportError(f"{' and '.join(existing)} already exist(s); pass --force to "
                                "replace, or choose another --out.")
    vectors = stored_vectors(store, request)
    kept = [v for v in vectors if v.layer > 0]
    if not kept:
        raise VectorExportError("Layer 0 cannot go into a GGUF control vector (llama.cpp "
                                "steers the outputs of blocks 1 and up); choose other layers.")
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=paths[0].parent, prefix=".trustdyn-") as tmp:
        staged = [Path(tmp) / p.name for p in paths]
        save_vectors(staged[0], vectors)
        write_control_vector(staged[1], kept)
        for temp, final in zip(staged, paths, strict=True):
            temp.replace(final)
    return VectorExport(paths[0], paths[1], tuple(v.layer for v in kept),
                        tuple(v.layer for v in vectors if v.layer == 0),
                        vectors[0].toward_label)


def write_control_vector(path: Path, vectors: Sequence[SteeringVector]) -> Path:
    """Write vectors as a GGUF control vector: ``direction.<layer>`` = ``scale · direction``.

    Raises:
        VectorExportError: for no vectors, layer 0, repeated layers, or mixed widths,
            datasets or sources (one file is one steering direction of one model).

    """
    layers = [v.layer for v in vectors]
    if not vectors or min(layers) < 1 or len(set(layers)) != len(layers):
        raise VectorExportError(f"A GGUF control vector needs distinct layers >= 1, got "
                                f"{layers}.")
    for name in ("hidden_size", "dataset", "source", "model", "toward_label"):
        if len({getattr(v, name) for v in vectors}) > 1:
            raise VectorExportError(f"The vectors differ in {name}; write one file per "
                                    f"{name}.")
    first = vectors[0]
    writer = gguf.GGUFWriter(str(path), ARCHITECTURE)
    writer.add_string(f"{ARCHITECTURE}.model_hint", first.model)
    writer.add_uint32(f"{ARCHITECTURE}.layer_count", len(vectors))
    extra = {"dataset": first.dataset, "source": first.source,
             "scaling": first.meta.get("scaling"), "toward_label": first.toward_label}
    for key in _TRUSTDYN_KEYS:
        if extra[key] is not None:
            writer.add_string(f"trustdyn.{key}", str(extra[key]))
    for vec in sorted(vectors, key=lambda v: v.layer):
        writer.add_tensor(f"direction.{vec.layer}", vec.delta(1.0).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def read_vector_file(path: Path) -> list[SteeringVector]:
    """Read a trustdyn safetensors file or a GGUF control vector, in layer order.

    Raises:
        VectorExportError: for a missing file, a file of neither kind, or a GGUF file that
            is not a control vector (wrong architecture, a tensor that is not a 1-D F32
            ``direction.<N>``, an all-zero direction).

    """
    if not path.is_file():
        raise VectorExportError(f"No vector file at {path}.")
    with path.open("rb") as handle:
        magic = handle.read(4)
    try:
        vectors = _read_gguf(path) if magic == b"GGUF" else load_vectors(path)
    except SteeringError as exc:
        raise VectorExportError(f"{exc} (expected a trustdyn .safetensors vector file or a "
                                "GGUF control vector)") from exc
    return sorted(vectors, key=lambda v: v.layer)


def _read_gguf(path: Path) -> list[SteeringVector]:
    """Rebuild one vector per ``direction.<N>`` tensor; its norm becomes the scale."""
    reader = gguf.GGUFReader(str(path))
    fields = {name: field.contents() for name, field in reader.fields.items()}
    if fields.get("general.architecture") != ARCHITECTURE:
        raise VectorExportError(f"{path} is a GGUF file of architecture "
                                f"{fields.get('general.architecture')!r}, not a control "
                                f"vector ({ARCHITECTURE!r}).")
    extra = {key: fields.get(f"trustdyn.{key}") for key in _TRUSTDYN_KEYS}
    vectors = []
    for tensor in reader.tensors:
        match = re.fullmatch(r"direction\.(\d+)", tensor.name)
        values = np.array(tensor.data, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(values))
        if (match is None or tensor.tensor_type != gguf.GGMLQuantizationType.F32
                or len(tensor.shape) != 1 or not math.isfinite(norm) or norm == 0):
            raise VectorExportError(f"{path}: tensor {tensor.name} is not a non-zero 1-D F32 "
                                    "direction.<layer> tensor.")
        vectors.append(SteeringVector(
            direction=torch.from_numpy(values / norm), scale=norm, layer=int(match[1]),
            dataset=str(extra["dataset"] or ""),
            toward_label=int(extra["toward_label"] or 1),
            source=str(extra["source"] or path.name),
            model=str(fields.get(f"{ARCHITECTURE}.model_hint", "")), revision=None,
            hidden_size=values.shape[0],
            meta={"file": str(path), "scaling": extra["scaling"] or "file"}))
    if not vectors:
        raise VectorExportError(f"{path} holds no direction tensors.")
    return vectors
