"""Steered generation, streaming, concurrency and log-likelihood scoring on tiny models."""

from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from torch import nn

from tests.unit.test_steering import hook_count, make_vector
from trustdyn.generation import (
    GenerationError,
    IncrementalDecoder,
    PromptCache,
    batch_loglik,
    chat_prompt,
    encode_prompt,
    generate,
    generate_greedy_batch,
    generate_ids,
    stream_generate,
)
from trustdyn.steering import (
    Positions,
    SteeringError,
    SteeringVector,
    active_steering_count,
    has_dispatchers,
    steer,
)

PROMPT = "The capital of France is"
CHAT = [{"role": "user", "content": "Is the sky blue?"}]
# Strong enough to change a tiny random model's greedy continuation.
ALPHA = 12.0




def steered_ids(model, tokenizer, vector: SteeringVector | None, alpha: float = ALPHA,
                **kwargs) -> list[int]:
    return generate_ids(model, tokenizer, PROMPT, vector=vector, alpha=alpha,
                        max_new_tokens=kwargs.pop("max_new_tokens", 12), stop_at_eos=False,
                        **kwargs)


# --------------------------------------------------------------------------- prompts


def test_chat_prompt_uses_template_or_plain_fallback(tiny_tokenizer):
    assert chat_prompt(tiny_tokenizer, CHAT) == "<|user|> Is the sky blue?\n<|assistant|> "
    assert chat_prompt(tiny_tokenizer, "Is the sky blue?") == chat_prompt(tiny_tokenizer, CHAT)
    plain = copy.deepcopy(tiny_tokenizer)
    plain.chat_template = None
    messages = [{"role": "system", "content": "Be brief."}, *CHAT]
    assert chat_prompt(plain, messages) == "System: Be brief.\nUser: Is the sky blue?\nAssistant:"
    with pytest.raises(GenerationError, match="at least one message"):
        chat_prompt(tiny_tokenizer, [])
    with pytest.raises(GenerationError, match="'role' and 'content'"):
        chat_prompt(tiny_tokenizer, [{"role": "user"}])


def test_encode_prompt_renders_chat_without_extra_special_tokens(tiny_tokenizer):
    ids = encode_prompt(tiny_tokenizer, CHAT)
    assert tiny_tokenizer.decode(ids) == chat_prompt(tiny_tokenizer, CHAT)
    with pytest.raises(GenerationError, match="empty"):
        encode_prompt(tiny_tokenizer, "")


# --------------------------------------------------------------------------- generation


def test_greedy_loop_matches_transformers_generate(tiny_model, tiny_tokenizer):
    input_ids = torch.tensor([encode_prompt(tiny_tokenizer, PROMPT)])
    with torch.no_grad():
        reference = tiny_model.generate(input_ids, max_new_tokens=10, do_sample=False,
                                        pad_token_id=0)[0, input_ids.shape[1]:].tolist()
    eos = tiny_tokenizer.eos_token_id
    reference = reference[:reference.index(eos)] if eos in reference else reference
    assert generate_ids(tiny_model, tiny_tokenizer, PROMPT, max_new_tokens=10) == reference


def test_alpha_zero_reproduces_unsteered_generation(tiny_model, tiny_tokenizer):
    vec = make_vector(tiny_model, layer=1)
    clean = steered_ids(tiny_model, tiny_tokenizer, None)
    for positions in ("newest", "all"):
        assert steered_ids(tiny_model, tiny_tokenizer, vec, 0.0, positions=positions) == clean
    assert steered_ids(tiny_model, tiny_tokenizer, vec) != clean
    assert hook_count(tiny_model) == 0


def full_recompute_ids(model, tokenizer, vector, alpha, positions: Positions, n_new: int
                       ) -> list[int]:
    """Reference without a KV cache: re-run the whole sequence for every new token.

    Cached ``"newest"`` steering touches the prompt's last token and every generated one,
    so its no-cache equivalent is a mask from the prompt's last position onward.
    """
    ids = encode_prompt(tokenizer, PROMPT)
    n_prompt = len(ids)
    for _ in range(n_new):
        where: Positions | torch.Tensor = positions
        if positions == "newest":
            where = torch.arange(len(ids))[None, :] >= n_prompt - 1
        with torch.no_grad(), steer(model, vector, alpha, positions=where):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[n_prompt:]


@pytest.mark.parametrize("positions", ["newest", "all"])
def test_cached_generation_matches_full_recompute(tiny_model, tiny_tokenizer, positions):
    vec = make_vector(tiny_model, layer=1)
    cached = steered_ids(tiny_model, tiny_tokenizer, vec, 0.1, positions=positions,
                         max_new_tokens=8)
    assert cached == full_recompute_ids(tiny_model, tiny_tokenizer, vec, 0.1, positions, 8)


def test_newest_and_all_steer_differently(tiny_llama, tiny_tokenizer):
    vec = make_vector(tiny_llama, layer=1)
    newest = steered_ids(tiny_llama, tiny_tokenizer, vec, 0.1, positions="newest")
    everywhere = steered_ids(tiny_llama, tiny_tokenizer, vec, 0.1, positions="all")
    assert newest != everywhere


@pytest.mark.parametrize("positions", ["newest", "all"])
def test_batched_greedy_generation_matches_one_by_one(tiny_model, tiny_tokenizer, positions):
    vec = make_vector(tiny_model, layer=1)
    prompts = [PROMPT, "Hi", "Water boils at a temperature of", "a b c"]
    for vector in (None, vec):
        one_by_one = [generate(tiny_model, tiny_tokenizer, p, vector=vector, alpha=ALPHA,
                               positions=positions, max_new_tokens=8) for p in prompts]
        batched = generate_greedy_batch(tiny_model, tiny_tokenizer, prompts, vector=vector,
                                        alpha=ALPHA, positions=positions, max_new_tokens=8,
                                        batch_size=3)
        assert batched == one_by_one
    assert hook_count(tiny_model) == 0


def test_stream_joins_to_generate(tiny_model, tiny_tokenizer):
    vec = make_vector(tiny_model, layer=2)
    for kwargs in ({}, {"vector": vec, "alpha": ALPHA},
                   {"temperature": 1.5, "top_p": 0.9, "seed": 3}):
        text = generate(tiny_model, tiny_tokenizer, CHAT, max_new_tokens=16, **kwargs)
        pieces = list(stream_generate(tiny_model, tiny_tokenizer, CHAT, max_new_tokens=16,
                                      **kwargs))
        assert "".join(pieces) == text
        assert all(pieces)


def test_sampling_is_seeded_and_leaves_global_rng_alone(tiny_llama, tiny_tokenizer):
    state = torch.get_rng_state()
    runs = [steered_ids(tiny_llama, tiny_tokenizer, None, temperature=2.0, seed=s)
            for s in (0, 0, 1, 2, 3)]
    assert torch.equal(torch.get_rng_state(), state)
    assert runs[0] == runs[1]
    assert any(run != runs[0] for run in runs[2:])
    greedy = steered_ids(tiny_llama, tiny_tokenizer, None)
    assert steered_ids(tiny_llama, tiny_tokenizer, None, temperature=2.0, top_p=1e-6) == greedy


def test_generation_validates_arguments_at_the_call(tiny_llama, tiny_tokenizer):
    bad = make_vector(tiny_llama, layer=9)
    with pytest.raises(SteeringError, match="layer 9"):
        stream_generate(tiny_llama, tiny_tokenizer, PROMPT, vector=bad, alpha=1.0)
    with pytest.raises(GenerationError, match="temperature"):
        generate(tiny_llama, tiny_tokenizer, PROMPT, temperature=-1.0)
    with pytest.raises(GenerationError, match="top_p"):
        generate(tiny_llama, tiny_tokenizer, PROMPT, top_p=0.0)
    assert generate(tiny_llama, tiny_tokenizer, PROMPT, max_new_tokens=0) == ""


def test_incremental_decoder_never_splits_a_character(tiny_tokenizer):
    text = "héllo wörld 😀 ✓ ok"
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(tiny_tokenizer)
    pieces = [decoder.push(token) for token in ids]
    pieces.append(decoder.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)
    # The emoji spans several byte tokens, so some pushes must have held text back.
    assert pieces.count("") >= 2


def test_stream_keeps_steering_out_of_the_consumer(tiny_llama, tiny_tokenizer):
    clean_logits = tiny_llama(input_ids=torch.tensor([[5, 6, 7]])).logits
    stream = stream_generate(tiny_llama, tiny_tokenizer, PROMPT, vector=make_vector(tiny_llama),
                             alpha=ALPHA, max_new_tokens=30, stop_at_eos=False)
    next(stream)
    # Between pieces the consumer's context is unsteered but the hooks stay installed.
    assert active_steering_count() == 0 and has_dispatchers(tiny_llama)
    with torch.no_grad():
        assert torch.equal(tiny_llama(input_ids=torch.tensor([[5, 6, 7]])).logits, clean_logits)
    stream.close()
    assert hook_count(tiny_llama) == 0


def test_concurrent_generations_do_not_leak(tiny_model, tiny_tokenizer):
    """Three users share one model; a barrier forces their forward passes to interleave."""
    vectors = [make_vector(tiny_model, layer=1, seed=1), make_vector(tiny_model, layer=2, seed=2),
               None]

    def run(vector: SteeringVector | None) -> list[int]:
        return steered_ids(tiny_model, tiny_tokenizer, vector, max_new_tokens=10)

    solo = [run(v) for v in vectors]
    assert len({tuple(s) for s in solo}) == 3  # the three settings are distinguishable
    barrier = threading.Barrier(len(vectors), timeout=30)

    def rendezvous(_module: nn.Module, _args: object) -> None:
        # Every forward pass of every user waits here until all users are mid-pass together.
        barrier.wait()

    handle = tiny_model.get_input_embeddings().register_forward_pre_hook(rendezvous)
    try:
        with ThreadPoolExecutor(len(vectors)) as pool:
            together = list(pool.map(run, vectors))
    finally:
        handle.remove()
    assert together == solo
    assert hook_count(tiny_model) == 0


def test_steering_scope_around_generation_is_honoured(tiny_llama, tiny_tokenizer):
    """An outer steer() scope applies to generate() like the vector argument does."""
    vec = make_vector(tiny_llama, layer=1)
    with steer(tiny_llama, vec, ALPHA, positions="newest"):
        outer = steered_ids(tiny_llama, tiny_tokenizer, None)
    assert outer == steered_ids(tiny_llama, tiny_tokenizer, vec)


# --------------------------------------------------------------------------- scoring

PROMPTS = ["The capital of France is", "Water boils at", "Q: Is the sky blue?\tA:", "a quick"]
CONTINUATIONS = [" Paris.", " one hundred degrees.", " Yes", " brown fox jumps over"]


def manual_loglik(model: nn.Module, tokenizer, prompt: str, continuation: str) -> float:
    """Reference: one unpadded forward pass over prompt + continuation."""
    p = tokenizer(prompt)["input_ids"]
    c = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0].float(), -1)
    return float(sum(logprobs[len(p) - 1 + i, tok] for i, tok in enumerate(c)))


def cached_loglik(model: nn.Module, tokenizer, vector, alpha, prompt, continuation) -> float:
    """Reference for positions='newest': score token by token like cached generation."""
    p = tokenizer(prompt)["input_ids"]
    c = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    total, cache, step = 0.0, None, torch.tensor([p])
    for tok in c:
        with torch.no_grad(), steer(model, vector, alpha, positions="newest"):
            out = model(input_ids=step, cache=cache, use_cache=True)
        cache = out["cache"]
        total += float(torch.log_softmax(out.logits[0, -1].float(), -1)[tok])
        step = torch.tensor([[tok]])
    return total


def test_batch_loglik_matches_reference_and_single_rows(tiny_model, tiny_tokenizer):
    batched = batch_loglik(tiny_model, tiny_tokenizer, PROMPTS, CONTINUATIONS, batch_size=3)
    single = np.array([batch_loglik(tiny_model, tiny_tokenizer, [p], [c])[0]
                       for p, c in zip(PROMPTS, CONTINUATIONS, strict=True)])
    reference = [manual_loglik(tiny_model, tiny_tokenizer, p, c)
                 for p, c in zip(PROMPTS, CONTINUATIONS, strict=True)]
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(batched, reference, rtol=1e-5, atol=1e-5)
    assert (batched < 0).all()
    lengths = [len(tiny_tokenizer(c, add_special_tokens=False)["input_ids"]) for c in CONTINUATIONS]
    mean = batch_loglik(tiny_model, tiny_tokenizer, PROMPTS, CONTINUATIONS, reduction="mean")
    np.testing.assert_allclose(mean, batched / np.array(lengths), rtol=1e-5)


def test_batch_loglik_under_steering(tiny_model, tiny_tokenizer):
    vec = make_vector(tiny_model, layer=1)
    clean = batch_loglik(tiny_model, tiny_tokenizer, PROMPTS, CONTINUATIONS)
    zero = batch_loglik(tiny_model, tiny_tokenizer, PROMPTS, CONTINUATIONS, vector=vec, alpha=0.0)
    np.testing.assert_array_equal(zero, clean)
    batched = {pos: batch_loglik(tiny_model, tiny_tokenizer, PROMPTS, CONTINUATIONS, vector=vec,
                                 alpha=ALPHA, positions=pos, batch_size=4)
               for pos in ("all", "newest")}
    single = np.array([batch_loglik(tiny_model, tiny_tokenizer, [p], [c], vector=vec,
                                    alpha=ALPHA)[0]
                       for p, c in zip(PROMPTS, CONTINUATIONS, strict=True)])
    np.testing.assert_allclose(batched["all"], single, rtol=1e-5, atol=1e-5)
    assert not np.allclose(batched["all"], clean)
    assert not np.allclose(batched["all"], batched["newest"])
    cached = [cached_loglik(tiny_model, tiny_tokenizer, vec, ALPHA, p, c)
              for p, c in zip(PROMPTS, CONTINUATIONS, strict=True)]
    np.testing.assert_allclose(batched["newest"], cached, rtol=1e-4, atol=1e-4)
    assert hook_count(tiny_model) == 0


def test_prompt_cache_scores_like_the_full_forward(tiny_model, tiny_tokenizer):
    """The shared-prefix path equals full forwards: unsteered, steered (newest), reused."""
    vec = make_vector(tiny_model, layer=1)
    # Shared prompts (several answers per question) and a one-token prompt (no prefix).
    prompts = [*PROMPTS, PROMPTS[0], PROMPTS[2], "a"]
    conts = [*CONTINUATIONS, " Lyon, probably.", " No", " b c"]
    cache = PromptCache(tiny_model)
    for vector, alpha in ((None, 0.0), (vec, ALPHA), (vec, -ALPHA), (None, 0.0)):
        kwargs = {"vector": vector, "alpha": alpha, "positions": "newest", "batch_size": 3}
        full = batch_loglik(tiny_model, tiny_tokenizer, prompts, conts, **kwargs)
        shared = batch_loglik(tiny_model, tiny_tokenizer, prompts, conts, prompt_cache=cache,
                              **kwargs)
        np.testing.assert_allclose(shared, full, rtol=1e-5, atol=1e-5)
    only_bos = batch_loglik(tiny_model, tiny_tokenizer, ["a"], [" b c"], prompt_cache=cache)
    np.testing.assert_allclose(only_bos, batch_loglik(tiny_model, tiny_tokenizer, ["a"],
                                                      [" b c"]), rtol=1e-5, atol=1e-5)
    with pytest.raises(GenerationError, match="another model"):
        batch_loglik(copy.deepcopy(tiny_model), tiny_tokenizer, ["a"], [" b"],
                     prompt_cache=cache)
    assert hook_count(tiny_model) == 0


def test_batch_loglik_rejects_bad_input(tiny_llama, tiny_tokenizer):
    with pytest.raises(GenerationError, match="2 prompts but 1"):
        batch_loglik(tiny_llama, tiny_tokenizer, ["a", "b"], [" c"])
    with pytest.raises(GenerationError, match="no tokens"):
        batch_loglik(tiny_llama, tiny_tokenizer, ["a"], [""])
    with pytest.raises(GenerationError, match="empty after tokenisation"):
        batch_loglik(tiny_llama, tiny_tokenizer, [""], [" c"])
    with pytest.raises(GenerationError, match="batch_size"):
        batch_loglik(tiny_llama, tiny_tokenizer, ["a"], [" c"], batch_size=0)
