"""The built-in suite's chat stage: supervised fine-tuning on prompt→answer pairs.

Training pairs come from the vendored corpus:

* the chat task's items from pre-trained passages (``builtin_task``: is a sentence real
  or shuffled?) → ``"Yes."`` / ``"No."``;
* WordNet glosses with quoted usage examples (the gloss file is ``definition; "example";
  "example"`` per line, with no headword) → ``Explain the sense used in: "<example>"`` →
  the definition, so the chat model also answers in words.

Each pair is rendered with the tokenizer's chat template and the loss covers the answer
tokens (and the closing ``</s>``) only. :func:`answer_logprobs` scores a fixed answer
after chat prompts, which the task's evaluation compares for ``"Yes."`` and ``"No."``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

IGNORE_INDEX = -100
YES, NO = "Yes.", "No."
_QUOTED = re.compile(r'"([^"]+)"')


@dataclass(frozen=True)
class ChatPair:
    """One single-turn chat example."""

    prompt: str
    answer: str


def parse_gloss(line: str) -> tuple[str, list[str]]:
    """Split a WordNet gloss line into its definition and its quoted usage examples.

    Definitions may themselves contain semicolons; examples start at the first ``; "``.

    >>> parse_gloss('made lively; "a meal enlivened by music"; "a spirited debate"')
    ('made lively', ['a meal enlivened by music', 'a spirited debate'])
    """
    definition, _, rest = line.partition('; "')
    examples = [e.strip() for e in _QUOTED.findall('"' + rest if rest else "") if e.strip()]
    return definition.strip(), examples


def gloss_pairs(glosses: Sequence[str]) -> list[ChatPair]:
    """Return ``Explain the sense used in: "<example>"`` → definition, one per usable gloss.

    Glosses without a usage example are skipped: with no headword in the file there is
    nothing to ask about.
    """
    pairs = []
    for line in glosses:
        definition, examples = parse_gloss(line)
        if definition and examples:
            answer = f"{definition[:1].upper()}{definition[1:]}."
            pairs.append(ChatPair(f'Explain the sense used in: "{examples[0]}"', answer))
    return pairs


TASK_SHARE = 0.75
"""Share of task items in the chat mixture. At the default size, with half the mixture
(2,400 items) the chat model stayed at chance on held-out items; three quarters learn the
task, and the quarter of glosses keeps the model answering in words too."""


def task_count(n: int) -> int:
    """Return how many of ``n`` mixture pairs are task items (``TASK_SHARE`` of them)."""
    return round(TASK_SHARE * n)


def sft_mixture(task: Sequence[ChatPair], glosses: Sequence[ChatPair], n: int,
                seed: int) -> list[ChatPair]:
    """Return ``n`` training pairs, :func:`task_count` task items and the rest glosses.

    The pairs come in a seeded order. Sources are sampled without replacement while they
    last and cycled afterwards; with one source empty, all pairs come from the other.
    """
    rng = random.Random(seed)

    def draw(pool: Sequence[ChatPair], k: int) -> list[ChatPair]:
        if not pool:
            return []
        order: list[ChatPair] = []
        while len(order) < k:
            order.extend(rng.sample(list(pool), len(pool)))
        return order[:k]

    n_task = task_count(n) if glosses else n
    mixture = draw(task, n_task) + draw(glosses, n - n_task if task else n)
    rng.shuffle(mixture)
    return mixture


def encode_pair(tokenizer: PreTrainedTokenizerFast, pair: ChatPair,
                max_len: int) -> tuple[list[int], list[int]]:
    """Render a pair with the chat template and mask the prompt out of the labels.

    Returns:
        ``(input_ids, labels)``, both ``[len]`` with ``len <= max_len``; labels are
        ``-100`` on the prompt (everything up to and including ``<|assistant|>``).
        Too-long examples keep their answer and lose the start of the prompt.

    """
    return encode_pairs(tokenizer, [pair], max_len)[0]


def encode_pairs(tokenizer: PreTrainedTokenizerFast, pairs: Sequence[ChatPair],
                 max_len: int) -> list[tuple[list[int], list[int]]]:
    """Return :func:`encode_pair` of every pair, tokenised in one batch call.

    The template is rendered once with placeholder contents and filled in per pair, and
    every text goes through the tokenizer in a single call: rendering and tokenising
    pair by pair cost about 0.7 ms of CPU each, seconds over the chat stage's pairs.
    """
    prompt_layout, full_layout = _chat_layouts(tokenizer)
    texts = [_fill(layout, pair) for pair in pairs for layout in (prompt_layout, full_layout)]
    ids = [e.ids for e in tokenizer.backend_tokenizer.encode_batch_fast(
        texts, add_special_tokens=False)]
    return [_masked(prompt_ids, full_ids, max_len)
            for prompt_ids, full_ids in zip(ids[::2], ids[1::2], strict=True)]


# NUL-delimited, so no rendered template text is mistaken for a placeholder.
_PROMPT_SLOT, _ANSWER_SLOT = "\0prompt\0", "\0answer\0"
_SLOTS = re.compile(f"{re.escape(_PROMPT_SLOT)}|{re.escape(_ANSWER_SLOT)}")


def _chat_layouts(tokenizer: PreTrainedTokenizerFast) -> tuple[str, str]:
    """Render the prompt (with generation prompt) and the full turn pair with placeholders.

    Raises:
        ValueError: if the template does not insert each message's content once, verbatim.

    """
    user = {"role": "user", "content": _PROMPT_SLOT}
    prompt = _render(tokenizer, [user], True)
    full = _render(tokenizer, [user, {"role": "assistant", "content": _ANSWER_SLOT}], False)
    if prompt.count(_PROMPT_SLOT) != 1 or _SLOTS.findall(full) != [_PROMPT_SLOT, _ANSWER_SLOT]:
        raise ValueError("The chat template must insert each message's content once, "
                         "verbatim, for the loss mask to be computed.")
    return prompt, full


def _render(tokenizer: PreTrainedTokenizerFast, messages: list[dict[str, str]],
            add_generation_prompt: bool) -> str:
    return str(tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=add_generation_prompt))


def _fill(layout: str, pair: ChatPair) -> str:
    # One pass, so a placeholder-like string inside a prompt is never substituted again.
    values = {_PROMPT_SLOT: pair.prompt, _ANSWER_SLOT: pair.answer}
    return _SLOTS.sub(lambda match: values[match.group()], layout)


def _masked(prompt_ids: list[int], full_ids: list[int], max_len: int
            ) -> tuple[list[int], list[int]]:
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("The chat template does not render the prompt as a prefix of the "
                         "conversation; the loss mask would be wrong.")
    labels = [IGNORE_INDEX] * len(prompt_ids) + full_ids[len(prompt_ids):]
    return full_ids[-max_len:], labels[-max_len:]


def collate(examples: Sequence[tuple[list[int], list[int]]], pad_id: int
            ) -> dict[str, torch.Tensor]:
    """Right-pad examples into a batch.

    Right padding keeps every query row attending to at least one real token, so no
    attention row is fully masked (which would give NaNs in training).

    Returns:
        ``input_ids``, ``attention_mask`` and ``labels``, each ``[batch, max_len]``.

    """
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.int64)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.int64)
    mask = torch.zeros((len(examples), width), dtype=torch.int64)
    for row, (ids, labs) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def sft_lr(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup to ``peak`` then linear decay to 10% of it at ``total`` (1-based step)."""
    if step <= warmup:
        return peak * step / max(1, warmup)
    return peak * (1.0 - 0.9 * (step - warmup) / max(1, total - warmup))


def finetune(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast,
             pairs: Sequence[ChatPair], *, steps: int, batch_size: int, lr: float,
             max_len: int, progress: bool = True) -> list[float]:
    """Fine-tune ``model`` in place on ``pairs`` (read in order, ``batch_size`` per step).

    Returns:
        The training loss of every step.

    """
    encoded = encode_pairs(tokenizer, pairs, max_len)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95),
    )
    pad_id = int(tokenizer.pad_token_id)
    losses: list[float] = []
    model.train()
    bar = tqdm(range(1, steps + 1), desc="chat SFT", disable=not progress, unit="step")
    for step in bar:
        batch = collate(encoded[(step - 1) * batch_size: step * batch_size], pad_id)
        for group in optimizer.param_groups:
            group["lr"] = sft_lr(step, steps, lr, warmup=max(1, steps // 10))
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


@torch.inference_mode()
def answer_logprobs(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast,
                    prompts: Sequence[str], answer: str, batch_size: int = 64) -> torch.Tensor:
    """Return log p(answer + ``</s>`` | chat prompt) for each prompt, ``[len(prompts)]``."""
    scores = []
    pad_id = int(tokenizer.pad_token_id)
    model.eval()
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start: start + batch_size]
        batch = collate(encode_pairs(tokenizer, [ChatPair(p, answer) for p in chunk], 1 << 30),
                        pad_id)
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits  # [b, t, vocab]
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        targets = batch["labels"][:, 1:]  # [b, t-1]
        keep = targets != IGNORE_INDEX
        picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        scores.append((picked * keep).sum(dim=1))
    return torch.cat(scores) if scores else torch.empty(0)
