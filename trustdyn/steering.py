"""Steering vectors: derive them, store them, and add them to a model's residual stream.

A :class:`SteeringVector` is a unit direction read at decoder block ℓ (see
:mod:`trustdyn.blocks`) plus the scale that makes strengths comparable across layers and
checkpoints: ``scale`` is the standard deviation of the statements' projections onto the
direction (the paper's choice), so a strength α means "α σ of the projection" and the
added vector is ``α · scale · direction``.

Sign convention: a mean-difference direction points from label 0's mean toward label 1's
mean (``toward_label = 1``). For datasets whose label 1 is harmful (toxic, stereotyped,
privacy-violating) callers steer *away* from label 1; they say so with
:func:`signed_alpha` (or :func:`oriented`) and record :func:`steer_direction` next to the
result, so a sign is never flipped silently.

Applying a vector (:func:`steer`) is safe when several users share one model object, e.g.
threads of a Streamlit server:

* Each decoder block gets at most one persistent *dispatcher* forward hook. It reads the
  steering that is active in the *calling* context from a :class:`contextvars.ContextVar`.
  Forward hooks run in the caller's thread, and every thread has its own context, so two
  concurrent generations with different vectors never see each other's steering; a
  thread with no active steering gets the model unchanged.
* Dispatchers are installed lazily under a lock when the first steering on a model starts
  and removed when the last one ends (reference counted), so outside any :func:`steer`
  the model has no hooks at all. Hooks are only ever added or removed at those 0 ↔ 1
  transitions, under the lock. That is safe while other threads run forward passes:
  torch snapshots a module's hook dict when the module is called, a thread that is
  steering holds a reference (so its hooks cannot disappear mid-pass), and a thread that
  is not steering gets the same output with or without the no-op hook. A server that
  wants no hook churn at all can pin the dispatchers with :func:`install_dispatchers`
  (the inactive hook costs one ``ContextVar.get`` per block call) and undo that with
  :func:`remove_dispatchers`.
* Dispatchers are registered with ``prepend=True`` so they run before any other forward
  hook on the block: a reader hook (activation extraction, tests) sees the steered
  output, whenever it was registered.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn
from torch.utils.hooks import RemovableHandle

from trustdyn.blocks import SITE, block_hidden, decoder_blocks, replace_block_hidden
from trustdyn.provenance import code_version
from trustdyn.schema import Positions

OPERATION = "add"
"""The only steering operation implemented: add ``α · scale · direction`` to the site."""

_FILE_FORMAT = "trustdyn.steering_vectors"
_FILE_FORMAT_VERSION = "1"
_UNIT_NORM_TOL = 1e-4


class SteeringError(ValueError):
    """A user-facing problem with a steering vector or its use (wrong model, bad file...)."""


# --------------------------------------------------------------------------- vectors


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """A unit direction at one layer plus its scale and provenance.

    Attributes:
        direction: ``[hidden_size]`` float32 unit vector on the CPU (an own copy, coerced on
            creation).
        scale: Standard deviation of the statements' projections onto ``direction``; the
            unit of the steering strength α.
        layer: Decoder block whose output the vector was read from and is added to.
        dataset: Probe dataset the vector was derived from.
        toward_label: The label whose mean ``direction`` points toward (1 for a fresh
            mean-difference vector; 0 after :func:`oriented` flipped it).
        source: Where it came from, e.g. ``"builtin-default/step-000120"``,
            ``"builtin-default/chat"``, ``"random"``.
        model: Model (repo id, folder or suite/checkpoint) the activations came from.
        revision: Hub revision of that model, if any.
        hidden_size: Width of the residual stream; must match the steered model.
        site: Read/write site (:data:`trustdyn.blocks.SITE`).
        operation: How it is applied (only ``"add"``).
        meta: Reproducibility details (n, seed, code version, ...), JSON-serialisable.

    """

    direction: torch.Tensor
    scale: float
    layer: int
    dataset: str
    toward_label: int
    source: str
    model: str
    revision: str | None
    hidden_size: int
    site: str = SITE
    operation: str = OPERATION
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        direction = torch.as_tensor(self.direction).detach().to("cpu", torch.float32)
        if direction.ndim != 1 or direction.shape[0] != self.hidden_size:
            raise SteeringError(
                f"Steering direction has shape {tuple(direction.shape)} but hidden_size is "
                f"{self.hidden_size}; a direction must be a 1-D tensor of that length."
            )
        norm = float(direction.norm())
        if not math.isfinite(norm) or abs(norm - 1.0) > _UNIT_NORM_TOL:
            raise SteeringError(
                f"Steering direction must have unit norm, got {norm:.6g}; divide it by its "
                "norm and put the magnitude into `scale`."
            )
        if not math.isfinite(self.scale) or self.scale < 0:
            raise SteeringError(f"Steering scale must be finite and >= 0, got {self.scale}.")
        if self.toward_label not in (0, 1):
            raise SteeringError(f"toward_label must be 0 or 1, got {self.toward_label!r}.")
        if self.layer < 0:
            raise SteeringError(f"Layer must be a 0-based block index >= 0, got {self.layer}.")
        # An own copy: the vector stays immutable if the caller's tensor changes, and no two
        # vectors share storage (safetensors refuses to save shared tensors).
        own = direction.clone(memory_format=torch.contiguous_format)
        object.__setattr__(self, "direction", own)
        object.__setattr__(self, "scale", float(self.scale))

    def delta(self, alpha: float) -> torch.Tensor:
        """Return the vector added at strength ``alpha``: ``α · scale · direction`` [d], float32."""
        return self.direction * (float(alpha) * self.scale)

    def describe(self) -> str:
        """Return a one-line human-readable description (for logs and the dashboard)."""
        return (
            f"{self.dataset} vector from {self.source} at layer {self.layer} "
            f"(toward label {self.toward_label}, σ={self.scale:.4g}, d={self.hidden_size})"
        )


def mean_difference_vectors(
    blocks: torch.Tensor,
    labels: np.ndarray,
    *,
    dataset: str,
    source: str,
    model: str,
    revision: str | None = None,
    meta: dict[str, Any] | None = None,
    scale_blocks: torch.Tensor | None = None,
) -> list[SteeringVector]:
    """Derive one mean-difference steering vector per layer, all layers at once.

    ``direction[ℓ] = normalise(mean(blocks[ℓ, label 1]) − mean(blocks[ℓ, label 0]))`` and
    ``scale[ℓ]`` is the sample standard deviation (ddof = 1, like ``torch.std`` in the
    paper's code) of the projections of ``scale_blocks[ℓ]`` onto it.

    Args:
        blocks: ``[L, n, d]`` activations of the vector-fitting statements.
        labels: ``[n]`` binary labels (0/1) of those statements.
        dataset: Dataset name recorded with each vector.
        source: Source tag recorded with each vector (e.g. ``"suite/checkpoint"``).
        model: Model identifier recorded with each vector.
        revision: Model revision, if any.
        meta: Extra provenance merged into each vector's ``meta``.
        scale_blocks: ``[L, m, d]`` activations whose projections set the scale; the paper
            uses all statements of the dataset (fit and held-out rows). Defaults to
            ``blocks``.

    Returns:
        ``L`` vectors, index ℓ for layer ℓ.

    Raises:
        SteeringError: on shape mismatches, non-binary labels, a missing class, or a layer
            whose two class means coincide (no direction).

    """
    acts = _as_float_blocks(blocks, "blocks")
    y = np.asarray(labels).reshape(-1)
    n_layers, n, d = acts.shape
    if y.shape[0] != n:
        raise SteeringError(f"Got {n} activation rows but {y.shape[0]} labels.")
    if not np.isin(y, (0, 1)).all():
        raise SteeringError("Labels must be 0 or 1 to derive a mean-difference vector.")
    n1 = int((y == 1).sum())
    n0 = n - n1
    if n0 == 0 or n1 == 0:
        raise SteeringError(
            f"Need statements of both labels to derive a vector; got {n0} with label 0 and "
            f"{n1} with label 1."
        )
    # A signed weight per row turns both class means into one contraction over n: [n].
    weights = torch.from_numpy(np.where(y == 1, 1.0 / n1, -1.0 / n0).astype(np.float32))
    diff = torch.einsum("lnd,n->ld", acts, weights)  # [L, d]
    norms = diff.norm(dim=1)  # [L]
    degenerate = [ell for ell in range(n_layers) if not float(norms[ell]) > 0.0]
    if degenerate:
        raise SteeringError(
            f"The two class means coincide at layer(s) {degenerate}; no direction exists "
            "there. Check that the labels match the statements."
        )
    directions = diff / norms[:, None]  # [L, d]
    scale_acts = acts if scale_blocks is None else _as_float_blocks(scale_blocks, "scale_blocks")
    if scale_acts.shape[0] != n_layers or scale_acts.shape[2] != d:
        raise SteeringError(
            f"scale_blocks has shape {tuple(scale_acts.shape)}; expected [{n_layers}, m, {d}]."
        )
    if scale_acts.shape[1] < 2:
        raise SteeringError("Need at least 2 statements to estimate the projection scale.")
    scales = torch.einsum("lmd,ld->lm", scale_acts, directions).std(dim=1, correction=1)  # [L]
    shared_meta = {
        **(meta or {}),
        "method": "mean_difference",
        "n": n,
        "n_label0": n0,
        "n_label1": n1,
        "n_scale": int(scale_acts.shape[1]),
        "scale_ddof": 1,
        "code_version": code_version(),
    }
    return [
        SteeringVector(
            direction=directions[ell], scale=float(scales[ell]), layer=ell, dataset=dataset,
            toward_label=1, source=source, model=model, revision=revision, hidden_size=d,
            meta=dict(shared_meta),
        )
        for ell in range(n_layers)
    ]


def _as_float_blocks(blocks: torch.Tensor, name: str) -> torch.Tensor:
    """Return ``blocks`` as a float32 CPU tensor ``[L, n, d]`` or raise a clear error."""
    tensor = torch.as_tensor(blocks)
    if tensor.ndim != 3:
        raise SteeringError(
            f"{name} must be a [n_layers, n, hidden] tensor, got shape {tuple(tensor.shape)}."
        )
    return tensor.detach().to("cpu", torch.float32)


def random_vector(like: SteeringVector, *, seed: int) -> SteeringVector:
    """Return a random unit direction with ``like``'s layer, scale and provenance (a control).

    The direction is drawn from an isotropic Gaussian with a local generator seeded by
    ``seed`` (the global RNG is untouched), so a random control is as strong as the real
    vector at every α and reproducible.
    """
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randn(like.hidden_size, generator=generator, dtype=torch.float64)
    return replace(
        like,
        direction=(raw / raw.norm()).to(torch.float32),
        source="random",
        meta={**like.meta, "seed": seed, "control_for": like.source, "method": "random"},
    )


# --------------------------------------------------------------------------- signs


def signed_alpha(alpha: float, vector: SteeringVector, toward_label: int) -> float:
    """Return the signed strength that moves activations toward ``toward_label``.

    Callers express intent ("steer toward the non-toxic label 0") instead of flipping
    signs by hand: ``steer(model, v, signed_alpha(2.0, v, toward_label=0))``.

    Args:
        alpha: Non-negative strength in units of ``vector.scale``.
        vector: The vector to be applied.
        toward_label: The label (0 or 1) the steering should move toward, typically the
            dataset's desirable label.

    Raises:
        SteeringError: if ``alpha`` is negative (the sign comes from ``toward_label``) or
            ``toward_label`` is not 0/1.

    """
    if toward_label not in (0, 1):
        raise SteeringError(f"toward_label must be 0 or 1, got {toward_label!r}.")
    if alpha < 0:
        raise SteeringError(
            f"Strength {alpha} is negative; pass a non-negative strength and say where to "
            "steer with `toward_label`."
        )
    return float(alpha) if toward_label == vector.toward_label else -float(alpha)


def steer_direction(vector: SteeringVector | None, alpha: float) -> str:
    """Return what applying ``vector`` at signed ``alpha`` does, for recording with results.

    One of ``"none"``, ``"toward label 1"``, ``"toward label 0"``.
    """
    if vector is None or alpha == 0:
        return "none"
    label = vector.toward_label if alpha > 0 else 1 - vector.toward_label
    return f"toward label {label}"


def oriented(vector: SteeringVector, toward_label: int) -> SteeringVector:
    """Return ``vector`` with its direction pointing toward ``toward_label``.

    The flip is recorded: ``toward_label`` changes and ``meta["flipped"]`` is set, so
    a positive α then means "toward ``toward_label``".
    """
    if toward_label not in (0, 1):
        raise SteeringError(f"toward_label must be 0 or 1, got {toward_label!r}.")
    if toward_label == vector.toward_label:
        return vector
    return replace(
        vector, direction=-vector.direction, toward_label=toward_label,
        meta={**vector.meta, "flipped": not vector.meta.get("flipped", False)},
    )


# --------------------------------------------------------------------------- files

_REQUIRED_FIELDS = ("model", "layer", "site", "operation", "scale", "hidden_size", "dataset",
                    "toward_label", "source", "meta")


def save_vectors(path: str | Path, vectors: Sequence[SteeringVector]) -> Path:
    """Write vectors to one safetensors file; provenance goes into the header metadata.

    Tensor ``vector.{i}`` holds the i-th direction; metadata keys ``{i}.model``,
    ``{i}.revision`` (absent when ``None``), ``{i}.layer``, ``{i}.site``,
    ``{i}.operation``, ``{i}.scale`` (exact ``repr``), ``{i}.hidden_size``,
    ``{i}.dataset``, ``{i}.toward_label``, ``{i}.source`` and ``{i}.meta`` (JSON) are
    strings, readable by any safetensors tool.

    Returns:
        The path written.

    """
    if not vectors:
        raise SteeringError("No steering vectors to save.")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": _FILE_FORMAT, "format_version": _FILE_FORMAT_VERSION,
                "count": str(len(vectors))}
    tensors: dict[str, torch.Tensor] = {}
    for i, vec in enumerate(vectors):
        tensors[f"vector.{i}"] = vec.direction
        fields = {
            "model": vec.model, "layer": str(vec.layer), "site": vec.site,
            "operation": vec.operation, "scale": repr(vec.scale),
            "hidden_size": str(vec.hidden_size), "dataset": vec.dataset,
            "toward_label": str(vec.toward_label), "source": vec.source,
            "meta": json.dumps(vec.meta, sort_keys=True, default=_json_default),
        }
        if vec.revision is not None:
            fields["revision"] = vec.revision
        metadata.update({f"{i}.{key}": value for key, value in fields.items()})
    save_file(tensors, str(out), metadata=metadata)
    return out


def _json_default(obj: Any) -> Any:
    """Serialise numpy scalars by value and anything else by its string form."""
    return obj.item() if hasattr(obj, "item") else str(obj)


def load_vectors(path: str | Path) -> list[SteeringVector]:
    """Read vectors written by :func:`save_vectors`.

    Raises:
        SteeringError: if the file is missing, not a safetensors file, or not a
            trustdyn steering-vector file.

    """
    src = Path(path)
    if not src.is_file():
        raise SteeringError(f"No steering-vector file at {src}.")
    try:
        with safe_open(str(src), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(src))
    except (SafetensorError, OSError) as exc:
        raise SteeringError(f"{src} is not a readable safetensors file: {exc}") from exc
    if metadata.get("format") != _FILE_FORMAT:
        raise SteeringError(
            f"{src} is a safetensors file but not a trustdyn steering-vector file (its "
            "metadata lacks format=trustdyn.steering_vectors); write it with save_vectors."
        )
    try:
        count = int(metadata["count"])
        return [_vector_from_file(i, tensors, metadata) for i in range(count)]
    except (KeyError, ValueError) as exc:
        raise SteeringError(f"{src} has incomplete or corrupt vector metadata: {exc}") from exc


def _vector_from_file(i: int, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str]) -> SteeringVector:
    """Rebuild the i-th vector from a loaded file's tensors and metadata."""
    fields = {key: metadata[f"{i}.{key}"] for key in _REQUIRED_FIELDS}
    return SteeringVector(
        direction=tensors[f"vector.{i}"], scale=float(fields["scale"]),
        layer=int(fields["layer"]), dataset=fields["dataset"],
        toward_label=int(fields["toward_label"]), source=fields["source"],
        model=fields["model"], revision=metadata.get(f"{i}.revision"),
        hidden_size=int(fields["hidden_size"]), site=fields["site"],
        operation=fields["operation"], meta=json.loads(fields["meta"]),
    )


def vector_from_row(row: Mapping[str, Any], suite: str) -> SteeringVector:
    """Rebuild a :class:`SteeringVector` from a study file's ``steering_vectors`` row.

    ``source`` becomes ``"<suite>/<checkpoint>"`` and a non-empty ``params`` the ``meta``
    entry ``params``; a missing revision may be ``None`` or NaN (as pandas reads NULL).
    """
    revision = row.get("revision")
    params = row.get("params")
    return SteeringVector(
        direction=torch.from_numpy(np.asarray(row["direction"], dtype=np.float32)),
        scale=float(row["scale"]), layer=int(row["layer"]), dataset=str(row["dataset"]),
        toward_label=int(row["toward_label"]), source=f"{suite}/{row['checkpoint']}",
        model=str(row["model"]),
        revision=str(revision) if isinstance(revision, str) else None,
        hidden_size=int(row["hidden_size"]), site=str(row["site"]),
        operation=str(row["operation"]), meta={"params": params} if params else {},
    )


# --------------------------------------------------------------------------- compatibility


def model_hidden_size(model: nn.Module) -> int:
    """Return the width of the model's residual stream."""
    config = getattr(model, "config", None)
    size = getattr(config, "hidden_size", None)
    if isinstance(size, int):
        return size
    get_embeddings = getattr(model, "get_input_embeddings", None)
    if callable(get_embeddings):
        return int(get_embeddings().weight.shape[1])
    raise SteeringError(f"Cannot tell the hidden size of {type(model).__name__}.")


def check_compatible(vector: SteeringVector, model: nn.Module) -> None:
    """Check that ``vector`` can be added to ``model``.

    Raises:
        SteeringError: naming the mismatch (hidden size, layer, site or operation) and
            what to pick instead.

    """
    size = model_hidden_size(model)
    if vector.hidden_size != size:
        raise SteeringError(
            f"This vector was read from a model with hidden size {vector.hidden_size} "
            f"({vector.model}, {vector.source}) but this model has {size}; pick a vector "
            f"read from this model or one with hidden size {size}."
        )
    n_layers = len(decoder_blocks(model))
    if not 0 <= vector.layer < n_layers:
        raise SteeringError(
            f"This vector is for layer {vector.layer} but this model has {n_layers} decoder "
            f"blocks (layers 0-{n_layers - 1}); pick a vector for one of those layers."
        )
    if vector.site != SITE or vector.operation != OPERATION:
        raise SteeringError(
            f"This vector uses site {vector.site!r} / operation {vector.operation!r}; only "
            f"{SITE!r} / {OPERATION!r} is supported."
        )


# --------------------------------------------------------------------------- dispatch


@dataclass(eq=False)
class _Dispatcher:
    """The forward hooks installed on one model's decoder blocks, and who needs them."""

    handles: list[RemovableHandle] = field(default_factory=list)
    users: int = 0  # open steer()/hold() scopes, across all threads
    pinned: bool = False  # install_dispatchers() keeps them regardless of users


@dataclass(frozen=True, eq=False)
class _Active:
    """One steering active in a context: which model's block, what to add, where."""

    dispatcher: _Dispatcher
    layer: int
    delta: torch.Tensor  # [d], in the model's dtype and device
    positions: str  # "all" | "newest" | "mask"
    mask: torch.Tensor | None  # [batch, seq] bool, only for positions == "mask"

    def apply(self, hidden: torch.Tensor) -> torch.Tensor:
        """Return ``hidden`` [batch, seq, d] with the delta added at the chosen positions."""
        delta = self.delta
        if delta.dtype != hidden.dtype or delta.device != hidden.device:
            delta = delta.to(device=hidden.device, dtype=hidden.dtype)
        if self.positions == "all" or (self.positions == "newest" and hidden.shape[-2] == 1):
            return hidden + delta
        if hidden.ndim != 3:
            raise SteeringError(
                f"Position-selective steering needs [batch, seq, d] block outputs, got "
                f"shape {tuple(hidden.shape)}."
            )
        if self.positions == "newest":
            return torch.cat((hidden[:, :-1], hidden[:, -1:] + delta), dim=1)
        assert self.mask is not None
        if tuple(self.mask.shape) != tuple(hidden.shape[:2]):
            raise SteeringError(
                f"Steering mask has shape {tuple(self.mask.shape)} but the forward pass has "
                f"[batch, seq] = {tuple(hidden.shape[:2])}; a mask only fits one full forward."
            )
        return torch.where(self.mask[..., None].to(hidden.device), hidden + delta, hidden)


_ACTIVE: contextvars.ContextVar[tuple[_Active, ...]] = contextvars.ContextVar(
    "trustdyn_active_steering", default=()
)
_LOCK = threading.Lock()
# Keyed by the blocks' ModuleList; weak so a discarded model takes its entry with it.
_DISPATCHERS: weakref.WeakKeyDictionary[nn.Module, _Dispatcher] = weakref.WeakKeyDictionary()


def _make_hook(dispatcher: _Dispatcher, layer: int) -> Any:
    """Return the forward hook of block ``layer``: apply this context's steering, if any."""

    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        active = _ACTIVE.get()
        if not active:  # the common case: nothing to do, keep the block's own output
            return None
        hidden: torch.Tensor | None = None
        for entry in active:
            if entry.dispatcher is dispatcher and entry.layer == layer:
                hidden = entry.apply(block_hidden(output) if hidden is None else hidden)
        return None if hidden is None else replace_block_hidden(output, hidden)

    return hook


def _acquire(model: nn.Module, *, pin: bool = False) -> _Dispatcher:
    """Install the model's dispatchers if needed and register one more user (or pin)."""
    blocks = decoder_blocks(model)
    with _LOCK:
        dispatcher = _DISPATCHERS.get(blocks)
        if dispatcher is None:
            dispatcher = _Dispatcher()
            dispatcher.handles = [
                block.register_forward_hook(_make_hook(dispatcher, ell), prepend=True)
                for ell, block in enumerate(blocks)
            ]
            _DISPATCHERS[blocks] = dispatcher
        if pin:
            dispatcher.pinned = True
        else:
            dispatcher.users += 1
        return dispatcher


def _release(model: nn.Module, *, unpin: bool = False) -> None:
    """Drop one user (or the pin); remove the hooks when nobody needs them any more."""
    blocks = decoder_blocks(model)
    with _LOCK:
        dispatcher = _DISPATCHERS.get(blocks)
        if dispatcher is None:
            return
        if unpin:
            dispatcher.pinned = False
        else:
            dispatcher.users -= 1
        if dispatcher.users == 0 and not dispatcher.pinned:
            for handle in dispatcher.handles:
                handle.remove()
            del _DISPATCHERS[blocks]


def install_dispatchers(model: nn.Module) -> None:
    """Install the dispatcher hooks on ``model`` and keep them until :func:`remove_dispatchers`.

    For servers: afterwards :func:`steer` never adds or removes hooks, and unsteered
    forward passes pay only the inactive-hook check.
    """
    _acquire(model, pin=True)


def remove_dispatchers(model: nn.Module) -> None:
    """Remove ``model``'s dispatcher hooks, restoring it to its hook-free state.

    Raises:
        SteeringError: if a steering on this model is still active (in any thread);
            removing the hooks would silently switch it off.

    """
    with _LOCK:
        dispatcher = _DISPATCHERS.get(decoder_blocks(model))
        if dispatcher is not None and dispatcher.users > 0:
            raise SteeringError(
                f"{dispatcher.users} steering scope(s) are still active on this model; "
                "remove the dispatchers after they have exited."
            )
    _release(model, unpin=True)


def has_dispatchers(model: nn.Module) -> bool:
    """Return True when ``model`` currently carries dispatcher hooks."""
    with _LOCK:
        return decoder_blocks(model) in _DISPATCHERS


def active_steering_count() -> int:
    """Return how many steerings are active in the calling context (thread / task)."""
    return len(_ACTIVE.get())


class Steering:
    """A vector prepared for one model: validated, scaled and cast once, applied many times.

    :func:`steer` covers most uses. Generators that hold steering across ``yield``
    (streamed generation) use the two halves separately: :meth:`hold` keeps the
    dispatchers installed for the generator's life (a plain reference count, safe across
    yields and threads), and :meth:`active` sets the context-local steering around each
    forward call only, so the consumer's context never sees it between yields.
    """

    def __init__(self, model: nn.Module, vector: SteeringVector | None, alpha: float,
                 *, positions: Positions | torch.Tensor = "all") -> None:
        """Validate and prepare steering of ``model`` by ``alpha · vector``.

        Args:
            model: The model to steer.
            vector: The vector, or ``None`` for no steering (then every scope is a no-op).
            alpha: Signed strength in units of ``vector.scale``.
            positions: ``"all"`` positions of every forward pass; ``"newest"`` = the last
                position of every forward pass (the prompt's last token in the prompt
                pass, then each new token during cached generation, like the paper's
                ``output[0][:, -1, :] += v`` hook; needs left padding when batched); or a
                ``[batch, seq]`` bool mask for a single full-sequence forward pass.

        Raises:
            SteeringError: if the vector does not fit the model or an argument is invalid.

        """
        if not math.isfinite(alpha):
            raise SteeringError(f"Steering strength must be a finite number, got {alpha}.")
        self.model = model
        self.vector = vector
        self.alpha = float(alpha)
        self._mask: torch.Tensor | None = None
        if isinstance(positions, torch.Tensor):
            if positions.ndim != 2:
                raise SteeringError("A steering position mask must be a [batch, seq] tensor.")
            self._positions = "mask"
            self._mask = positions.to(torch.bool)
        elif positions in ("all", "newest"):
            self._positions = positions
        else:
            raise SteeringError(f"positions must be 'all', 'newest' or a mask, got {positions!r}.")
        self._delta: torch.Tensor | None = None
        if vector is not None:
            check_compatible(vector, model)
            param = next(model.parameters())
            self._delta = vector.delta(alpha).to(device=param.device, dtype=param.dtype)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Keep the model's dispatchers installed for the duration of the scope."""
        if self._delta is None:
            yield
            return
        _acquire(self.model)
        try:
            yield
        finally:
            _release(self.model)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Make the steering active in the calling context for the duration of the scope.

        Must be entered inside :meth:`hold` (or another scope that installed the
        dispatchers), and entered and exited in the same context: do not ``yield`` out of
        it in a generator.
        """
        if self._delta is None:
            yield
            return
        with _LOCK:
            dispatcher = _DISPATCHERS.get(decoder_blocks(self.model))
        if dispatcher is None:
            raise SteeringError("Steering.active() must be used inside Steering.hold().")
        assert self.vector is not None
        entry = _Active(dispatcher, self.vector.layer, self._delta, self._positions, self._mask)
        token = _ACTIVE.set((*_ACTIVE.get(), entry))
        try:
            yield
        finally:
            _ACTIVE.reset(token)


@contextlib.contextmanager
def steer(model: nn.Module, vector: SteeringVector | None, alpha: float, *,
          positions: Positions | torch.Tensor = "all") -> Iterator[None]:
    """Add ``alpha · vector.scale · vector.direction`` to block ``vector.layer``'s output.

    Only forward passes made in the calling context (thread / asyncio task) inside the
    ``with`` block are steered; other threads using the same model object are not. Scopes
    nest (their deltas add up). On exit, normal or by exception, the steering is gone and,
    if no other scope on the model is open anywhere and the dispatchers are not pinned,
    the model has no hooks left; parameters are never touched.

    Args:
        model: The model to steer.
        vector: The vector, or ``None`` for an unsteered scope.
        alpha: Signed strength in units of ``vector.scale`` (see :func:`signed_alpha`).
        positions: See :class:`Steering`.

    Raises:
        SteeringError: if the vector does not fit the model (checked before any change).

    """
    steering = Steering(model, vector, alpha, positions=positions)
    with steering.hold(), steering.active():
        yield
