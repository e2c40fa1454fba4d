"""SmolLM2-135M-Instruct loaded offline from its PyPI package, converted once and cached.

One conversion per module into a temporary ``TRUSTDYN_HOME`` (~20-40 s on two cores), then
the chat model must answer a factual question through its own chat template. A second
conversion runs as the study runs it, in a low-priority background process, and must give
the same weights without drawing a bar.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from transformers import AutoTokenizer

from precompute.processes import in_background
from trustdyn.provenance import sha256_file
from trustdyn.suites import LoadOptions, Suite, load_checkpoint, weight_hash
from trustdyn.suites import smollm2 as smol

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(smol.importlib.util.find_spec(smol.PACKAGE) is None,
                       reason=f"needs {smol.INSTALL_LINE}"),
]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("smollm2-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRUSTDYN_HOME", str(root))
        yield root


@pytest.fixture(scope="module")
def converted(home: Path) -> tuple[Path, float]:
    """The converted folder and how long the (first, converting) call took."""
    start = time.perf_counter()
    folder = smol.smollm2_folder(progress=False)
    return folder, time.perf_counter() - start


@pytest.fixture(scope="module")
def suite(converted: tuple[Path, float]) -> Suite:
    return smol.smollm2_suite(progress=False)


def test_conversion_is_cached_with_provenance(converted: tuple[Path, float], home: Path
                                              ) -> None:
    folder, first_seconds = converted
    assert folder == home / "models" / "smollm2-135m-instruct"
    record = json.loads((folder / smol.PROVENANCE).read_text())
    assert record["gguf_sha256"] == sha256_file(smol.gguf_path())
    assert record["package_version"] == smol.package_version() == smol.PINNED_VERSION
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no temp left
    start = time.perf_counter()
    assert smol.smollm2_folder(progress=False) == folder
    second_seconds = time.perf_counter() - start
    assert second_seconds < 1.0 and second_seconds < first_seconds / 10


def test_chat_model_answers_paris(suite: Suite) -> None:
    assert suite.chat is not None
    model, tokenizer = load_checkpoint(suite.chat, LoadOptions(device="cpu"))
    assert weight_hash(model) == suite.chat.weight_hash
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    batch: Any = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
    with torch.no_grad():
        # PreTrainedModel's annotations do not include GenerationMixin.generate.
        out = cast(Any, model).generate(**batch, max_new_tokens=16, do_sample=False,
                                        pad_token_id=tokenizer.pad_token_id)
    answer = tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_tokenizer_round_trip_and_chat_template(converted: tuple[Path, float]) -> None:
    folder, _ = converted
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # Ids measured from the GGUF's own tokenizer (transformers' GGUF reader), before saving:
    # the saved copy must tokenise identically, special tokens included.
    assert tokenizer("What is the capital of France?").input_ids == [
        1780, 314, 260, 3575, 282, 4649, 47]
    assert tokenizer("<|im_start|>user\nhi<|im_end|>").input_ids == [1, 4093, 198, 6004, 2]
    texts = ["  two leading spaces\nand a\ttab ", "Unicode: café, naïve, 東京, 🙂",
             "3.14159 + 42", "<|im_start|>assistant\nParis.<|im_end|>"]
    for text in texts:
        assert tokenizer.decode(tokenizer(text).input_ids) == text
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|im_end|>")
    assert tokenizer.model_max_length == 8192
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}],
                                           add_generation_prompt=True, tokenize=False)
    assert prompt == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
                      "trained by Hugging Face<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                      "<|im_start|>assistant\n")


def test_the_study_converts_in_the_background_to_the_same_weights(
        converted: tuple[Path, float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    folder, _ = converted
    monkeypatch.setenv("TRUSTDYN_HOME", str(tmp_path))
    assert smol.conversion_pending()
    capfd.readouterr()
    with in_background(partial(smol.smollm2_folder, False)) as conversion:
        conversion.join(timeout=600)
    assert conversion.exitcode == 0
    assert "de-quantizing" not in capfd.readouterr().err  # quiet: not even the GGUF bar
    assert not smol.conversion_pending()
    background = smol.read_provenance(smol.cache_folder())
    assert background is not None
    assert background["weight_hash"] == (smol.read_provenance(folder) or {})["weight_hash"]


def test_nothing_is_pending_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> Path:
        raise smol.SuiteError("not installed")

    monkeypatch.setattr(smol, "gguf_path", missing)
    assert not smol.conversion_pending()
