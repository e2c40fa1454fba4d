"""The built-in chat model's task: tell a real sentence from the same words shuffled.

Each item shows one sentence cut from a Wikipedia passage of the corpus and asks
``Is this a real sentence? "<sentence>"``; the answer is ``"Yes."`` when the sentence is
as written in its passage and ``"No."`` when its words were put in a seeded random order.
Telling the two apart needs only what pre-training teaches (which word orders English
uses), which is why a model of about a million parameters can learn it where BoolQ's
reading comprehension was out of reach. Items alternate real and shuffled, so labels are
balanced to within one item. Training items come from pre-trained passages; held-out items
come from the passages :func:`~trustdyn.suites.builtin_data.split_corpus` holds out of
pre-training, minus any sentence that also occurs in a pre-trained passage, so neither the
fine-tune nor pre-training ever saw a held-out sentence. :func:`score_task` compares the
likelihoods of ``"Yes."`` and ``"No."`` after the chat prompt and bootstraps the accuracy.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from trustdyn.evaluation.metrics import bootstrap, column_mean
from trustdyn.suites.builtin_chat import NO, YES, ChatPair, answer_logprobs
from trustdyn.suites.builtin_data import CorpusSplit, load_corpus, split_corpus
from trustdyn.suites.builtin_presets import get_preset

TASK_NAME = "real or shuffled sentence"
TASK_DESCRIPTION = (
    'Is this a real sentence? "<sentence>": Yes. for a sentence as written in a Wikipedia '
    "passage, No. for the same words in a random order; held-out sentences come from "
    "passages held out of pre-training and fine-tuning."
)
PROMPT = 'Is this a real sentence? "{sentence}"'
MIN_WORDS, MAX_WORDS = 6, 18
EVAL_ITEMS = 400
"""Held-out items the chat stage scores (fewer where the split holds fewer sentences)."""
N_BOOT = 1000

# A sentence ends at . ! or ? followed by space and a capital; abbreviations such as
# "U.S. states" split too, which only costs a few sentences the length filter drops.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


@dataclass(frozen=True)
class TaskItem:
    """One yes/no item of the chat task.

    Attributes:
        prompt: The user turn shown to the chat model.
        answer: True when the shown sentence is real (the right answer is ``"Yes."``).
        sentence: The source sentence as written in its passage.

    """

    prompt: str
    answer: bool
    sentence: str

    def pair(self) -> ChatPair:
        """Return the item as a fine-tuning pair answered ``"Yes."`` or ``"No."``."""
        return ChatPair(self.prompt, YES if self.answer else NO)


@dataclass(frozen=True)
class TaskResult:
    """Held-out accuracy of a model on the task and the baseline it must be read against.

    Attributes:
        accuracy: Fraction of items where the likelier answer is the right one.
        interval: Percentile-bootstrap 95% interval of the accuracy over items.
        majority_baseline: Accuracy of always giving the items' majority answer.
        predicted_yes_rate: Fraction of items answered "Yes." (near 1.0 or 0.0 means
            the model ignores the sentence).
        n: Number of items.

    """

    accuracy: float
    interval: tuple[float, float]
    majority_baseline: float
    predicted_yes_rate: float
    n: int


def passage_sentences(passages: Iterable[str]) -> list[str]:
    """Return the sentences of ``Title -- text`` passages with 6 to 18 words, in order.

    Titles are left out: they are not sentences. Sentences with a single distinct word
    are left out too, since no shuffle can change them.
    """
    sentences = []
    for passage in passages:
        _, _, text = passage.partition(" -- ")
        for sentence in _SENTENCE_END.split(text):
            words = sentence.split()
            if MIN_WORDS <= len(words) <= MAX_WORDS and len(set(words)) > 1:
                sentences.append(" ".join(words))
    return sentences


def shuffle_words(sentence: str, rng: random.Random) -> str:
    """Return the sentence's words in a random order different from the original."""
    words = sentence.split()
    shuffled = words[:]
    while shuffled == words:
        rng.shuffle(shuffled)
    return " ".join(shuffled)


def build_items(sentences: Sequence[str], n: int, seed: int) -> list[TaskItem]:
    """Return up to ``n`` items from distinct sentences, alternately real and shuffled.

    Which sentences are drawn, which of them are shuffled and how, and the items' order
    all follow ``seed``; each sentence is used once, so no item shows the real and the
    shuffled form of the same sentence.
    """
    rng = random.Random(seed)
    chosen = rng.sample(sorted(set(sentences)), min(n, len(set(sentences))))
    items = [TaskItem(PROMPT.format(sentence=s if k % 2 == 0 else shuffle_words(s, rng)),
                      k % 2 == 0, s) for k, s in enumerate(chosen)]
    rng.shuffle(items)
    return items


def train_items(split: CorpusSplit, n: int, seed: int) -> list[TaskItem]:
    """Return up to ``n`` fine-tuning items from the pre-trained passages."""
    return build_items(passage_sentences(split.train_passages), n, seed)


def heldout_items(split: CorpusSplit, n: int = EVAL_ITEMS, seed: int = 0) -> list[TaskItem]:
    """Return up to ``n`` evaluation items from passages held out of pre-training.

    A held-out sentence that also occurs in a pre-trained passage (a shared stock phrase)
    is dropped, so the model has never read any evaluated sentence.
    """
    seen = set(passage_sentences(split.train_passages))
    fresh = [s for s in passage_sentences(split.heldout_passages) if s not in seen]
    return build_items(fresh, n, seed)


def load_heldout_items(preset: str = "default", seed: int = 0, n: int = EVAL_ITEMS
                       ) -> list[TaskItem]:
    """Return the held-out items the chat stage of a built-in run evaluates on.

    Reads the vendored corpus and reproduces the run's split, so callers (steering
    evaluation, the dashboard) get exactly the items behind ``task_accuracy``.
    """
    spec = get_preset(preset, seed)
    split = split_corpus(load_corpus(spec.corpus_lines), spec.heldout_fraction, spec.seed)
    return heldout_items(split, n, spec.seed)


def score_task(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast,
               items: Sequence[TaskItem], seed: int) -> TaskResult:
    """Score items by comparing the likelihoods of "Yes." and "No." after the prompt.

    Raises:
        ValueError: with no items (an accuracy needs at least one).

    """
    if not items:
        raise ValueError("The chat task needs at least one held-out item to score.")
    prompts = [item.prompt for item in items]
    says_yes = (answer_logprobs(model, tokenizer, prompts, YES)
                > answer_logprobs(model, tokenizer, prompts, NO)).numpy()  # [n]
    truth = np.array([item.answer for item in items])
    estimate = bootstrap((says_yes == truth).astype(float), column_mean(0), n_boot=N_BOOT,
                         seed=seed)
    yes_rate = float(truth.mean())
    return TaskResult(
        accuracy=estimate.value, interval=(estimate.lo, estimate.hi),
        majority_baseline=max(yes_rate, 1.0 - yes_rate),
        predicted_yes_rate=float(says_yes.mean()), n=len(items),
    )
