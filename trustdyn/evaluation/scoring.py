"""One model under one steering condition, as the evaluation tasks see it.

A :class:`Scorer` bundles a chat model, its tokenizer and one steering condition (a
vector, a *signed* strength and the positions it is added at, or none) and offers batched
continuation log-likelihoods and greedy continuations under that one intervention: with
``positions="newest"`` a scored continuation sees exactly the steering that generating it
would have applied (the prompt's last token and every token after it).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from trustdyn.generation import PromptCache, batch_loglik, chat_prompt, generate_greedy_batch
from trustdyn.schema import Positions
from trustdyn.steering import SteeringVector


@functools.lru_cache(maxsize=1 << 16)  # every steering condition renders the same items
def chat_text(tokenizer: Any, user_message: str) -> str:
    """Render one user turn with the chat template, as a raw-text prompt for scoring.

    :func:`trustdyn.generation.batch_loglik` tokenises raw prompts *with* the tokenizer's
    special tokens, and many chat templates already start with the BOS token; the
    rendered text's leading BOS is dropped when the tokenizer adds one itself, so the
    scored ids equal what the chat model was fine-tuned on (one BOS, not two).
    """
    text = chat_prompt(tokenizer, [{"role": "user", "content": user_message}])
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos) and _adds_bos(tokenizer):
        text = text[len(bos):]
    return text


@functools.lru_cache(maxsize=1 << 16)
def chat_reply(tokenizer: Any, user_message: str, answer: str) -> str:
    """Return the text that follows :func:`chat_text` when the assistant replies ``answer``.

    With a chat template it is the answer and the turn's closing tokens (the built-in
    template's ``</s>``), rendered by the template itself: what a chat model is fine-tuned
    to produce after the prompt, and what
    :func:`trustdyn.suites.builtin_chat.answer_logprobs` scores. Without a template it is
    the plain format's ``" " + answer`` after ``"Assistant:"``.

    Raises:
        ValueError: if the template does not render the prompt as a prefix of the
            conversation (no continuation can then be scored).

    """
    if not getattr(tokenizer, "chat_template", None):
        return " " + answer
    prompt = chat_prompt(tokenizer, [{"role": "user", "content": user_message}])
    turns = [{"role": "user", "content": user_message}, {"role": "assistant", "content": answer}]
    full = str(tokenizer.apply_chat_template(turns, tokenize=False))
    if not full.startswith(prompt):
        raise ValueError("The chat template does not render the prompt as a prefix of the "
                         "conversation; the assistant's reply cannot be scored after it.")
    return full[len(prompt):]


def _adds_bos(tokenizer: Any) -> bool:
    bos_id = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bos_id is not None and len(ids) > 0 and ids[0] == bos_id


def split_first_word(text: str) -> tuple[str, str]:
    """Split ``text`` into its first word (the scoring context) and the rest (scored).

    Unconditional text (perplexity passages, ToxiGen statements) is scored given its
    first word, so every tokenizer has context for the first scored token whether or not
    it adds a BOS token.
    """
    stripped = text.strip()
    head, _, tail = stripped.partition(" ")
    return head, (" " + tail) if tail else ""


@dataclass(frozen=True)
class Scorer:
    """A model and tokenizer under one steering condition.

    Attributes:
        model: The chat model in eval mode.
        tokenizer: Its tokenizer.
        vector: The steering vector, or ``None`` for the unsteered model.
        alpha: Signed strength in units of ``vector.scale`` (already oriented toward the
            desirable label; see :func:`trustdyn.steering.signed_alpha`).
        batch_size: Sequences per forward pass.
        positions: Where the vector is added, for scoring and generation alike.
        prompt_cache: Unsteered prompt states shared by every condition of one evaluation
            (likelihoods equal to float32 round-off; see
            :class:`trustdyn.generation.PromptCache`).

    """

    model: nn.Module
    tokenizer: Any
    vector: SteeringVector | None = None
    alpha: float = 0.0
    batch_size: int = 32
    positions: Positions = "newest"
    prompt_cache: PromptCache | None = None

    def loglik(self, prompts: Sequence[str], continuations: Sequence[str], *,
               per_token: bool = False) -> np.ndarray:
        """Return ``[n]`` log p(continuation | prompt), summed or per token, steered.

        Pairs are scored longest-first so each batch pads little; results come back in
        the input order.
        """
        if not prompts:
            return np.zeros(0)
        order = np.argsort([-(len(p) + len(c)) for p, c in zip(prompts, continuations,
                                                                 strict=True)], kind="stable")
        scores = batch_loglik(
            self.model, self.tokenizer, [prompts[i] for i in order],
            [continuations[i] for i in order], vector=self.vector, alpha=self.alpha,
            positions=self.positions, batch_size=self.batch_size,
            reduction="mean" if per_token else "sum", prompt_cache=self.prompt_cache,
        )
        out = np.empty_like(scores)
        out[order] = scores
        return out

    def token_counts(self, continuations: Sequence[str]) -> np.ndarray:
        """Return ``[n]`` token counts of continuations, tokenised as ``batch_loglik`` does."""
        return np.array([
            len(self.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in continuations
        ], dtype=float)

    def continue_texts(self, prompts: Sequence[str], *, max_new_tokens: int) -> list[str]:
        """Return greedy continuations of raw-text prompts under this steering condition."""
        return generate_greedy_batch(self.model, self.tokenizer, prompts, vector=self.vector,
                                     alpha=self.alpha, positions=self.positions,
                                     max_new_tokens=max_new_tokens, batch_size=self.batch_size)
