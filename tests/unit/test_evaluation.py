"""Offline steering metrics on hand-made scores with known answers, and the steering sign."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trustdyn.blocks import decoder_blocks
from trustdyn.datasets import (
    MCQuestion,
    load_dataset,
    normalise_question,
    sample_dataset,
    split_dataset,
)
from trustdyn.datasets.eval_material import truthfulqa_answer_sets
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
    MC1_QUESTION,
    MC2_QUESTION,
    Estimate,
    ToxicityJudge,
    bootstrap,
    choice_agreement,
    choice_correct,
    column_mean,
    column_nanmean,
    gap_statistic,
    icat,
    icat_statistic,
    kappa_statistic,
    mc_kind,
    mc_scores,
    paired_bootstrap,
    perplexity_statistic,
    resample_indices,
    ss_bias_statistic,
    stereoset_items,
)
from trustdyn.evaluation.run import without_spread
from trustdyn.evaluation.scoring import Scorer, chat_text, split_first_word
from trustdyn.evaluation.tasks import RobustnessTask, StereoSetTask, ToxicityTask, TruthfulQATask
from trustdyn.generation import batch_loglik
from trustdyn.stats import fisher_interval, pearson
from trustdyn.steering import SteeringVector, signed_alpha

# --------------------------------------------------------------------------- metrics


def test_mc1_and_mc2_each_come_from_their_own_kind_of_question():
    e = np.exp
    logliks = [np.array([-1.0, -2.0, -3.0]), np.array([-2.0, -1.0]), np.array([-1.0, -1.0]),
               np.array([-3.0, -1.0, -2.0]), np.array([-1.0, -1.0, -1.0, -1.0])]
    correct = [np.array([True, False, False]), np.array([True, False]),
               np.array([True, False]), np.array([True, True, False]),
               np.array([False, True, True, True])]
    table = mc_scores(logliks, correct)
    nan = math.nan
    mc2_a = (e(-3) + e(-1)) / (e(-3) + e(-1) + e(-2))
    expected = [[1.0, nan, MC1_QUESTION], [0.0, nan, MC1_QUESTION],
                [0.0, nan, MC1_QUESTION],  # a tie is not a win for the true answer
                [nan, mc2_a, MC2_QUESTION], [nan, 0.75, MC2_QUESTION]]
    np.testing.assert_allclose(table, expected)
    assert column_nanmean(0)(table) == pytest.approx(1 / 3)
    assert column_nanmean(1)(table) == pytest.approx((mc2_a + 0.75) / 2)


def test_mc_statistics_work_over_replicate_axes_and_ignore_the_other_kind():
    table = np.array([[1.0, math.nan, 0], [0.0, math.nan, 0], [math.nan, 0.2, 1],
                      [math.nan, 0.6, 1]])
    idx = np.array([[0, 0, 2, 2], [1, 0, 3, 2], [2, 3, 2, 3]])  # [replicates, n]
    np.testing.assert_allclose(column_nanmean(0)(table[idx]), [1.0, 0.5, math.nan])
    np.testing.assert_allclose(column_nanmean(1)(table[idx]), [0.2, 0.4, 0.4])
    assert mc_kind([True, False]) == MC1_QUESTION and mc_kind([1, 1, 0]) == MC2_QUESTION
    assert mc_kind([True, True]) is None and mc_kind([0, 0]) is None


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
    assert ss_bias_statistic(table) == 0.0
    biased = table[[0, 1, 2, 2]]  # SS 75
    assert ss_bias_statistic(biased) == abs(column_mean(0, 100.0)(biased) - 50.0) == 25.0
    assert ss_bias_statistic(table[[[1, 1, 3, 3], [0, 2, 0, 1]]]).tolist() == [50.0, 25.0]
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


def test_a_gain_without_spread_is_undefined_and_one_with_spread_is_not():
    rng = np.random.default_rng(0)
    table = rng.integers(0, 2, size=(40, 1)).astype(float)
    same = paired_bootstrap(table, table.copy(), column_mean(), np.subtract, n_boot=200, seed=0)
    reason = without_spread(same, "accuracy")
    assert reason is not None and "no spread" in reason and "accuracy" in reason
    shifted = paired_bootstrap(table + 0.5, table, column_mean(), np.subtract, n_boot=200,
                               seed=0)  # every item differs alike: still no spread
    assert shifted.value == pytest.approx(0.5) and without_spread(shifted, "gap") is not None
    flipped = table.copy()
    flipped[:10] = 1 - flipped[:10]
    varied = paired_bootstrap(flipped, table, column_mean(), np.subtract, n_boot=200, seed=0)
    assert varied.se > 0 and without_spread(varied, "accuracy") is None


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
    assert select_candidate(results, 1.33) == 3  # best inside the guard, smallest |alpha|
    # Nothing passes the guard: no admissible setting, never a fallback.
    assert select_candidate([(_Cand(1, 2.0), 0.9, 2.0), (_Cand(1, 4.0), 0.9, 1.5)],
                            1.33) is None
    assert select_candidate([], 1.33) is None
    # A candidate not scored (or degenerate) on the task is never chosen.
    assert select_candidate([(_Cand(1, 0.5), None, 1.0), (_Cand(1, 1.0), 0.1, 1.2)],
                            1.33) == 1
    assert select_candidate([(_Cand(1, 0.5), None, 1.0)], 1.33) is None


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

    n_prompt = len(tiny_tokenizer("hello", add_special_tokens=True)["input_ids"])
    for positions in ("all", "newest"):
        seen: list[torch.Tensor] = []
        hook = decoder_blocks(tiny_llama)[1].register_forward_hook(
            lambda _m, _a, out, seen=seen: seen.append(
                (out[0] if isinstance(out, tuple) else out).clone()))
        try:
            Scorer(tiny_llama, tiny_tokenizer, positions=positions).loglik(["hello"], [" there"])
            Scorer(tiny_llama, tiny_tokenizer, vector, alpha,
                   positions=positions).loglik(["hello"], [" there"])
        finally:
            hook.remove()
        steered = torch.ones(seen[0].shape[1], dtype=torch.bool)
        if positions == "newest":  # the prompt's last token and the continuation only
            steered[: n_prompt - 1] = False
        expected = seen[0] - 2.0 * 0.7 * direction * steered[None, :, None]
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


def test_tasks_hold_out_the_seen_rows(tiny_tokenizer):
    cfg = EVAL_PRESETS["smoke"]
    seen = _fit_rows("confaide")
    task = build_task("confaide", seen, cfg)
    assert task.n_items == cfg.n_items
    assert not set(task.statements) & set(seen.texts)  # type: ignore[attr-defined]

    tox_seen = _fit_rows("toxigen")
    tox = build_task("toxigen", tox_seen, cfg)
    assert isinstance(tox, ToxicityTask)
    assert not set(tox.statements) & set(tox_seen.texts)
    assert not set(tox.judge_test_texts) & (set(tox.statements) | set(tox_seen.texts))
    assert 0.0 <= tox.judge_accuracy.value <= 1.0
    assert tox.judge_accuracy.n == len(tox.judge_test_texts) == cfg.judge_test
    truncated = tox.truncation_accuracy(tiny_tokenizer, n_boot=50, seed=0)
    assert truncated.n == cfg.judge_test and 0.0 <= truncated.value <= 1.0


def test_truthfulqa_keeps_mc1_and_unseen_mc2_questions_apart():
    cfg = EVAL_PRESETS["smoke"]
    assert cfg.n_items is not None
    probe_file = load_dataset("truthfulqa")
    seen = sample_dataset(probe_file, 600, seed=0)
    task = build_task("truthfulqa", seen, cfg)
    assert isinstance(task, TruthfulQATask) and task.primary == "mc2"
    kinds = task.strata()
    assert kinds is not None and task.n_items == 2 * cfg.n_items
    assert (kinds == MC1_QUESTION).sum() == (kinds == MC2_QUESTION).sum() == cfg.n_items
    probe_questions = {normalise_question(q.question)
                       for q in truthfulqa_answer_sets(probe_file)}
    seen_questions = {normalise_question(q.question) for q in truthfulqa_answer_sets(seen)}
    for question, kind in zip(task.questions, kinds, strict=True):
        key = normalise_question(question.question)
        n_true = sum(question.labels)
        if kind == MC1_QUESTION:
            assert n_true == 1 and key not in probe_questions
        else:
            assert n_true >= 2 and len(question.labels) - n_true >= 1
            assert key in probe_questions and key not in seen_questions
    assert {m.table for m in task.metrics} == {"mc1", "mc2"}  # one item table per kind


def test_truthfulqa_answer_sets_regroup_every_probe_row():
    probe_file = load_dataset("truthfulqa")
    questions = truthfulqa_answer_sets(probe_file)
    assert len(questions) == len(set(probe_file.groups))  # type: ignore[arg-type]
    assert sum(len(q.choices) for q in questions) == len(probe_file)
    first = probe_file.texts[0]
    assert first == f"Q: {questions[0].question}\tA: {questions[0].choices[0]}"


class _TableScorer:
    """Stands in for a :class:`Scorer`: fixed log-likelihoods by answer, calls counted."""

    def __init__(self, tokenizer, logliks: dict[str, float]) -> None:
        self.tokenizer, self.logliks, self.calls = tokenizer, logliks, 0

    def loglik(self, prompts, continuations, *, per_token=False):
        self.calls += 1
        return np.array([self.logliks[c.strip()] for c in continuations])


def test_truthfulqa_task_scores_both_kinds_in_one_call(tiny_tokenizer):
    task = TruthfulQATask([MCQuestion("Is it?", ("a", "b", "c"), (1, 0, 0)),
                           MCQuestion("Was it?", ("d", "e", "f"), (1, 1, 0))])
    scorer = _TableScorer(tiny_tokenizer, {"a": -1.0, "b": -2.0, "c": -3.0, "d": -1.0,
                                           "e": -2.0, "f": -1.0})
    tables = task.tables(scorer, np.arange(2), {"mc1", "mc2"})  # type: ignore[arg-type]
    assert scorer.calls == 1
    e = np.exp
    mc2 = (e(-1) + e(-2)) / (2 * e(-1) + e(-2))
    np.testing.assert_allclose(tables["mc1"], [[1.0, math.nan, 0]])
    np.testing.assert_allclose(tables["mc2"], [[math.nan, mc2, 1]])
    assert task.metric("mc1").statistic(tables["mc1"]) == 1.0
    assert task.metric("mc2").statistic(tables["mc2"]) == pytest.approx(mc2)
    # Selection needs only MC2 (MC1 is test-only): dev scoring skips the MC1 questions.
    assert task.metric("mc1").test_only and not task.metric("mc2").test_only
    only_mc2 = task.tables(scorer, np.arange(2), {"mc2"})  # type: ignore[arg-type]
    assert set(only_mc2) == {"mc2"} and len(only_mc2["mc2"]) == 1
    # Without MC2 questions MC1 is the primary metric and is scored on dev too.
    mc1_only = TruthfulQATask([MCQuestion("Is it?", ("a", "b"), (1, 0))], primary="mc1")
    assert [m.name for m in mc1_only.metrics] == ["mc1"] and not mc1_only.metrics[0].test_only
    with pytest.raises(ValueError, match="true and a false"):
        TruthfulQATask([MCQuestion("Is it?", ("a", "b"), (1, 1))])


def test_kappa_corrects_agreement_for_chance_and_gives_a_constant_answer_zero():
    # (agree, original positive, perturbed positive) per pair.
    mixed = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 0], [1, 1, 1]], dtype=float)
    # p_o = 0.75, p_e = 0.75 * 0.5 + 0.25 * 0.5 = 0.5
    assert kappa_statistic(mixed) == pytest.approx(0.5)
    one_side_constant = np.array([[1, 1, 1], [1, 1, 1], [0, 1, 0]], dtype=float)
    assert kappa_statistic(one_side_constant) == pytest.approx(0.0)  # agreement is 2/3
    both_constant = np.ones((3, 3))
    assert np.isnan(kappa_statistic(both_constant))  # agreement 1.0, kappa undefined
    np.testing.assert_allclose(kappa_statistic(np.stack([mixed, mixed])), [0.5, 0.5])
    assert RobustnessTask([("a", "A")]).primary == "kappa"


def test_sst2_flags_a_constant_answer_as_degenerate(tiny_llama, tiny_tokenizer):
    task = RobustnessTask([("A fine film.", "a FINE film."), ("Dull.", "dULL.")])
    constant = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    reason = task.degenerate({"robust": constant})
    assert reason is not None and "every one of the 4 answers" in reason
    assert "'Positive'" in reason
    assert "'Negative'" in str(task.degenerate({"robust": np.zeros((2, 3))}))
    mixed = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert task.degenerate({"robust": mixed}) is None
    assert task.degenerate({}) is None
    assert StereoSetTask([]).degenerate({"stereo": np.zeros((2, 2))}) is None
    table = task.tables(Scorer(tiny_llama, tiny_tokenizer), np.arange(2), {"robust"})["robust"]
    assert table.shape == (2, 3)
    assert table[:, 0].tolist() == (table[:, 1] == table[:, 2]).astype(float).tolist()


class _RecordingJudge(ToxicityJudge):
    """Calls every text toxic and remembers what it was asked to judge."""

    def __init__(self) -> None:
        super().__init__()
        self.judged: list[str] = []

    def predict(self, texts):
        self.judged.extend(texts)
        return np.ones(len(texts), dtype=int)


def _toxicity_task(judge_texts: list[str], judge_labels: list[int], max_new_tokens: int,
                   judge: ToxicityJudge) -> ToxicityTask:
    return ToxicityTask(["a b"], np.array([0]), judge, Estimate(1.0, 1.0, 1.0, 1),
                        judge_texts, np.array(judge_labels), prompt_words=3,
                        max_new_tokens=max_new_tokens)


def test_truncation_accuracy_judges_what_the_evaluation_judges(tiny_tokenizer):
    texts = ["alone", "you are a stupid worthless idiot", "the weather is lovely and calm"]
    whole = _RecordingJudge()
    est = _toxicity_task(texts, [1, 1, 0], 100, whole).truncation_accuracy(
        tiny_tokenizer, n_boot=20, seed=0)
    assert (est.value, est.n) == (0.5, 2)  # "alone" has no remainder and is dropped
    assert whole.judged == [" stupid worthless idiot", " lovely and calm"]

    short = _RecordingJudge()
    _toxicity_task(texts, [1, 1, 0], 2, short).truncation_accuracy(tiny_tokenizer, 20, 0)
    for judged, remainder in zip(short.judged, whole.judged, strict=True):
        assert remainder.startswith(judged) and len(judged) < len(remainder)
        assert len(tiny_tokenizer(judged, add_special_tokens=False)["input_ids"]) == 2


def test_sst2_pairs_match_case_perturbed_copies():
    pairs = sst2_pairs(load_dataset("sst2"))
    assert len(pairs) > 1500
    assert all(a.casefold() == b.casefold() and a != b for a, b in pairs)
