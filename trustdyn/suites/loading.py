"""Turn any :class:`~trustdyn.suites.base.CheckpointRef` into an eval-mode model and tokenizer.

Every suite (built-in, SmolLM2, public hub suites, local folders, TOML files) ends here:
``AutoModelForCausalLM.from_pretrained(source, revision=..., dtype=...)`` plus the matching
tokenizer, set up for batched last-token reads (left padding, a pad token). A ref's
``trust_remote_code`` is passed to both calls (``False`` unless set, so a checkpoint's own
code never runs unasked), and its ``layers`` path is recorded on the model for
:func:`trustdyn.blocks.decoder_blocks`.

Hub mirror. Setting ``TRUSTDYN_HUB_MIRROR=/path`` makes every hub checkpoint load from
``/path/<repo id>/<revision>/`` (``main`` when the ref has no revision) instead of the
network: the way to run public suites on an air-gapped cluster (download the revisions
once elsewhere, e.g. ``huggingface-cli download <repo> --revision <rev> --local-dir
/path/<repo>/<rev>``) and the way tests exercise the hub path offline. The ref keeps its
hub id and revision, so provenance is unchanged; only where the bytes come from differs.
Without the variable the real ``from_pretrained(repo, revision=rev)`` call runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import SafetensorError
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from trustdyn.blocks import use_layers_path
from trustdyn.provenance import hash_state_dict
from trustdyn.schema import DEVICE_NAMES, DTYPE_NAMES
from trustdyn.suites.base import CheckpointRef, SuiteError

MIRROR_ENV = "TRUSTDYN_HUB_MIRROR"
"""Environment variable naming a local folder laid out as ``<repo id>/<revision>/``."""

DEVICES = DEVICE_NAMES
DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES}

# What transformers/safetensors raise for a missing, corrupt or unreachable checkpoint.
# RuntimeError covers mismatched tensor shapes; CUDA out-of-memory is re-raised untouched.
_LOAD_ERRORS = (OSError, ValueError, SafetensorError, RuntimeError)


@dataclass(frozen=True)
class LoadOptions:
    """Where and in what precision checkpoints are loaded.

    Attributes:
        device: ``"auto"`` (CUDA if available, else Apple MPS, else CPU), ``"cpu"``,
            ``"cuda"``, ``"cuda:<index>"`` or ``"mps"``.
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``. Weight hashes depend on it,
            so compare hashes only between checkpoints loaded with the same dtype.

    """

    device: str = "auto"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        base = self.device.split(":", 1)[0]
        if base not in DEVICES or (":" in self.device and base != "cuda"):
            raise SuiteError(
                f"Unknown device {self.device!r}; use one of {', '.join(DEVICES)} "
                "(or 'cuda:<index>')."
            )
        if self.dtype not in DTYPES:
            raise SuiteError(
                f"Unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}."
            )

    def torch_device(self) -> torch.device:
        """Return the concrete device, resolving ``"auto"`` and checking availability.

        Raises:
            SuiteError: if an explicitly requested accelerator is not available.

        """
        if self.device == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            if torch.backends.mps.is_available():
                return torch.device("mps")
            return torch.device("cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise SuiteError(
                f"Device {self.device!r} was requested but CUDA is not available "
                "(torch was built without it or no GPU is visible); use device='cpu' or 'auto'."
            )
        if self.device == "mps" and not torch.backends.mps.is_available():
            raise SuiteError(
                "Device 'mps' was requested but Apple MPS is not available; use 'cpu' or 'auto'."
            )
        return torch.device(self.device)

    def torch_dtype(self) -> torch.dtype:
        """Return the ``torch.dtype`` named by :attr:`dtype`."""
        return DTYPES[self.dtype]


def _describe(ref: CheckpointRef) -> str:
    where = ref.source + (f"@{ref.revision}" if ref.revision else "")
    return f"checkpoint {ref.name!r} of suite {ref.suite!r} ({where})"


def _looks_like_path(source: str) -> bool:
    """Tell whether ``source`` can only be a folder (hub ids are ``name`` or ``org/name``)."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source


def resolve_source(ref: CheckpointRef) -> tuple[str, str | None]:
    """Return the ``(path or repo id, revision)`` that ``from_pretrained`` should read.

    A local folder is read as is. A hub id is read from the hub mirror when
    ``TRUSTDYN_HUB_MIRROR`` is set (revision ``None`` then, since the mirror folder *is*
    the revision), otherwise from the hub at ``ref.revision``.

    Raises:
        SuiteError: if a mirror is set but does not hold this checkpoint.

    """
    local = Path(ref.source).expanduser()
    if local.is_dir():
        return str(local), None
    if _looks_like_path(ref.source):
        raise SuiteError(
            f"The {_describe(ref)} points at the folder {local}, which does not exist; "
            "check the path (or the suite's manifest/TOML file)."
        )
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        return ref.source, ref.revision
    folder = Path(mirror).expanduser() / ref.source / (ref.revision or "main")
    if not folder.is_dir():
        raise SuiteError(
            f"The {_describe(ref)} is not in the hub mirror {MIRROR_ENV}={mirror}: expected "
            f"the folder {folder}. Download it there (huggingface-cli download {ref.source} "
            f"--revision {ref.revision or 'main'} --local-dir {folder}) or unset {MIRROR_ENV} "
            "to read from the hub."
        )
    return str(folder), None


def _advice(source: str, message: str) -> str:
    """Say what to do about a checkpoint that failed to load with ``message``."""
    if "trust_remote_code" in message:
        return ("It ships its own modelling code; if you trust that code, turn it on with "
                "--trust-remote-code or `trust_remote_code = true` in the suite or study file.")
    if Path(source).is_dir():
        return (f"The folder {source} is missing files or holds corrupt ones (it needs "
                "config.json and the weights, e.g. model.safetensors); re-save or re-download it.")
    return ("Check the repository id and revision, your network access and the Hugging Face "
            "cache (HF_HUB_OFFLINE=1 allows only cached files); for an air-gapped machine, "
            f"set {MIRROR_ENV} to a folder laid out as <repo>/<revision>/.")


def _load_error(ref: CheckpointRef, source: str, error: BaseException) -> SuiteError:
    """Build the user-facing error for a checkpoint that failed to load."""
    text = str(error).strip()
    first_line = text.splitlines()[0].rstrip(".") if text else type(error).__name__
    return SuiteError(f"Could not load the {_describe(ref)}: {first_line}. "
                      f"{_advice(source, text)}")


def _load_model(ref: CheckpointRef, source: str, revision: str | None,
                options: LoadOptions) -> PreTrainedModel:
    """Load the weights, refusing checkpoints that silently leave parameters random."""
    try:
        # With output_loading_info the call returns (model, info); its annotation does not say so.
        loaded: Any = AutoModelForCausalLM.from_pretrained(
            source, revision=revision, dtype=options.torch_dtype(), output_loading_info=True,
            trust_remote_code=ref.trust_remote_code,
        )
    except torch.cuda.OutOfMemoryError:
        raise
    except _LOAD_ERRORS as error:
        raise _load_error(ref, source, error) from error
    model, info = loaded
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise SuiteError(
            f"The {_describe(ref)} is incomplete: {len(missing)} weight tensors are missing "
            f"({shown}) and would be random. Re-save or re-download it."
        )
    if ref.layers is not None:
        try:
            use_layers_path(model, ref.layers)
        except ValueError as error:
            raise SuiteError(f"The {_describe(ref)}: {error}") from error
    return model


def _load_tokenizer(ref: CheckpointRef, source: str, revision: str | None
                    ) -> PreTrainedTokenizerBase:
    """Load the tokenizer set up for batched last-token reads: left padding, a pad token."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision,
                                                  trust_remote_code=ref.trust_remote_code)
    except _LOAD_ERRORS as error:
        raise _load_error(ref, source, error) from error
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise SuiteError(
                f"The tokenizer of the {_describe(ref)} has neither a pad nor an eos token; "
                "add a pad token to it (tokenizer.add_special_tokens) and re-save it."
            )
        tokenizer.pad_token = tokenizer.eos_token
    # Left padding keeps every sequence's last real token at position -1 of the batch.
    tokenizer.padding_side = "left"
    return tokenizer


def load_checkpoint(ref: CheckpointRef, options: LoadOptions | None = None
                    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a checkpoint's model (eval mode, on the chosen device and dtype) and tokenizer.

    Args:
        ref: The checkpoint; a local folder or a hub repo id at a revision (see the
            module docstring for the ``TRUSTDYN_HUB_MIRROR`` mirror).
        options: Device and dtype; defaults to ``LoadOptions()`` (auto device, float32).

    Returns:
        ``(model, tokenizer)``; the tokenizer pads on the left and has a pad token.

    Raises:
        SuiteError: for a missing or corrupt folder, an unknown repo or revision, an
            unreachable hub, or a checkpoint with missing weights, naming the checkpoint
            and what to do.

    """
    options = options or LoadOptions()
    device = options.torch_device()
    source, revision = resolve_source(ref)
    tokenizer = _load_tokenizer(ref, source, revision)
    model = _load_model(ref, source, revision, options)
    # PreTrainedModel.to is wrapped in a way mypy cannot call; dispatch is unchanged.
    cast(torch.nn.Module, model).to(device)
    model.eval()
    return model, tokenizer


def weight_hash(model: PreTrainedModel) -> str:
    """Return the sha256 content hash of the model's weights (names, dtypes, shapes, bytes)."""
    return hash_state_dict(model.state_dict())
