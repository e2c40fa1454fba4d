"""Unit tests of the built-in chat task: sentence extraction, item construction (balance,
determinism, held-out disjointness from fine-tuning items and pre-training documents) and
scoring. The stored ``task_*`` fields of a real run are checked in
tests/integration/test_pretrain.py."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from trustdyn.suites.builtin_chat import NO, YES, answer_logprobs
from trustdyn.suites.builtin_data import (
    Corpus,
    CorpusSplit,
    load_corpus,
    split_corpus,
)
from trustdyn.suites.builtin_presets import PRESETS, get_preset
from trustdyn.suites.builtin_task import (
    EVAL_ITEMS,
    PROMPT,
    TaskItem,
    build_items,
    heldout_items,
    load_heldout_items,
    passage_sentences,
    score_task,
    shuffle_words,
    train_items,
)

SHARED = "This sentence is shared by every passage of the corpus here."


def _passage(i: int) -> str:
    return (f"Title {i} -- Passage {i} tells the story of town {i} in short words. "
            f"The river near town {i} floods every spring after rain. Too short. {SHARED}")


def _split() -> tuple[Corpus, CorpusSplit]:
    corpus = Corpus(tuple(_passage(i) for i in range(60)), tuple(f"gloss {i}" for i in
                                                                  range(20)))
    return corpus, split_corpus(corpus, heldout_fraction=0.25, seed=0)


def _shown(item: TaskItem) -> str:
    return item.prompt[len(PROMPT.split("{")[0]):-1]


def test_passage_sentences_skip_titles_and_out_of_range_lengths():
    repeated = "Title -- Yes. " + " ".join(["Word"] * 6)
    sentences = passage_sentences([_passage(3), repeated])
    assert sentences == ["Passage 3 tells the story of town 3 in short words.",
                         "The river near town 3 floods every spring after rain.", SHARED]
    assert passage_sentences(["T -- " + " ".join(["word"] * 19) + "."]) == []


def test_shuffle_words_permutes_and_always_changes_the_order():
    rng = random.Random(0)
    for sentence in ("a b", "one two two two two two", SHARED):
        shuffled = shuffle_words(sentence, rng)
        assert shuffled != sentence
        assert Counter(shuffled.split()) == Counter(sentence.split())


def test_items_are_balanced_distinct_and_deterministic():
    sentences = [f"Sentence number {i} has exactly seven words." for i in range(101)]
    items = build_items(sentences, 101, seed=0)
    assert len(items) == 101
    assert abs(sum(i.answer for i in items) - sum(not i.answer for i in items)) <= 1
    assert len({i.sentence for i in items}) == 101
    for item in items:
        shown = _shown(item)
        assert (shown == item.sentence) is item.answer
        assert Counter(shown.split()) == Counter(item.sentence.split())
    assert items == build_items(sentences, 101, seed=0)
    assert items != build_items(sentences, 101, seed=1)
    assert len(build_items(sentences, 10, seed=0)) == 10
    assert {i.pair().answer for i in items} == {YES, NO}


def test_heldout_items_come_only_from_heldout_passages():
    corpus, split = _split()
    held = heldout_items(split, n=1000, seed=0)
    train = train_items(split, n=1000, seed=0)
    assert held and train
    train_text = "\n".join(split.train_docs)
    # The sentence every passage shares was pre-trained on, so it is never held out.
    assert all(item.sentence not in train_text for item in held)
    assert SHARED not in {item.sentence for item in held}
    assert {i.sentence for i in held}.isdisjoint(i.sentence for i in train)
    assert len(held) == 2 * len(split.heldout_passages)
    assert len(corpus.passages) == len(split.train_passages) + len(split.heldout_passages)


def test_smoke_heldout_items_are_unseen_balanced_and_seeded():
    spec = PRESETS["smoke"]
    split = split_corpus(load_corpus(spec.corpus_lines), spec.heldout_fraction, spec.seed)
    held = load_heldout_items("smoke")
    assert held == heldout_items(split, seed=spec.seed) == load_heldout_items("smoke")
    assert held != load_heldout_items("smoke", seed=1)
    assert len(held) >= 20
    assert abs(2 * sum(i.answer for i in held) - len(held)) <= 1
    train_text = "\n".join(split.train_docs)
    assert not [i.sentence for i in held if i.sentence in train_text]
    train = train_items(split, spec.chat_steps * spec.chat_batch_size, spec.seed)
    assert {i.sentence for i in held}.isdisjoint(i.sentence for i in train)
    assert {i.prompt for i in held}.isdisjoint(i.prompt for i in train)


def test_default_preset_has_enough_heldout_items():
    held = load_heldout_items("default")
    assert len(held) == EVAL_ITEMS >= 200
    assert sum(i.answer for i in held) == EVAL_ITEMS // 2
    assert get_preset("default").heldout_fraction == pytest.approx(0.05)


def test_score_task_compares_yes_and_no_and_bootstraps(tiny_sentence_chat):
    items, tokenizer, model = tiny_sentence_chat
    result = score_task(model, tokenizer, items, seed=0)
    prompts = [i.prompt for i in items]
    says_yes = (answer_logprobs(model, tokenizer, prompts, YES)
                > answer_logprobs(model, tokenizer, prompts, NO)).numpy()
    truth = np.array([i.answer for i in items])
    assert result.accuracy == pytest.approx(float((says_yes == truth).mean()))
    assert result.predicted_yes_rate == pytest.approx(float(says_yes.mean()))
    assert result.majority_baseline == pytest.approx(0.5) and result.n == 30
    low, high = result.interval
    assert low <= result.accuracy <= high and low < high
    assert result == score_task(model, tokenizer, items, seed=0)
    with pytest.raises(ValueError, match="at least one"):
        score_task(model, tokenizer, [], seed=0)
