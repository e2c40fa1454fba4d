"""Steered text generation and scoring: chat prompts, (streamed) generation, log-likelihoods.

Generation is a small token loop over the model's KV cache rather than
``model.generate``: the loop enters the steering scope around each forward call only
(:class:`trustdyn.steering.Steering`), which keeps a streamed generator correct when
Streamlit's ``st.write_stream`` consumes it piece by piece, and it samples with a local
``torch.Generator`` so concurrent users never share or disturb the global RNG.

Prompts: a ``str`` is used verbatim (with the tokenizer's usual special tokens, e.g.
BOS); a list of ``{"role", "content"}`` messages is rendered with :func:`chat_prompt` and
tokenised without adding special tokens again (chat templates already contain them).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import DynamicCache

from trustdyn.activations import left_pad, position_ids_from_mask
from trustdyn.schema import Positions
from trustdyn.steering import Steering, SteeringVector

Prompt = str | Sequence[dict[str, str]]
"""A raw text prompt, or chat messages ``[{"role": ..., "content": ...}, ...]``."""

_FALLBACK_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}


class GenerationError(ValueError):
    """A user-facing problem with a generation or scoring request."""


# --------------------------------------------------------------------------- prompts


def chat_prompt(tokenizer: Any, messages: Sequence[dict[str, str]] | str) -> str:
    """Render chat messages as the text the model expects, ending where the assistant replies.

    Uses the tokenizer's chat template with ``add_generation_prompt=True``. Tokenizers
    without a template (base checkpoints) get a plain format, one line per message,
    ``"System: …"``, ``"User: …"``, ``"Assistant: …"``, ending with ``"Assistant:"``.

    Args:
        tokenizer: A Hugging Face tokenizer.
        messages: Messages with ``role`` and ``content``, or a string taken as one user
            message.

    Raises:
        GenerationError: if there are no messages or one lacks a role or content.

    """
    msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
    if not msgs:
        raise GenerationError("A chat prompt needs at least one message.")
    for msg in msgs:
        if not isinstance(msg.get("role"), str) or not isinstance(msg.get("content"), str):
            raise GenerationError(
                f"Chat messages need string 'role' and 'content' fields, got {msg!r}."
            )
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return str(text)
    lines = [f"{_FALLBACK_ROLES.get(m['role'], m['role'].title())}: {m['content']}" for m in msgs]
    return "\n".join([*lines, "Assistant:"])


def encode_prompt(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Tokenise a raw or chat prompt (see the module docstring for special tokens)."""
    if isinstance(prompt, str):
        ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    else:
        ids = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    if not ids:
        raise GenerationError("The prompt is empty after tokenisation; type something.")
    return list(ids)


def eos_token_ids(model: nn.Module, tokenizer: Any) -> set[int]:
    """Return every token id that ends a reply: the tokenizer's and the model's EOS."""
    ids: set[int] = set()
    for source in (getattr(tokenizer, "eos_token_id", None),
                   getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, list | tuple):
            ids.update(int(i) for i in source)
    return ids


# --------------------------------------------------------------------------- token loop


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is picked: greedy when ``temperature == 0``."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise GenerationError(f"temperature must be >= 0, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p}.")


def _pick_next(logits: torch.Tensor, sampling: SamplingConfig,
               generator: torch.Generator | None) -> int:
    """Pick the next token from ``logits`` [vocab] (float32)."""
    if sampling.temperature == 0 or generator is None:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the top token always stays).
        keep = (torch.cumsum(sorted_probs, dim=-1) - sorted_probs) < sampling.top_p
        filtered = torch.zeros_like(probs)
        filtered[order[keep]] = sorted_probs[keep]
        probs = filtered
    return int(torch.multinomial(probs, 1, generator=generator))


def _cache_of(output: Any) -> Any:
    """Return the KV cache from a model output (``cache`` in transformers ≥ 5.x)."""
    keys = output.keys()
    return output["cache"] if "cache" in keys else output["past_key_values"]


def token_stream(
    model: nn.Module,
    input_ids: Sequence[int],
    *,
    vector: SteeringVector | None = None,
    alpha: float = 0.0,
    positions: Positions = "newest",
    max_new_tokens: int = 64,
    sampling: SamplingConfig | None = None,
    stop_ids: set[int] | None = None,
) -> Generator[int, None, None]:
    """Yield new token ids one at a time: the tokenizer-free core of generation.

    Each step runs one forward pass over the new token(s) with the KV cache; steering is
    active exactly during those forward calls. A stop token ends the stream without
    being yielded.

    Args:
        model: A causal LM in eval mode.
        input_ids: The prompt's token ids.
        vector: Steering vector, or ``None``.
        alpha: Signed strength (see :func:`trustdyn.steering.signed_alpha`).
        positions: ``"newest"`` (default, the paper's hook) or ``"all"``.
        max_new_tokens: Upper bound on yielded tokens.
        sampling: Greedy by default.
        stop_ids: Token ids that end generation (e.g. :func:`eos_token_ids`).

    """
    if max_new_tokens < 0:
        raise GenerationError(f"max_new_tokens must be >= 0, got {max_new_tokens}.")
    if not input_ids:
        raise GenerationError("Cannot generate from an empty prompt.")
    # Validate eagerly (here, not at the first next()) so a bad vector fails at the call.
    steering = Steering(model, vector, alpha, positions=positions)
    return _run_tokens(model, list(input_ids), steering, max_new_tokens,
                       sampling or SamplingConfig(), stop_ids or set())


def _run_tokens(model: nn.Module, input_ids: list[int], steering: Steering,
                max_new_tokens: int, sampling: SamplingConfig, stops: set[int]
                ) -> Generator[int, None, None]:
    """Run the token loop behind :func:`token_stream` (arguments already validated)."""
    device = next(model.parameters()).device
    generator = (torch.Generator(device=device).manual_seed(sampling.seed)
                 if sampling.temperature > 0 else None)
    step_ids = torch.tensor([input_ids], dtype=torch.long, device=device)  # [1, t]
    cache: Any = None
    # hold() is a reference count, safe to keep across yields; active() is context-local
    # and therefore wraps only the forward call.
    with steering.hold():
        for _ in range(max_new_tokens):
            with torch.inference_mode(), steering.active():
                # logits_to_keep=1: only the last position's logits are needed.
                output = model(input_ids=step_ids, cache=cache, use_cache=True,
                               logits_to_keep=1)
            cache = _cache_of(output)
            token = _pick_next(output.logits[0, -1].float(), sampling, generator)
            if token in stops:
                return
            yield token
            step_ids = torch.tensor([[token]], dtype=torch.long, device=device)


class IncrementalDecoder:
    """Turn a growing list of token ids into new text pieces, never splitting a character.

    Decodes the whole sequence each time and emits the new suffix; while the text ends in
    an incomplete multi-byte character (decoded as U+FFFD) it waits for more tokens.
    """

    def __init__(self, tokenizer: Any) -> None:
        """Start with no tokens."""
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._emitted = ""

    def _decode(self) -> str:
        return str(self._tokenizer.decode(self._ids, skip_special_tokens=True,
                                          clean_up_tokenization_spaces=False))

    def push(self, token: int) -> str:
        """Add one token; return the newly completed text (possibly empty)."""
        self._ids.append(token)
        text = self._decode()
        if text.endswith("\ufffd") or not text.startswith(self._emitted):
            return ""
        piece, self._emitted = text[len(self._emitted):], text
        return piece

    def flush(self) -> str:
        """Return whatever text is still pending (e.g. a truly invalid byte at the end)."""
        text = self._decode()
        if not text.startswith(self._emitted):
            return ""
        piece, self._emitted = text[len(self._emitted):], text
        return piece

    @property
    def text(self) -> str:
        """The full decoded text so far."""
        return self._decode()


def generate_ids(
    model: nn.Module, tokenizer: Any, prompt: Prompt, *, vector: SteeringVector | None = None,
    alpha: float = 0.0, positions: Positions = "newest", max_new_tokens: int = 64,
    temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, stop_at_eos: bool = True,
) -> list[int]:
    """Return the generated token ids (see :func:`generate` for the arguments)."""
    return list(_tokens(model, tokenizer, prompt, vector, alpha, positions, max_new_tokens,
                        SamplingConfig(temperature, top_p, seed), stop_at_eos))


def _tokens(model: nn.Module, tokenizer: Any, prompt: Prompt, vector: SteeringVector | None,
            alpha: float, positions: Positions, max_new_tokens: int,
            sampling: SamplingConfig, stop_at_eos: bool) -> Generator[int, None, None]:
    """Encode the prompt and run :func:`token_stream` with the tokenizer's stop tokens."""
    return token_stream(
        model, encode_prompt(tokenizer, prompt), vector=vector, alpha=alpha,
        positions=positions, max_new_tokens=max_new_tokens, sampling=sampling,
        stop_ids=eos_token_ids(model, tokenizer) if stop_at_eos else set(),
    )


def generate(
    model: nn.Module, tokenizer: Any, prompt: Prompt, *, vector: SteeringVector | None = None,
    alpha: float = 0.0, positions: Positions = "newest", max_new_tokens: int = 64,
    temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, stop_at_eos: bool = True,
) -> str:
    """Generate a reply, optionally steered; greedy unless ``temperature > 0``.

    Args:
        model: A causal LM in eval mode.
        tokenizer: Its tokenizer.
        prompt: Raw text, or chat messages (rendered with :func:`chat_prompt`).
        vector: Steering vector, or ``None`` for the unsteered model.
        alpha: Signed strength in units of ``vector.scale``.
        positions: ``"newest"`` (the paper's setting) or ``"all"``; see
            :class:`trustdyn.steering.Steering`.
        max_new_tokens: Maximum number of new tokens.
        temperature: 0 for greedy decoding, otherwise the sampling temperature.
        top_p: Nucleus-sampling mass (only when sampling).
        seed: Seed of the local sampling generator.
        stop_at_eos: Stop at the tokenizer's / model's end-of-sequence token.

    Returns:
        The generated text (special tokens removed), equal to ``"".join(stream_generate(...))``.

    """
    ids = generate_ids(model, tokenizer, prompt, vector=vector, alpha=alpha,
                       positions=positions, max_new_tokens=max_new_tokens,
                       temperature=temperature, top_p=top_p, seed=seed,
                       stop_at_eos=stop_at_eos)
    return str(tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))


def generate_greedy_batch(
    model: nn.Module, tokenizer: Any, prompts: Sequence[str], *,
    vector: SteeringVector | None = None, alpha: float = 0.0, positions: Positions = "newest",
    max_new_tokens: int = 64, batch_size: int = 32,
) -> list[str]:
    """Return :func:`generate`'s greedy reply to each raw-text prompt, many per forward pass.

    Prompts are left-padded (position ids counted from each row's first real token, pads
    masked out) and decoded together over one KV cache; a row stops at its end-of-sequence
    token. Steering covers what :func:`generate` steers: with ``positions="newest"`` the
    prompt's last token and every new token. Replies equal :func:`generate`'s up to
    float32 round-off in the logits (which can only matter at an exact tie).
    """
    stops = eos_token_ids(model, tokenizer)
    replies: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = [encode_prompt(tokenizer, p) for p in prompts[start:start + batch_size]]
        for ids in _greedy_rows(model, chunk, vector, alpha, positions, max_new_tokens, stops):
            replies.append(str(tokenizer.decode(ids, skip_special_tokens=True,
                                                clean_up_tokenization_spaces=False)))
    return replies


def _greedy_rows(model: nn.Module, prompts: list[list[int]], vector: SteeringVector | None,
                 alpha: float, positions: Positions, max_new_tokens: int, stops: set[int]
                 ) -> list[list[int]]:
    """Return each prompt's greedy token ids (without the stop token), decoded as one batch."""
    device = next(model.parameters()).device
    ids, attention = left_pad(prompts, pad_id=0)
    steer_mask = torch.zeros(ids.shape, dtype=torch.bool)
    steer_mask[:, -1] = True  # left-padded: every prompt's last token is in the last column
    where: Positions | torch.Tensor = steer_mask if positions == "newest" else positions
    step_ids, step_pos = ids, position_ids_from_mask(attention)
    out: list[list[int]] = [[] for _ in prompts]
    running = [True] * len(prompts)
    cache: Any = None
    for _ in range(max_new_tokens):
        steering = Steering(model, vector, alpha, positions=where)
        with torch.inference_mode(), steering.hold(), steering.active():
            output = model(input_ids=step_ids.to(device), attention_mask=attention.to(device),
                           position_ids=step_pos.to(device), cache=cache, use_cache=True,
                           logits_to_keep=1)
        cache = _cache_of(output)
        tokens = output.logits[:, -1].float().argmax(dim=-1).cpu()
        for row, token in enumerate(tokens.tolist()):
            running[row] = running[row] and token not in stops
            if running[row]:
                out[row].append(token)
        if not any(running):
            break
        # Every later forward holds one new token per row: "newest" steers all of them.
        where = "all"
        step_ids, step_pos = tokens[:, None], step_pos[:, -1:] + 1
        attention = torch.cat([attention, torch.ones((len(prompts), 1), dtype=torch.long)], 1)
    return out


def stream_generate(
    model: nn.Module, tokenizer: Any, prompt: Prompt, *, vector: SteeringVector | None = None,
    alpha: float = 0.0, positions: Positions = "newest", max_new_tokens: int = 64,
    temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, stop_at_eos: bool = True,
) -> Generator[str, None, None]:
    """Yield the text of :func:`generate` piece by piece as tokens are produced.

    Suits ``st.write_stream``. Steering is active only inside this generator's forward
    calls, so the consumer's code between pieces runs unsteered. Close the generator (or
    exhaust it) to release the model's steering hooks promptly; an abandoned generator
    releases them when it is garbage-collected.

    Raises:
        GenerationError, SteeringError: at the call (not at the first piece) for an empty
            prompt, a vector that does not fit the model, or invalid settings.

    """
    tokens = _tokens(model, tokenizer, prompt, vector, alpha, positions, max_new_tokens,
                     SamplingConfig(temperature, top_p, seed), stop_at_eos)
    return _stream_text(IncrementalDecoder(tokenizer), tokens)


def _stream_text(decoder: IncrementalDecoder, tokens: Generator[int, None, None]
                 ) -> Generator[str, None, None]:
    """Yield the non-empty text pieces of ``tokens`` as ``decoder`` completes them."""
    try:
        for token in tokens:
            piece = decoder.push(token)
            if piece:
                yield piece
    finally:
        # Closing the stream early must release the token loop's hooks now, not at GC.
        tokens.close()
    tail = decoder.flush()
    if tail:
        yield tail


# --------------------------------------------------------------------------- scoring


def batch_loglik(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    continuations: Sequence[str],
    *,
    vector: SteeringVector | None = None,
    alpha: float = 0.0,
    positions: Positions = "all",
    batch_size: int = 16,
    reduction: Literal["sum", "mean"] = "sum",
    progress: bool = False,
    prompt_cache: PromptCache | None = None,
) -> np.ndarray:
    """Score ``log p(continuation | prompt)`` for each pair, batched, optionally steered.

    The prompt is tokenised as in :func:`encode_prompt` (raw text) and the continuation
    without special tokens; the two id lists are concatenated (so no BPE merge crosses
    the boundary) and left-padded with position ids counted from each row's first real
    token and pads masked out, which keeps every real token's positions and attention
    those of scoring it alone; only the continuation's positions get logits.

    Args:
        model: A causal LM in eval mode.
        tokenizer: Its tokenizer.
        prompts: ``n`` prompts (may be empty strings if the tokenizer adds a BOS token).
        continuations: ``n`` continuations, each at least one token long.
        vector: Steering vector, or ``None``.
        alpha: Signed strength.
        positions: ``"all"`` steers every position; ``"newest"`` steers what cached
            generation with ``positions="newest"`` would have steered, i.e. the prompt's
            last token and every continuation token.
        batch_size: Pairs per forward pass.
        reduction: ``"sum"`` of the continuation's token log-probabilities, or their
            ``"mean"`` per token (for perplexity, ``exp(-mean)``).
        progress: Show a progress bar over batches.
        prompt_cache: Unsteered prompt states of ``model`` to reuse and extend (see
            :class:`PromptCache`); used when nothing steers a prompt's tokens before its
            last one (no vector, or ``positions="newest"``). Scores equal those without it
            up to float32 round-off.

    Returns:
        ``[n]`` float64 scores.

    Raises:
        GenerationError: on mismatched lengths, an empty prompt or continuation, or a
            bad ``batch_size`` / ``reduction``.

    """
    if len(prompts) != len(continuations):
        raise GenerationError(
            f"Got {len(prompts)} prompts but {len(continuations)} continuations."
        )
    if batch_size < 1:
        raise GenerationError(f"batch_size must be >= 1, got {batch_size}.")
    if reduction not in ("sum", "mean"):
        raise GenerationError(f"reduction must be 'sum' or 'mean', got {reduction!r}.")
    pairs = [_encode_pair(tokenizer, p, c) for p, c in zip(prompts, continuations, strict=True)]
    trims = "logits_to_keep" in inspect.signature(model.forward).parameters
    # Only an unsteered prefix is the same under every condition (see PromptCache).
    shared = prompt_cache if vector is None or positions == "newest" else None
    if shared is not None and shared.model is not model:
        raise GenerationError("The prompt cache holds another model's states.")
    scores = np.empty(len(pairs), dtype=np.float64)
    starts = range(0, len(pairs), batch_size)
    for start in tqdm(starts, desc="log-likelihood", disable=not progress):
        chunk = pairs[start:start + batch_size]
        sums, counts = (_score_batch(model, chunk, vector, alpha, positions, trims)
                        if shared is None else _score_cached(model, chunk, shared, vector, alpha))
        scores[start:start + len(chunk)] = sums / counts if reduction == "mean" else sums
    return scores


@functools.lru_cache(maxsize=1 << 16)
def _token_ids(tokenizer: Any, text: str, special: bool) -> tuple[int, ...]:
    """Return ``text``'s token ids; cached, as every steering condition scores the same texts."""
    return tuple(tokenizer(text, add_special_tokens=special)["input_ids"])


def _encode_pair(tokenizer: Any, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """Return (prompt ids, continuation ids) or raise when either is empty."""
    prompt_ids = list(_token_ids(tokenizer, prompt, True))
    cont_ids = list(_token_ids(tokenizer, continuation, False))
    if not prompt_ids:
        raise GenerationError(
            f"Prompt {prompt!r} is empty after tokenisation and the tokenizer adds no BOS "
            "token; give every continuation some context."
        )
    if not cont_ids:
        raise GenerationError(f"Continuation {continuation!r} has no tokens to score.")
    return prompt_ids, cont_ids


def _score_batch(model: nn.Module, pairs: list[tuple[list[int], list[int]]],
                 vector: SteeringVector | None, alpha: float, positions: Positions,
                 trims: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return (sum of continuation log-probs [b], continuation lengths [b]) for a batch.

    Rows are left-padded (with position ids counted from each row's first real token), so
    every continuation ends in the last column and only the last ``longest continuation
    + 1`` positions need logits: the vocabulary projection and softmax, the larger part of
    a small model's cost, skip the prompts.
    """
    device = next(model.parameters()).device
    sequences = [p + c for p, c in pairs]
    ids, attention = left_pad(sequences, pad_id=0)  # [b, s]; pads are masked out
    width = ids.shape[1]
    keep = max(len(c) for _, c in pairs) + 1
    # target[i, t] marks columns whose token belongs to the continuation; the newest-
    # position mask starts one column earlier, at the prompt's last token.
    target = torch.zeros((len(pairs), width), dtype=torch.bool)
    steer_mask = torch.zeros((len(pairs), width), dtype=torch.bool)
    for row, (_, c_ids) in enumerate(pairs):
        target[row, width - len(c_ids):] = True
        steer_mask[row, width - len(c_ids) - 1:] = True
    where: Positions | torch.Tensor = steer_mask if positions == "newest" else positions
    steering = Steering(model, vector, alpha, positions=where)
    with torch.inference_mode(), steering.hold(), steering.active():
        logits = _last_logits(model, ids.to(device), attention.to(device), keep,
                              trims)  # [b, k, V]
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # predicts the last k-1
    tail = ids[:, width - keep + 1:]
    token_lp = logprobs.gather(-1, tail[..., None].to(device))[..., 0].cpu()  # [b, k-1]
    scored = target[:, width - keep + 1:]
    token_lp = torch.where(scored, token_lp, torch.zeros_like(token_lp))
    sums = token_lp.double().sum(dim=1).numpy()
    counts = scored.sum(dim=1).double().numpy()
    return sums, counts


def _last_logits(model: nn.Module, ids: torch.Tensor, attention: torch.Tensor,
                 keep: int, trims: bool) -> torch.Tensor:
    """Return the logits of the last ``keep`` positions of a left-padded batch.

    ``trims``: the model's forward takes ``logits_to_keep`` (most Hugging Face causal
    LMs), so the vocabulary projection runs on those positions only.
    """
    inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": attention,
                              "position_ids": position_ids_from_mask(attention),
                              "use_cache": False}
    if trims:
        return model(**inputs, logits_to_keep=keep).logits
    return model(**inputs).logits[:, -keep:]


# --------------------------------------------------------------------------- shared prompts

_KV = list[tuple[torch.Tensor, torch.Tensor]]
"""One sequence's keys and values, per layer ``[1, heads, tokens, head_dim]``."""


class PromptCache:
    """Unsteered keys and values of prompt prefixes, computed once and reused.

    With no steering, or with ``positions="newest"``, nothing steers a prompt's tokens
    before its last one, so their keys and values are the same under every steering
    condition: :func:`batch_loglik` computes them once per distinct prefix and then runs
    only each prompt's last token and its continuation over them — the repeated chat
    template and question, most of a likelihood's cost, are not recomputed for every
    answer, strength, layer and vector. Prefixes beyond ``max_bytes`` are recomputed
    whenever they are used.
    """

    def __init__(self, model: nn.Module, max_bytes: int = 1 << 29) -> None:
        """Start empty for ``model`` (its states only)."""
        self.model = model
        self.max_bytes = max_bytes
        self._states: dict[tuple[int, ...], _KV] = {}
        self._bytes = 0

    def states(self, prefixes: Sequence[tuple[int, ...]]) -> list[_KV]:
        """Return each non-empty prefix's states, computing the missing ones in one batch."""
        missing = list(dict.fromkeys(p for p in prefixes if p not in self._states))
        fresh = dict(zip(missing, _prefix_states(self.model, missing), strict=True))
        for prefix, kv in fresh.items():
            size = sum(k.nbytes + v.nbytes for k, v in kv)
            if self._bytes + size <= self.max_bytes:
                self._states[prefix] = kv
                self._bytes += size
        return [self._states[p] if p in self._states else fresh[p] for p in prefixes]


def _prefix_states(model: nn.Module, prefixes: list[tuple[int, ...]]) -> list[_KV]:
    """Return the unsteered states of non-empty ``prefixes`` from one left-padded forward."""
    if not prefixes:
        return []
    device = next(model.parameters()).device
    ids, attention = left_pad(prefixes, pad_id=0)
    with torch.inference_mode():
        output = model(input_ids=ids.to(device), attention_mask=attention.to(device),
                       position_ids=position_ids_from_mask(attention).to(device),
                       use_cache=True)
    layers = [(keys, values) for keys, values, *_ in _cache_of(output)]
    width = ids.shape[1]
    # Copies: a view would keep the whole batch's tensors alive in the cache.
    return [[(k[row:row + 1, :, width - len(p):].clone(),
              v[row:row + 1, :, width - len(p):].clone()) for k, v in layers]
            for row, p in enumerate(prefixes)]


def _score_cached(model: nn.Module, pairs: list[tuple[list[int], list[int]]],
                  cache: PromptCache, vector: SteeringVector | None, alpha: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Return what :func:`_score_batch` returns, reusing the prompts' prefix states.

    Each prompt's last token and continuation run over its prefix states from ``cache``:
    prefix states are left-padded into one cache and the suffixes (last prompt token +
    continuation) right-padded after it, with every real token at its own position; the
    whole suffix is steered, which is what ``positions="newest"`` steers.
    """
    device = next(model.parameters()).device
    prefixes = [tuple(p[:-1]) for p, _ in pairs]
    states = cache.states([p for p in prefixes if p])
    past = max(len(p) for p in prefixes)
    suffixes = [[p[-1], *c] for p, c in pairs]
    ids, attention = _right_pad(suffixes)  # [b, s]
    attention = torch.cat([left_pad(prefixes, pad_id=0)[1], attention], dim=1)
    positions = torch.tensor([len(p) for p in prefixes])[:, None] + torch.arange(ids.shape[1])
    kv = DynamicCache(ddp_cache_data=_left_padded(states, prefixes, past)) if past else None
    steering = Steering(model, vector, alpha, positions="all")
    with torch.inference_mode(), steering.hold(), steering.active():
        logits = model(input_ids=ids.to(device), attention_mask=attention.to(device),
                       position_ids=positions.to(device), cache=kv, use_cache=past > 0).logits
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # predicts suffix[1:]
    token_lp = logprobs.gather(-1, ids[:, 1:, None].to(device))[..., 0].cpu()
    scored = attention[:, past + 1:].bool()
    token_lp = torch.where(scored, token_lp, torch.zeros_like(token_lp))
    return token_lp.double().sum(dim=1).numpy(), scored.sum(dim=1).double().numpy()


def _right_pad(sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists into ``ids [b, s]`` and ``mask [b, s]`` (pads are id 0)."""
    width = max(len(seq) for seq in sequences)
    ids = torch.zeros((len(sequences), width), dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, :len(seq)] = 1
    return ids, mask


def _left_padded(states: list[_KV], prefixes: list[tuple[int, ...]], past: int
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Stack per-prefix states (empty prefixes have none) into left-padded ``[b, ...]`` layers."""
    template = states[0]
    rows = iter(states)
    per_row = [next(rows) if p else None for p in prefixes]
    layers = []
    for layer, (k0, v0) in enumerate(template):
        keys = k0.new_zeros((len(prefixes), k0.shape[1], past, k0.shape[3]))
        values = v0.new_zeros((len(prefixes), v0.shape[1], past, v0.shape[3]))
        for row, kv in enumerate(per_row):
            if kv is not None:
                keys[row, :, past - kv[layer][0].shape[2]:] = kv[layer][0][0]
                values[row, :, past - kv[layer][1].shape[2]:] = kv[layer][1][0]
        layers.append((keys, values))
    return layers
