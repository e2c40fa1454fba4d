"""The read/write site shared by activation extraction and steering: decoder block outputs.

Layer index ℓ means the output of decoder block ℓ (0-based): the residual stream after
that block, i.e. the tensor a forward hook on ``decoder_blocks(model)[ℓ]`` sees. Reading
(``activations``) and writing (``steering``) both go through this module so a vector read
at ℓ is added at ℓ. Blocks are looked up at the known path of each model family, or, for
other architectures, at a dotted path recorded on the model by :func:`use_layers_path`
(``load_checkpoint`` records a checkpoint's ``layers`` there), so every reader and writer
finds the same blocks without being passed the path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

SITE = "block_output"
"""Name recorded with every activation and vector: the residual stream after a decoder block."""

# Attribute paths to the list of decoder blocks, per model family. Tried in order.
_BLOCK_PATHS = (
    "model.layers",  # Llama, Mistral, OLMo, OLMo-2, Qwen, SmolLM2, Gemma
    "gpt_neox.layers",  # Pythia / GPT-NeoX
    "transformer.h",  # GPT-2, GPT-J
    "model.decoder.layers",  # OPT
    "layers",  # a bare base model (LlamaModel etc.)
)

LAYERS_PATH_ATTRIBUTE = "trustdyn_layers_path"
"""Model attribute holding a user-given path to the blocks (set by :func:`use_layers_path`)."""


def _lookup(model: nn.Module, path: str) -> tuple[Any, str | None]:
    """Follow a dotted path; return ``(object, None)`` or ``(None, the part that is missing)``."""
    obj: Any = model
    for depth, attr in enumerate(path.split(".")):
        obj = getattr(obj, attr, None)
        if obj is None:
            return None, ".".join(path.split(".")[:depth + 1])
    return obj, None


def _module_lists(model: nn.Module) -> str:
    """Name the non-empty ModuleLists of ``model``: the candidates for a layers path."""
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.ModuleList) and len(module) > 0]
    return ", ".join(names[:8]) if names else "none"


def _blocks_at(model: nn.Module, path: str) -> nn.ModuleList:
    """Return the ModuleList at ``path``, or raise a ValueError saying what is there instead."""
    obj, missing = _lookup(model, path)
    if missing is not None:
        problem = f"{type(model).__name__} has no attribute {missing!r}"
    elif not isinstance(obj, nn.ModuleList) or len(obj) == 0:
        problem = f"it leads to {type(obj).__name__}, not a non-empty ModuleList of blocks"
    else:
        return obj
    raise ValueError(f"The layers path {path!r} does not resolve: {problem}. ModuleLists in "
                     f"this model: {_module_lists(model)}; give the one holding the decoder "
                     "blocks.")


def use_layers_path(model: nn.Module, path: str) -> None:
    """Make :func:`decoder_blocks` read ``model``'s blocks at the dotted ``path`` from now on.

    Recorded on the model itself, so extraction, steering hooks, generation and evaluation
    all find the same blocks without being told.

    Raises:
        ValueError: if ``path`` does not lead to a non-empty ``ModuleList`` (listing those
            the model has).

    """
    _blocks_at(model, path)
    setattr(model, LAYERS_PATH_ATTRIBUTE, path)


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """Return the model's decoder blocks in order (at its recorded layers path, if any).

    Raises:
        ValueError: if the architecture is not one this tool knows how to read.
    """
    recorded = getattr(model, LAYERS_PATH_ATTRIBUTE, None)
    if isinstance(recorded, str):
        return _blocks_at(model, recorded)
    for path in _BLOCK_PATHS:
        obj, _ = _lookup(model, path)
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj
    raise ValueError(
        f"Cannot find decoder blocks in {type(model).__name__}; known layouts: "
        f"{', '.join(_BLOCK_PATHS)}. Give the path to its blocks as `layers` in the suite "
        f"or study file, or --layers-path (ModuleLists in this model: "
        f"{_module_lists(model)})."
    )


def n_blocks(model: nn.Module) -> int:
    """Return the number of decoder blocks (= number of readable/steerable layers)."""
    return len(decoder_blocks(model))


def block_hidden(output: Any) -> torch.Tensor:
    """Return the hidden-state tensor from a block's output (a tensor or a tuple)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"Unexpected decoder block output type: {type(output).__name__}")


def replace_block_hidden(output: Any, hidden: torch.Tensor) -> Any:
    """Return ``output`` with its hidden-state tensor replaced, keeping its container type."""
    if isinstance(output, torch.Tensor):
        return hidden
    return type(output)((hidden, *output[1:]))
