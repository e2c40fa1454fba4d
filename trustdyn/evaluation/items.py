"""Evaluation items held out from everything the vectors saw, and the perplexity-guard passages.

:func:`build_task` turns a builtin dataset into its
:class:`~trustdyn.evaluation.tasks.EvalTask` with every row of the study's sampled probe
dataset removed (ToxiGen's remaining rows are further split, seeded and disjoint, into the
local judge's training rows, its test rows and the evaluation prompts; ``sentences`` takes
the built-in chat task's held-out items); :func:`split_items` then halves the items into
dev and test.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from trustdyn.datasets import (
    ProbeDataset,
    exclude_questions,
    exclude_stereoset_items,
    load_dataset,
    load_stereoset_dev,
    load_truthfulqa_mc,
    sample_dataset,
)
from trustdyn.datasets.eval_material import truthfulqa_answer_sets
from trustdyn.evaluation.config import EvalConfig
from trustdyn.evaluation.metrics import MC2_QUESTION, ToxicityJudge, mc_kind
from trustdyn.evaluation.tasks import (
    EvalTask,
    PrivacyTask,
    RobustnessTask,
    SentenceTask,
    StereoSetTask,
    ToxicityTask,
    TruthfulQATask,
)


def split_items(n: int, dev_fraction: float, seed: int,
                strata: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted ``(dev, test)`` indices of ``n`` items, stratified when ``strata``.

    Each stratum with at least two items puts at least one on each side.

    Raises:
        ValueError: with fewer than two items.

    """
    if n < 2:
        raise ValueError(f"Need at least 2 evaluation items to split into dev and test, got {n}.")
    rng = np.random.default_rng(seed)
    groups = np.zeros(n, dtype=int) if strata is None else np.asarray(strata)
    dev: list[int] = []
    for value in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == value))
        k = round(dev_fraction * len(members))
        if len(members) >= 2:
            k = min(max(k, 1), len(members) - 1)
        dev.extend(members[:k].tolist())
    dev_idx = np.sort(np.asarray(dev, dtype=int))
    return dev_idx, np.setdiff1d(np.arange(n), dev_idx)


def _sample(pool: Sequence[Any], n: int | None, seed: int) -> list[Any]:
    """Return a seeded sample of ``n`` items of ``pool`` in pool order (all if ``None``)."""
    if n is None or n >= len(pool):
        return list(pool)
    keep = np.sort(np.random.default_rng(seed).choice(len(pool), size=n, replace=False))
    return [pool[i] for i in keep]


def _heldout(full: ProbeDataset, seen: ProbeDataset) -> ProbeDataset:
    """Return the rows of ``full`` whose statement is not a row of ``seen``."""
    texts = set(seen.texts)
    return full.subset(np.flatnonzero([t not in texts for t in full.texts]))


def _check_pool(name: str, size: int, need: int = 4) -> None:
    if size < need:
        raise ValueError(f"{name}: only {size} held-out evaluation items remain after "
                         f"removing the study's probe rows; at least {need} are needed "
                         "(sample fewer probe rows per dataset).")


EVALUATED_DATASETS: tuple[str, ...] = ("truthfulqa", "stereoset", "confaide", "sst2", "toxigen",
                                       "sentences")
"""Builtin datasets with an offline steering evaluation (one per trustworthiness dimension,
and the built-in chat model's task, ``sentences``, beyond the paper)."""


def build_task(name: str, seen: ProbeDataset, cfg: EvalConfig,
               builtin: tuple[str, int] | None = None) -> EvalTask:
    """Build the evaluation task of a builtin dataset, held out from what the vectors saw.

    Args:
        name: Builtin dataset name (one of :data:`EVALUATED_DATASETS`).
        seen: The study's whole sampled probe dataset: every row whose activations made
            the vectors or their scales. No evaluation item contains one of its rows; for
            TruthfulQA no MC2 question has a row in it and no MC1 (BIG-bench) question is
            in the probe file at all.
        cfg: Sizes and seed (``n_items`` caps each TruthfulQA kind separately).
        builtin: ``(preset, seed)`` of the built-in run whose chat model is evaluated:
            ``sentences`` takes that run's held-out chat-task items (other targets get
            the ``default`` preset's at the study seed).

    Raises:
        ValueError: for a dataset with no offline evaluation, or too few held-out items.

    """
    builders: dict[str, Callable[[ProbeDataset, EvalConfig], EvalTask]] = {
        "truthfulqa": _truthfulqa_task, "stereoset": _stereoset_task,
        "confaide": _privacy_task, "sst2": _robustness_task, "toxigen": _toxicity_task,
        "sentences": functools.partial(_sentences_task, builtin=builtin)}
    if name not in builders:
        raise ValueError(f"No offline steering evaluation for dataset {name!r}; evaluated "
                         f"datasets: {', '.join(EVALUATED_DATASETS)}.")
    return builders[name](seen, cfg)


def _truthfulqa_task(seen: ProbeDataset, cfg: EvalConfig) -> EvalTask:
    """MC1 questions from BIG-bench, MC2 questions from the probe file's unseen questions."""
    probe_file = load_dataset("truthfulqa")
    # All probe-file questions are removed from the MC1 kind, not just the seen ones:
    # vectors of other studies (other samples of the same file) must not have seen them.
    mc1 = exclude_questions(load_truthfulqa_mc(), probe_file)
    mc2 = [q for q in exclude_questions(truthfulqa_answer_sets(probe_file), seen)
           if mc_kind(q.labels) == MC2_QUESTION]
    _check_pool("truthfulqa (MC1 questions)", len(mc1))
    if not mc2:
        # A study that sampled every probe-file question leaves no MC2 question unseen:
        # MC1 alone is then the primary metric (nothing is called MC2).
        return TruthfulQATask(_sample(mc1, cfg.n_items, cfg.seed), primary="mc1")
    _check_pool("truthfulqa (MC2 questions)", len(mc2))
    return TruthfulQATask([*_sample(mc1, cfg.n_items, cfg.seed),
                           *_sample(mc2, cfg.n_items, cfg.seed)])


def _stereoset_task(seen: ProbeDataset, cfg: EvalConfig) -> EvalTask:
    kind = cfg.stereoset_kind
    if kind not in ("inter", "intra", "all"):
        raise ValueError(f"stereoset_kind must be inter, intra or all, got {kind!r}")
    # Every probe-file item is removed (as for TruthfulQA), not only the sampled ones.
    pool = exclude_stereoset_items(load_stereoset_dev(kind), load_dataset("stereoset"))  # type: ignore[arg-type]
    _check_pool("stereoset", len(pool))
    return StereoSetTask(_sample(pool, cfg.n_items, cfg.seed))


def _labelled_sample(name: str, seen: ProbeDataset, n: int | None, seed: int) -> ProbeDataset:
    pool = _heldout(load_dataset(name), seen)
    _check_pool(name, len(pool))
    return pool if n is None else sample_dataset(pool, n, seed=seed)


def _privacy_task(seen: ProbeDataset, cfg: EvalConfig) -> EvalTask:
    rows = _labelled_sample("confaide", seen, cfg.n_items, cfg.seed)
    return PrivacyTask(rows.texts, np.asarray(rows.labels))


def sst2_pairs(ds: ProbeDataset) -> list[tuple[str, str]]:
    """Pair each original SST-2 sentence (label 0) with its case-perturbed copy (label 1).

    Copies differ only in letter case, so they pair on the case-folded text; sentences
    without a partner (e.g. dropped by cleaning) are skipped.
    """
    originals: dict[str, str] = {}
    for text, label in zip(ds.texts, ds.labels, strict=True):
        if label == 0:
            originals.setdefault(text.casefold(), text)
    pairs = []
    for text, label in zip(ds.texts, ds.labels, strict=True):
        original = originals.get(text.casefold())
        if label == 1 and original is not None and original != text:
            pairs.append((original, text))
    return pairs


def _robustness_task(seen: ProbeDataset, cfg: EvalConfig) -> EvalTask:
    texts = set(seen.texts)
    pool = [p for p in sst2_pairs(load_dataset("sst2"))
            if p[0] not in texts and p[1] not in texts]
    _check_pool("sst2", len(pool))
    return RobustnessTask(_sample(pool, cfg.n_items, cfg.seed))


def _toxicity_task(seen: ProbeDataset, cfg: EvalConfig) -> EvalTask:
    """Split held-out ToxiGen rows into judge-train / judge-test / evaluation prompts."""
    pool = _heldout(load_dataset("toxigen"), seen)
    usable = pool.subset(np.flatnonzero([len(t.split()) >= 2 for t in pool.texts]))
    order = np.random.default_rng(cfg.seed).permutation(len(usable))
    n_train = min(cfg.judge_train, len(usable) // 3)
    n_test = min(cfg.judge_test, len(usable) // 3)
    judge_rows = usable.subset(order[:n_train])
    judge_test = usable.subset(order[n_train:n_train + n_test])
    rest = usable.subset(order[n_train + n_test:])
    _check_pool("toxigen", len(rest))
    prompts = rest if cfg.n_items is None else sample_dataset(rest, cfg.n_items, seed=cfg.seed)
    judge = ToxicityJudge(seed=cfg.seed).fit(judge_rows.texts, np.asarray(judge_rows.labels))
    test_labels = np.asarray(judge_test.labels)
    accuracy = judge.accuracy(judge_test.texts, test_labels, n_boot=cfg.n_bootstrap,
                              seed=cfg.seed)
    return ToxicityTask(prompts.texts, np.asarray(prompts.labels), judge, accuracy,
                        judge_test.texts, test_labels, max_new_tokens=cfg.max_new_tokens)


def _sentences_task(seen: ProbeDataset, cfg: EvalConfig, builtin: tuple[str, int] | None
                    ) -> EvalTask:
    """The chat task's held-out items, minus any that shows or is cut from a sampled row."""
    # builtin_task imports trustdyn.evaluation.metrics: importing it at module level would
    # make a cycle through this package's __init__.
    from trustdyn.datasets.corpus_sentences import SOURCE_PRESET
    from trustdyn.suites.builtin_task import PROMPT, load_heldout_items

    preset, seed = builtin or (SOURCE_PRESET, cfg.seed)
    # The probe rows come from `default`'s pre-trained passages: another run's split may
    # hold some of them out, and then its items could show a row the vectors were fitted on.
    texts = set(seen.texts)
    shown = {PROMPT.format(sentence=text) for text in texts}
    pool = [item for item in load_heldout_items(preset, seed)
            if item.prompt not in shown and item.sentence not in texts]
    _check_pool("sentences", len(pool))
    # Half real, half shuffled (as the chat task's items are), so a constant answer scores
    # 0.5 and accuracy rises only with more correct answers.
    half = None if cfg.n_items is None else cfg.n_items // 2
    chosen = [item for answer in (True, False)
              for item in _sample([i for i in pool if i.answer is answer], half, cfg.seed)]
    source = (f"held-out items of the built-in chat task (preset {preset!r}, seed {seed}): "
              "sentences of passages held out of pre-training and fine-tuning, "
              f"{len(chosen)} of {len(pool)} after removing the study's sampled rows")
    return SentenceTask([item.prompt for item in chosen],
                        np.asarray([item.answer for item in chosen]), source)


# --------------------------------------------------------------------------- passages


def heldout_passages(builtin: tuple[str, int] | None, cfg: EvalConfig
                     ) -> tuple[list[str], str]:
    """Return perplexity-guard passages and a description of where they come from.

    Args:
        builtin: ``(preset, seed)`` when the target belongs to the built-in suite: its
            held-out Wikipedia passages (never pre-trained on) are used. Otherwise a
            seeded sample of all vendored passages (a public model may have seen them;
            the guard is a ratio to the same model unsteered, which that cancels to
            first order).
        cfg: Number of passages, words kept and seed.

    """
    from trustdyn.suites.builtin_data import (
        PASSAGES_FILE,
        corpus_file,
        load_corpus,
        split_corpus,
    )

    if builtin is not None:
        from trustdyn.suites.builtin_presets import get_preset

        preset = get_preset(builtin[0], seed=builtin[1])
        corpus = load_corpus(preset.corpus_lines)
        split = split_corpus(corpus, preset.heldout_fraction, preset.seed)
        passages = set(corpus.passages)
        pool = sorted(d for d in split.heldout_docs if d in passages)
        source = (f"built-in preset {preset.name!r} (seed {preset.seed}): held-out Wikipedia "
                  "passages of its pre-training split")
    else:
        with gzip.open(corpus_file(PASSAGES_FILE), "rt", encoding="utf-8") as fh:
            pool = [line.rstrip("\n") for line in fh]
        source = f"seeded sample of data/corpus/{PASSAGES_FILE}"
    pool = [p for p in pool if len(p.split()) >= 8]
    chosen = _sample(pool, cfg.n_passages, cfg.seed)
    cut = [" ".join(p.split()[: cfg.passage_words]) for p in chosen]
    return cut, f"{source}; {len(cut)} passages cut to {cfg.passage_words} words"
