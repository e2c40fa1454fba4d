"""The read/write site shared by activation extraction and steering: decoder block outputs.

Layer index ℓ means the output of decoder block ℓ (0-based): the residual stream after
that block, i.e. the tensor a forward hook on ``decoder_blocks(model)[ℓ]`` sees. Reading
(``activations``) and writing (``steering``) both go through this module so a vector read
at ℓ is added at ℓ.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

SITE = "block_output"
"""Name recorded with every activation and vector: the residual stream after a decoder block."""

# Attribute paths to the list of decoder blocks, per model family. Tried in order.
_BLOCK_PATHS: tuple[tuple[str, ...], ...] = (
    ("model", "layers"),  # Llama, Mistral, OLMo, OLMo-2, Qwen, SmolLM2, Gemma
    ("gpt_neox", "layers"),  # Pythia / GPT-NeoX
    ("transformer", "h"),  # GPT-2, GPT-J
    ("model", "decoder", "layers"),  # OPT
    ("layers",),  # a bare base model (LlamaModel etc.)
)


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """Return the model's decoder blocks in order.

    Raises:
        ValueError: if the architecture is not one this tool knows how to read.
    """
    for path in _BLOCK_PATHS:
        obj: Any = model
        for attr in path:
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj
    raise ValueError(
        f"Cannot find decoder blocks in {type(model).__name__}; supported layouts: "
        + ", ".join(".".join(p) for p in _BLOCK_PATHS)
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
