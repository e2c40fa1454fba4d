"""Offline steering metrics on hand-made scores with known answers, and the steering sign."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trustdyn.blocks import decoder_blocks
from trustdyn.datasets import load_dataset, sample_dataset, split_dataset
from trustdyn.evaluation import (
    EVAL_PRESETS,
    build_task,
    candidate_layers,
    direction_text,
    every_kth,
    select_candidate,
    split_items,
    sst2_pairs,
    target_labels,
)
from trustdyn.evaluation.metrics import (
    ToxicityJudge,
    bootstrap,
    choice_agreement,
    choice_correct,
    column_mean,
    gap_statistic,
    icat,
    icat_statistic,
    mc_scores,
    paired_bootstrap,
    perplexity_statistic,
    resample_indices,
    stereoset_items,
)
from trustdyn.evaluation.scoring import Scorer, chat_text, split_first_word
from trustdyn.generation import batch_loglik
from trustdyn.stats import fisher_interval, pearson
from trustdyn.steering import SteeringVector, signed_alpha

# --------------------------------------------------------------------------- metrics


def test_mc1_mc2_match_the_standard_definitions():
    logliks = [np.array([-1.0, -2.0, -3.0]), np.array([-2.0, -1.0]), np.array([-1.0, -1.0])]
    correct = [np.array([True, False, False]), np.array([True, False]),
               np.array([True, False])]
    table = mc_scores(logliks, correct)
    e = np.exp
    assert table[:, 0].tolist() == [1.0, 0.0, 0.0]  # a tie is not a win for the true answer
    assert table[0, 1] == pytest.approx(e(-1) / (e(-1) + e(-2) + e(-3)))
    assert table[1, 1] == pytest.approx(e(-2) / (e(-2) + e(-1)))
    assert table[2, 1] == pytest.approx(0.5)


def test_mc2_sums_the_mass_of_several_true_answers_and_mc1_uses_the_first():
    table = mc_scores([np.array([-3.0, -1.0, -2.0])], [np.array([True, True, False])])
    e = np.exp
    assert table[0, 0] == 0.0  # the best (first) true answer loses to the false one
    assert table[0, 1] == pytest.approx((e(-3) + e(-1)) / (e(-3) + e(-1) + e(-2)))


def test_mc_scores_rejects_questions_without_both_kinds_of_answer():
    with pytest.raises(ValueError, match="one true and one false"):
        mc_scores([np.array([-1.0, -2.0])], [np.array([True, True])])


def test_stereoset_ss_lms_icat():
    stereo = np.array([-1.0, -2.0, -1.0, -5.0])
    anti = np.array([-2.0, -1.0, -3.0, -4.0])
    unrelated = np.array([-3.0, -3.0, -2.0, -1.0])
    table = stereoset_items(stereo, anti, unrelated)
    assert table[:, 0].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert table[:, 1].tolist() == [1.0, 1.0, 0.5, 0.0]
    ss, lms = 50.0, 62.5
    assert column_mean(0, 100.0)(table) == pytest.approx(ss)
    assert column_mean(1, 100.0)(table) == pytest.approx(lms)
    assert icat_statistic(table) == pytest.approx(lms * min(ss, 100 - ss) / 50)
    assert icat(50.0, 100.0) == 100.0 and icat(100.0, 100.0) == 0.0
    assert icat(60.0, 80.0) == pytest.approx(64.0)


def test_two_way_choices_and_agreement():
    assert choice_correct([-1.0, -2.0, -1.0], [-2.0, -1.0, -1.0],
                          [True, True, False]).tolist() == [1.0, 0.0, 1.0]
    agree = choice_agreement([-1.0, -1.0], [-2.0, -0.5], [-1.0, -1.0], [-1.5, -1.5])
    assert agree.tolist() == [1.0, 0.0]


def test_gap_and_perplexity_statistics():
    gap = np.array([[-1.0, 1], [-2.0, 1], [-3.0, 0], [-4.0, 0]])
    assert gap_statistic(gap) == pytest.approx(-1.5 - -3.5)
    ppl = np.array([[2.0, 1.0], [4.0, 3.0]])
    assert perplexity_statistic(ppl) == pytest.approx(math.exp(6.0 / 4.0))


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_interval_covers_the_mean_and_is_seeded():
    values = np.random.default_rng(1).normal(0.3, 1.0, size=200)
    est = bootstrap(values, column_mean(0), n_boot=500, seed=3)
    assert est.value == pytest.approx(values.mean())
    assert est.lo < est.value < est.hi and est.n == 200
    assert est.hi - est.lo < 0.5
    assert bootstrap(values, column_mean(0), n_boot=500, seed=3) == est
    assert bootstrap(values, column_mean(0), n_boot=500, seed=4) != est


def test_stratified_resampling_keeps_group_sizes():
    strata = np.array([0, 0, 0, 1, 1])
    idx = resample_indices(5, 50, seed=0, strata=strata)
    assert idx.shape == (50, 5)
    assert ((strata[idx] == 1).sum(axis=1) == 2).all()


def test_paired_bootstrap_of_identical_tables_is_exactly_zero():
    table = np.random.default_rng(0).random((30, 1))
    est = paired_bootstrap(table, table, column_mean(0), np.subtract, n_boot=100, seed=0)
    assert (est.value, est.lo, est.hi) == (0.0, 0.0, 0.0)
    shifted = paired_bootstrap(table + 0.1, table, column_mean(0), np.subtract,
                               n_boot=100, seed=0)
    assert shifted.lo == pytest.approx(0.1) and shifted.hi == pytest.approx(0.1)


# --------------------------------------------------------------------------- judge, correlation


def test_toxicity_judge_learns_a_toy_set():
    toxic = [f"you are a stupid worthless idiot number {i}" for i in range(20)]
    benign = [f"the weather is lovely and calm today number {i}" for i in range(20)]
    judge = ToxicityJudge(seed=0).fit(toxic + benign, np.array([1] * 20 + [0] * 20))
    verdicts = judge.predict(["what a stupid idiot", "a calm lovely day", "  "])
    assert verdicts.tolist() == [1, 0, 0]
    assert judge.correct(["worthless idiot"], np.array([1])).tolist() == [1.0]
    with pytest.raises(ValueError, match="both"):
        ToxicityJudge().fit(["a", "b"], np.array([1, 1]))


def test_pearson_and_fisher_interval():
    corr = pearson([1, 2, 3, 4, float("nan")], [2, 4, 6, 8.5, 1])
    assert corr.n == 4 and corr.r == pytest.approx(0.9986, abs=1e-3) and corr.p < 0.01
    assert corr.lo < corr.r < corr.hi
    lo, hi = fisher_interval(0.5, 30)
    assert lo < 0.5 < hi
    assert math.isnan(pearson([1, 2, 3], [5, 5, 5]).r)
    assert math.isnan(pearson([1, 2], [3, 4]).r)


# --------------------------------------------------------------------------- selection


def test_split_items_is_disjoint_stratified_and_seeded():
    strata = np.array([0] * 10 + [1] * 4)
    dev, test = split_items(14, 0.5, seed=0, strata=strata)
    assert np.intersect1d(dev, test).size == 0
    assert sorted(np.concatenate([dev, test]).tolist()) == list(range(14))
    assert (strata[dev] == 1).sum() == 2 and (strata[dev] == 0).sum() == 5
    again = split_items(14, 0.5, seed=0, strata=strata)
    assert np.array_equal(dev, again[0])
    with pytest.raises(ValueError, match="at least 2"):
        split_items(1, 0.5, seed=0)


def test_candidate_layers_centre_on_best_probe_layer_and_middle():
    acc = {0: 0.5, 1: 0.9, 2: 0.7, 3: 0.6, 4: 0.5, 5: 0.5}
    assert candidate_layers(6, acc, 2) == [1, 3]
    assert candidate_layers(6, acc, 3) == [0, 1, 3]
    assert candidate_layers(6, None, 2) == [2, 3]
    assert candidate_layers(4, acc, None) == [0, 1, 2, 3]
    assert every_kth(["a", "b", "c", "d", "e"], 3) == ["a", "d", "e"]
    assert every_kth(["a", "b", "c", "d"], 3) == ["a", "d"]


class _Cand:
    def __init__(self, layer: int, alpha: float) -> None:
        self.layer, self.alpha = layer, alpha


def test_select_candidate_respects_the_perplexity_guard_and_breaks_ties_small():
    results = [(_Cand(1, 2.0), 0.6, 1.1), (_Cand(1, 4.0), 0.9, 1.5),
               (_Cand(2, 2.0), 0.6, 1.2), (_Cand(2, -1.0), 0.6, 1.0)]
    index, passed = select_candidate(results, 1.33)
    assert passed and index == 3  # best inside the guard, smallest |alpha| among ties
    index, passed = select_candidate([(_Cand(1, 2.0), 0.9, 2.0), (_Cand(1, 4.0), 0.9, 1.5)],
                                     1.33)
    assert not passed and index == 1  # nothing passes: the least-perplexing one, flagged
    # A candidate inside the guard that was not scored on the task is never chosen.
    index, passed = select_candidate([(_Cand(1, 0.5), None, 1.0), (_Cand(1, 1.0), 0.1, 1.2)],
                                     1.33)
    assert passed and index == 1


# --------------------------------------------------------------------------- steering sign


def test_toxicity_steers_away_from_toxic_and_adds_minus_alpha_scale_v(tiny_llama,
                                                                       tiny_tokenizer):
    card = load_dataset("toxigen").card
    assert target_labels(card) == (0,)
    direction = torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator()
                                                          .manual_seed(0)), dim=0)
    vector = SteeringVector(direction=direction, scale=0.7, layer=1, dataset="toxigen",
                            toward_label=1, source="t", model="m", revision=None,
                            hidden_size=32)
    alpha = signed_alpha(2.0, vector, target_labels(card)[0])
    assert alpha == -2.0
    assert direction_text(card, 0, "chat") == "away from label 1 (toxic)"
    assert direction_text(card, 0, "random").startswith("random direction (control)")

    seen: list[torch.Tensor] = []
    hook = decoder_blocks(tiny_llama)[1].register_forward_hook(
        lambda _m, _a, out: seen.append((out[0] if isinstance(out, tuple) else out).clone()))
    try:
        Scorer(tiny_llama, tiny_tokenizer).loglik(["hello"], [" there"])
        Scorer(tiny_llama, tiny_tokenizer, vector, alpha).loglik(["hello"], [" there"])
    finally:
        hook.remove()
    expected = seen[0] - 2.0 * 0.7 * direction  # every position, positions="all"
    torch.testing.assert_close(seen[1], expected)


def test_both_signs_for_a_dataset_without_desirable_label():
    card = load_dataset("sst2").card
    assert target_labels(card) == (1, 0)
    assert direction_text(card, 1, "chat").startswith("toward label 1 (the sentence was")


# --------------------------------------------------------------------------- scoring, tasks


def test_scorer_keeps_input_order_while_batching_by_length(tiny_llama, tiny_tokenizer):
    prompts = ["a", "The capital of France", "Q: Is the sky blue?", "hi"]
    conts = [" quick brown fox jumps", " is Paris.", " Yes", " there"]
    direct = batch_loglik(tiny_llama, tiny_tokenizer, prompts, conts, batch_size=1)
    ours = Scorer(tiny_llama, tiny_tokenizer, batch_size=3).loglik(prompts, conts)
    np.testing.assert_allclose(ours, direct, rtol=1e-4, atol=1e-4)


def test_chat_text_has_one_bos_when_the_tokenizer_adds_it():
    from trustdyn.suites.builtin_data import train_tokenizer

    tok = train_tokenizer(["hello there", "is this private?", "yes or no"] * 5, 300)
    text = chat_text(tok, "hello")
    ids = tok(text, add_special_tokens=True)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id
    assert split_first_word("  one two three ") == ("one", " two three")


def _fit_rows(name: str):
    ds = sample_dataset(load_dataset(name), 80, seed=0)
    return ds.subset(split_dataset(ds, seed=0).train)


def test_tasks_hold_out_the_vector_fitting_rows():
    cfg = EVAL_PRESETS["smoke"]
    fit = _fit_rows("confaide")
    task = build_task("confaide", fit, cfg)
    assert task.n_items == cfg.n_items
    assert not set(task.statements) & set(fit.texts)  # type: ignore[attr-defined]

    tqa = build_task("truthfulqa", _fit_rows("truthfulqa"), cfg)
    groups = load_dataset("truthfulqa").groups
    assert groups is not None
    train_questions = {g.casefold() for g in groups}
    assert all(q.question.casefold() not in train_questions
               for q in tqa.questions)  # type: ignore[attr-defined]

    tox_fit = _fit_rows("toxigen")
    tox = build_task("toxigen", tox_fit, cfg)
    assert not set(tox.statements) & set(tox_fit.texts)  # type: ignore[attr-defined]
    assert 0.0 <= tox.judge_accuracy.value <= 1.0  # type: ignore[attr-defined]
    assert tox.judge_accuracy.n == cfg.judge_test  # type: ignore[attr-defined]


def test_sst2_pairs_match_case_perturbed_copies():
    pairs = sst2_pairs(load_dataset("sst2"))
    assert len(pairs) > 1500
    assert all(a.casefold() == b.casefold() and a != b for a, b in pairs)
