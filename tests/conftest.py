"""Shared fixtures: tiny random-init models of several families, and a tiny tokenizer.

Nothing is downloaded: every model is built from a config with a fixed seed, and the
tokenizer is a byte-level BPE trained on a few sentences in-process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

FAMILIES = ("llama", "gpt_neox", "olmo2")

# Tiny models are dominated by thread start-up costs; one thread is ~10x faster on 2 cores.
torch.set_num_threads(1)

_SENTENCES = [
    "The capital of France is Paris.",
    "Water boils at one hundred degrees.",
    "Some people say the moon is made of cheese.",
    "Q: Is the sky blue?\tA: Yes, on a clear day.",
    "a quick brown fox jumps over the lazy dog",
    "<|user|> hello <|assistant|> hi there",
] * 8


def build_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """Train a tiny byte-level BPE tokenizer with pad/bos/eos tokens, left padding."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_SENTENCES, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    fast.padding_side = "left"
    fast.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|> {% endif %}"
    )
    return fast


def build_model(family: str, vocab_size: int, seed: int = 0) -> PreTrainedModel:
    """Build a tiny random-init causal LM of ``family`` in eval mode (float32)."""
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=128,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model: PreTrainedModel
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(num_key_value_heads=2, **common))
    elif family == "olmo2":
        model = Olmo2ForCausalLM(Olmo2Config(num_key_value_heads=2, **common))
    elif family == "gpt_neox":
        model = GPTNeoXForCausalLM(GPTNeoXConfig(**common))
    else:
        raise ValueError(family)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


@pytest.fixture(params=FAMILIES)
def tiny_model(request: pytest.FixtureRequest, tiny_tokenizer: PreTrainedTokenizerFast
               ) -> PreTrainedModel:
    """A tiny random model of each supported family (parametrised)."""
    return build_model(request.param, len(tiny_tokenizer))


@pytest.fixture
def tiny_llama(tiny_tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    return build_model("llama", len(tiny_tokenizer))


@pytest.fixture
def saved_tiny_model(tmp_path: Path, tiny_tokenizer: PreTrainedTokenizerFast
                     ) -> Callable[[str, int], Path]:
    """Factory: save a tiny model of a family (with the tokenizer) and return its folder."""

    def save(family: str = "llama", seed: int = 0) -> Path:
        out = tmp_path / f"{family}-{seed}"
        build_model(family, len(tiny_tokenizer), seed).save_pretrained(out)
        tiny_tokenizer.save_pretrained(out)
        return out

    return save


@pytest.fixture
def trustdyn_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point generated artefacts at a temporary folder for the test."""
    home = tmp_path / "home"
    monkeypatch.setenv("TRUSTDYN_HOME", str(home))
    yield home


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama chat model folder (random weights, BPE tokenizer with a template)."""
    folder = tmp_path_factory.mktemp("chat") / "tiny-chat"
    tokenizer = build_tokenizer()
    build_model("llama", len(tokenizer), seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class FakeHubTable:
    """Stands in for a ``datasets.Dataset``: column names, dict rows, info."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.column_names = list(rows[0])
        self.info = SimpleNamespace(license="mit")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)


@pytest.fixture(scope="module")
def tiny_sentence_chat() -> tuple[list[Any], PreTrainedTokenizerFast, PreTrainedModel]:
    """Thirty chat-task items, a built-in tokenizer for them and a random smoke-shaped model."""
    from trustdyn.suites.builtin_data import train_tokenizer
    from trustdyn.suites.builtin_presets import PRESETS
    from trustdyn.suites.builtin_task import build_items
    from trustdyn.suites.builtin_train import build_model as build_builtin

    sentences = [f"Sentence number {i} has exactly seven words." for i in range(30)]
    tokenizer = train_tokenizer([*sentences, "Is this a real sentence? Yes. No."] * 5, 320)
    torch.manual_seed(0)
    return build_items(sentences, 30, seed=0), tokenizer, build_builtin(
        PRESETS["smoke"], tokenizer).eval()
