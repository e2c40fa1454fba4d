"""Batched activation extraction: exactness against one-at-a-time runs, order, hooks, pads."""

from __future__ import annotations

import copy

import pytest
import torch

from trustdyn.activations import (
    Activations,
    extract_activations,
    left_pad,
    length_sorted_batches,
    position_ids_from_mask,
    tokenize_left_truncated,
)
from trustdyn.blocks import SITE, decoder_blocks

TEXTS = [
    "The capital of France is Paris.",
    "hi",
    "Water boils at one hundred degrees. Some people say the moon is made of cheese.",
    "a quick brown fox",
    "Q: Is the sky blue?\tA: Yes, on a clear day.",
    "lazy dog",
    "<|user|> hello <|assistant|> hi there, the capital of France is Paris.",
]


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_batched_equals_one_at_a_time(tiny_model, tiny_tokenizer, pooling):
    batched = extract_activations(tiny_model, tiny_tokenizer, TEXTS, batch_size=4,
                                  pooling=pooling)
    single = extract_activations(tiny_model, tiny_tokenizer, TEXTS, batch_size=1,
                                 pooling=pooling)
    n_layers = len(decoder_blocks(tiny_model))
    assert batched.blocks.shape == (n_layers, len(TEXTS), tiny_model.config.hidden_size)
    assert batched.blocks.dtype == torch.float32 and batched.blocks.device.type == "cpu"
    torch.testing.assert_close(batched.blocks, single.blocks, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched.embeddings, single.embeddings, atol=1e-6, rtol=1e-6)
    assert batched.pooling == pooling and batched.site == SITE


def test_last_token_matches_hidden_states(tiny_model, tiny_tokenizer):
    """Block ℓ's output is transformers' hidden_states[ℓ + 1] (the last one is post-norm)."""
    acts = extract_activations(tiny_model, tiny_tokenizer, TEXTS, batch_size=3)
    with torch.inference_mode():
        for i, text in enumerate(TEXTS):
            out = tiny_model(**tiny_tokenizer(text, return_tensors="pt"),
                             output_hidden_states=True)
            hidden = out.hidden_states
            torch.testing.assert_close(acts.embeddings[i], hidden[0][0, -1])
            for layer in range(acts.n_layers - 1):
                torch.testing.assert_close(acts.blocks[layer, i], hidden[layer + 1][0, -1],
                                           atol=1e-5, rtol=1e-5)


def test_mean_pooling_ignores_pads(tiny_llama, tiny_tokenizer):
    texts = ["hi", TEXTS[2]]  # very different lengths: "hi" gets many pads
    acts = extract_activations(tiny_llama, tiny_tokenizer, texts, batch_size=2, pooling="mean")
    with torch.inference_mode():
        hidden = tiny_llama(**tiny_tokenizer("hi", return_tensors="pt"),
                            output_hidden_states=True).hidden_states
    torch.testing.assert_close(acts.blocks[0, 0], hidden[1][0].mean(dim=0), atol=1e-5,
                               rtol=1e-5)
    torch.testing.assert_close(acts.embeddings[0], hidden[0][0].mean(dim=0))


def test_original_order_is_restored(tiny_llama, tiny_tokenizer):
    forward = extract_activations(tiny_llama, tiny_tokenizer, TEXTS, batch_size=2)
    backward = extract_activations(tiny_llama, tiny_tokenizer, TEXTS[::-1], batch_size=2)
    torch.testing.assert_close(forward.blocks, backward.blocks.flip(1), atol=1e-5, rtol=1e-5)
    # Distinct texts give distinct rows, so a scrambled order could not pass the check.
    assert not torch.allclose(forward.blocks[:, 0], forward.blocks[:, 1])


def test_hooks_removed_after_success_and_after_error(tiny_llama, tiny_tokenizer):
    before = _hook_count(tiny_llama)
    extract_activations(tiny_llama, tiny_tokenizer, TEXTS[:3], batch_size=2)
    assert _hook_count(tiny_llama) == before

    def explode(*_args):
        raise RuntimeError("boom")

    handle = decoder_blocks(tiny_llama)[1].register_forward_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            extract_activations(tiny_llama, tiny_tokenizer, TEXTS[:3], batch_size=2)
        assert _hook_count(tiny_llama) == before + 1  # only our own hook is left
    finally:
        handle.remove()


def test_lm_head_is_not_computed(tiny_llama, tiny_tokenizer):
    calls = []
    handle = tiny_llama.lm_head.register_forward_hook(lambda *_: calls.append(1))
    try:
        extract_activations(tiny_llama, tiny_tokenizer, TEXTS[:2])
    finally:
        handle.remove()
    assert calls == []


def test_tokenizer_and_model_state_restored(tiny_llama, tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.padding_side = "right"
    tok.truncation_side = "right"
    tiny_llama.train()
    try:
        right = extract_activations(tiny_llama, tok, TEXTS, batch_size=3)
        assert tiny_llama.training
    finally:
        tiny_llama.eval()
    assert (tok.padding_side, tok.truncation_side) == ("right", "right")
    left = extract_activations(tiny_llama, tiny_tokenizer, TEXTS, batch_size=3)
    torch.testing.assert_close(right.blocks, left.blocks)  # eval mode: no dropout noise


def test_tokenizer_without_pad_token_uses_eos(tiny_llama, tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.pad_token = None
    assert tok.pad_token_id is None
    got = extract_activations(tiny_llama, tok, TEXTS, batch_size=4)
    want = extract_activations(tiny_llama, tiny_tokenizer, TEXTS, batch_size=4)
    torch.testing.assert_close(got.blocks, want.blocks)


def test_long_texts_are_truncated_from_the_left(tiny_llama, tiny_tokenizer):
    text = TEXTS[2]
    full = tiny_tokenizer(text)["input_ids"]
    assert len(full) > 5
    assert tokenize_left_truncated(tiny_tokenizer, [text], 5) == [full[-5:]]
    assert tiny_tokenizer.truncation_side == "right"
    truncated = extract_activations(tiny_llama, tiny_tokenizer, [text], max_length=5)
    tail_text = tiny_tokenizer.decode(full[-5:])
    assert tiny_tokenizer(tail_text)["input_ids"] == full[-5:]
    tail = extract_activations(tiny_llama, tiny_tokenizer, [tail_text])
    torch.testing.assert_close(truncated.blocks, tail.blocks)


def test_low_precision_model_returns_float32(tiny_llama, tiny_tokenizer):
    acts = extract_activations(tiny_llama.to(torch.bfloat16), tiny_tokenizer, TEXTS[:3])
    assert acts.blocks.dtype == torch.float32 and acts.embeddings.dtype == torch.float32
    assert torch.isfinite(acts.blocks).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"texts": []}, "empty"),
        ({"texts": "one string"}, "single string"),
        ({"texts": ["ok", ""]}, "no tokens"),
        ({"texts": ["ok"], "pooling": "max"}, "pooling"),
        ({"texts": ["ok"], "batch_size": 0}, "batch_size"),
        ({"texts": ["ok"], "max_length": 0}, "max_length"),
    ],
)
def test_bad_arguments_raise_clear_errors(tiny_llama, tiny_tokenizer, kwargs, match):
    with pytest.raises(ValueError, match=match):
        extract_activations(tiny_llama, tiny_tokenizer, **kwargs)


def test_helpers():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert position_ids_from_mask(mask).tolist() == [[0, 1, 2], [0, 0, 0]]
    assert length_sorted_batches([1, 3, 2, 3], 2) == [[1, 3], [2, 0]]


def test_activations_shape_validation():
    with pytest.raises(ValueError, match="disagree"):
        Activations(blocks=torch.zeros(2, 3, 4), embeddings=torch.zeros(3, 5), pooling="last")


def test_absolute_position_model_needs_and_gets_mask_positions(tiny_tokenizer):
    """GPT-2 learns absolute positions: left padding is only exact with mask-derived ids.

    (The RoPE families are shift-invariant, so this family is the one that would expose
    default ``arange`` position ids under left padding.)
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tokenizer), n_embd=32, n_layer=2,
                                       n_head=4, n_positions=128, bos_token_id=1,
                                       eos_token_id=2)).eval()
    batched = extract_activations(model, tiny_tokenizer, TEXTS, batch_size=4)
    single = extract_activations(model, tiny_tokenizer, TEXTS, batch_size=1)
    torch.testing.assert_close(batched.blocks, single.blocks, atol=1e-5, rtol=1e-5)
