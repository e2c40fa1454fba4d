"""The generated ``sentences`` probe dataset and its steering-evaluation task.

Dataset: determinism, pairs of one real and one shuffled sentence, label balance, its card,
where its sentences come from (pre-trained passages) and disjointness from the chat task's
held-out items. Task: its items are the chat task's held-out items minus the study's
sampled rows, and unsteered it scores exactly as the chat stage's ``score_task`` does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter

import numpy as np
import pytest

import trustdyn.datasets as D
from trustdyn.datasets.corpus_sentences import N_SENTENCES, load_sentences
from trustdyn.evaluation import EVAL_PRESETS, EVALUATED_DATASETS, build_task
from trustdyn.evaluation.scoring import Scorer, chat_reply, chat_text
from trustdyn.evaluation.tasks import SentenceTask
from trustdyn.paths import DATA_DIR
from trustdyn.suites.builtin_chat import NO, YES, answer_logprobs
from trustdyn.suites.builtin_data import load_corpus, split_corpus, train_tokenizer
from trustdyn.suites.builtin_presets import get_preset
from trustdyn.suites.builtin_task import (
    EVAL_ITEMS,
    PROMPT,
    load_heldout_items,
    passage_sentences,
    score_task,
)


@pytest.fixture(scope="module")
def sentences() -> D.ProbeDataset:
    return D.load_dataset("sentences")


# --------------------------------------------------------------------------- dataset


def test_sentences_is_a_sixth_builtin_beyond_the_paper(sentences):
    assert (*D.PAPER_DATASETS, "sentences") == D.BUILTIN_DATASETS
    assert "sentences" not in D.PAPER_DATASETS and "sentences" in EVALUATED_DATASETS
    assert D.resolve_name("Fluency") == "sentences"
    card = D.read_cards()["sentences"]
    assert sentences.card == card
    assert (card.dimension, card.desirable_label, card.harmful_label) == ("fluency", 1, None)
    assert card.steering_sign() == 1 and card.notes.startswith("Beyond the paper")
    assert card.path == "corpus/wikipedia_passages.txt.gz"
    digest = hashlib.sha256()  # the rows' canonical JSON, one line per row
    for row in zip(sentences.texts, sentences.labels.tolist(), sentences.groups.tolist(),
                   strict=True):
        digest.update(json.dumps(list(row)).encode() + b"\n")
    assert card.sha256 == digest.hexdigest() and card.texts_cleaned == 0
    assert D.builtin_path("sentences") == DATA_DIR / card.path


def test_sentences_are_pairs_of_a_real_sentence_and_its_shuffle(sentences):
    assert len(sentences) == 2 * N_SENTENCES and sentences.label_counts() == (1000, 1000)
    assert sentences.groups is not None and len(set(sentences.groups)) == N_SENTENCES
    pairs: dict[str, dict[int, str]] = {}
    for text, label, group in zip(sentences.texts, sentences.labels, sentences.groups,
                                  strict=True):
        pairs.setdefault(str(group), {})[int(label)] = text
    for group, pair in pairs.items():
        assert pair[1] == group != pair[0]  # the real row is the group's sentence
        assert Counter(pair[0].split()) == Counter(pair[1].split())  # same words, new order


def test_sentences_are_deterministic_and_cut_from_pretrained_passages(sentences):
    fresh = load_sentences.__wrapped__()  # built again, not the cached copy
    assert fresh is not sentences and fresh.texts == sentences.texts
    assert np.array_equal(fresh.labels, sentences.labels) and fresh.card == sentences.card
    spec = get_preset("default", 0)
    split = split_corpus(load_corpus(spec.corpus_lines), spec.heldout_fraction, spec.seed)
    pretrained = set(passage_sentences(split.train_passages))
    real = {t for t, label in zip(sentences.texts, sentences.labels, strict=True) if label}
    assert real <= pretrained


def test_sentences_never_show_a_heldout_item_of_the_chat_task(sentences):
    held = load_heldout_items("default", 0)
    texts = set(sentences.texts)
    assert len(held) == EVAL_ITEMS
    assert not {item.sentence for item in held} & texts
    assert not {item.prompt for item in held} & {PROMPT.format(sentence=t) for t in texts}


# --------------------------------------------------------------------------- task


def test_task_items_are_the_chat_tasks_heldout_items_minus_sampled_rows(sentences):
    cfg = EVAL_PRESETS["reduced"]
    seen = D.sample_dataset(sentences, 600, seed=0)
    task = build_task("sentences", seen, cfg, ("default", 0))
    assert isinstance(task, SentenceTask) and task.n_items == cfg.n_items == 200
    held = {item.prompt: item.answer for item in load_heldout_items("default", 0)}
    assert all(held[p] == a for p, a in zip(task.prompts, task.answers, strict=True))
    assert int(task.answers.sum()) == 100  # balanced as the chat task's items are
    assert "preset 'default', seed 0" in task.describe()["items"]
    assert build_task("sentences", seen, cfg).prompts == task.prompts  # default for others

    # A smoke run holds out other passages: rows it sampled are removed from its items.
    smoke = load_heldout_items("smoke", 0)
    clash = D.ProbeDataset("sentences", sentences.card, (smoke[0].sentence, smoke[1].sentence),
                           np.array([1, 0]))
    full = dataclasses.replace(cfg, n_items=None)
    kept = build_task("sentences", clash, full, ("smoke", 0))
    assert kept.n_items == len(smoke) - 2
    assert not {smoke[0].prompt, smoke[1].prompt} & set(kept.prompts)  # type: ignore[attr-defined]


class _Plain:
    """A tokenizer without a chat template (the plain ``User: … Assistant:`` format)."""

    chat_template = None


def test_chat_reply_is_what_the_template_renders_after_the_prompt(tiny_tokenizer):
    builtin = train_tokenizer(["Is this a real sentence? Yes. No."] * 5, 300)
    assert chat_reply(builtin, "Is it?", YES) == "Yes.</s>"
    assert chat_reply(tiny_tokenizer, "Is it?", NO) == "No.\n"
    assert chat_reply(_Plain(), "Is it?", YES) == " Yes."


def test_unsteered_task_scores_exactly_as_the_chat_stage(tiny_sentence_chat):
    items, tokenizer, model = tiny_sentence_chat
    task = SentenceTask([i.prompt for i in items], np.array([i.answer for i in items]), "test")
    scorer = Scorer(model, tokenizer, batch_size=7)
    prompts = [chat_text(tokenizer, i.prompt) for i in items]
    for answer in (YES, NO):
        ours = scorer.loglik(prompts, [chat_reply(tokenizer, i.prompt, answer) for i in items])
        theirs = answer_logprobs(model, tokenizer, [i.prompt for i in items], answer).numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    table = task.tables(scorer, np.arange(30), {"sentence"})["sentence"]
    result = score_task(model, tokenizer, items, seed=0)
    assert task.metric("accuracy").statistic(table) == pytest.approx(result.accuracy)
    assert task.metric("yes_rate").statistic(table) == pytest.approx(result.predicted_yes_rate)


class _SaysYes:
    """A scorer stub whose model finds "Yes." likelier after every prompt."""

    tokenizer = _Plain()

    def loglik(self, prompts, continuations, per_token=False):
        return np.array([0.0 if c == " Yes." else -1.0 for c in continuations])


def test_more_yes_alone_does_not_raise_accuracy_on_balanced_items():
    task = SentenceTask([f'Is this a real sentence? "{i}"' for i in range(6)],
                        np.array([True, False] * 3), "test")
    table = task.tables(_SaysYes(), np.arange(6), {"sentence"})["sentence"]  # type: ignore[arg-type]
    np.testing.assert_array_equal(table, [[1, 1], [0, 1]] * 3)
    assert task.metric("accuracy").statistic(table) == 0.5
    assert task.metric("yes_rate").statistic(table) == 1.0
    assert task.primary == "accuracy" and task.metric("accuracy").higher_is_better
    np.testing.assert_array_equal(task.strata(), task.answers)
