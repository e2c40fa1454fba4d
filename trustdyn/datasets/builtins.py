"""The builtin probe datasets (the paper's five vendored ones and ``sentences``): registry, loading.

The paper's five are read from ``data/probe/``; ``sentences``, beyond the paper, is generated
from the vendored corpus (:mod:`~trustdyn.datasets.corpus_sentences`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trustdyn import paths
from trustdyn.datasets.cards import DIMENSIONS, CardMeta, DatasetCard
from trustdyn.datasets.corpus_sentences import SENTENCES_META, load_sentences, sentences_source
from trustdyn.datasets.errors import DatasetError
from trustdyn.datasets.eval_material import load_stereoset_dev
from trustdyn.datasets.loading import _load_file
from trustdyn.datasets.probe_dataset import ProbeDataset
from trustdyn.datasets.text import (
    caseless,
    normalise_question,
    truthfulqa_question,
    unescape_backslashes,
)
from trustdyn.datasets.validate import TableFormat

PAPER_DATASETS: tuple[str, ...] = ("truthfulqa", "confaide", "toxigen", "stereoset", "sst2")
"""The paper's five datasets, one per trustworthiness dimension (vendored files)."""
BUILTIN_DATASETS: tuple[str, ...] = (*PAPER_DATASETS, SENTENCES_META.name)
"""Every builtin dataset: the paper's five and the generated ``sentences`` (beyond the paper)."""


_REFERENCE = ("TracingLLM reference implementation of Qian et al. (2024), "
              "github.com/ChnQ/TracingLLM, src/datasets/")
_REFERENCE_LICENSE = "Apache-2.0 (reference repository); upstream terms also apply"


@functools.cache
def _stereoset_contexts() -> dict[str, str]:
    """Map each inter-sentence StereoSet dev option (context + option) to its context."""
    return {normalise_question(text): item.context for item in load_stereoset_dev("inter")
            for text in item.sentences().values()}


def stereoset_context(statement: str) -> str:
    """Return the StereoSet item context a probe statement was built from (its group).

    A statement found in no dev item (not the case for the vendored file) is its own group.
    """
    return _stereoset_contexts().get(normalise_question(statement), statement)


@dataclass(frozen=True)
class _Builtin:
    file: str  # relative to data/
    meta: CardMeta
    fmt: TableFormat


_BUILTINS: dict[str, _Builtin] = {
    "truthfulqa": _Builtin(
        "probe/truthfulqa_train.csv",
        CardMeta(
            name="truthfulqa", dimension="reliability",
            label1_meaning="the answer is true",
            label0_meaning="the answer is false (an imitative falsehood)",
            desirable_label=1, harmful_label=0,
            source=_REFERENCE + "truthfulqa_train.csv",
            upstream="TruthfulQA (Lin et al., 2022), Apache-2.0",
            license=_REFERENCE_LICENSE,
            notes=("Statements are 'Q: question<TAB>A: answer', 2-6 answers per question, "
                   "both labels within every question; groups = question text, so splits "
                   "and samples keep whole questions. Questions overlap "
                   "data/eval/truthfulqa_mc.json: remove them with exclude_questions()."),
        ),
        TableFormat(group_fn=truthfulqa_question, on_conflict="drop"),
    ),
    "confaide": _Builtin(
        "probe/confaide.csv",
        CardMeta(
            name="confaide", dimension="privacy",
            label1_meaning="the described information flow violates privacy norms",
            label0_meaning="the described information flow is acceptable",
            desirable_label=0, harmful_label=1,
            source=_REFERENCE + "confaide.csv",
            upstream=("ConfAIde tier 2 (Mireshghallah et al., 2024) plus generated items; "
                      "ConfAIde's own terms apply"),
            license=_REFERENCE_LICENSE,
            notes=("Many exact duplicate rows (dropped); a few statements carry both labels "
                   "(all their rows dropped), so the cleaned data is near-balanced, not "
                   "exactly balanced."),
        ),
        TableFormat(on_conflict="drop"),
    ),
    "toxigen": _Builtin(
        "probe/toxigen.csv",
        CardMeta(
            name="toxigen", dimension="toxicity",
            label1_meaning="toxic", label0_meaning="benign",
            desirable_label=0, harmful_label=1,
            source=_REFERENCE + "toxigen.csv",
            upstream="ToxiGen (Hartvigsen et al., 2022); code MIT, data per its dataset terms",
            license=_REFERENCE_LICENSE,
            notes=("Offensive content. Raw rows hold Excel escapes (_x000D_), HTML entities "
                   "(&amp;, &#128514;), mojibake (ItÃ¢â‚¬â„¢s), literal backslash escapes (\\n, "
                   "\\', \\u2019), CSV-doubled quotes and stray whitespace; all are cleaned. "
                   "Exact duplicates dropped; statements with both labels dropped."),
        ),
        TableFormat(on_conflict="drop", pre_clean=unescape_backslashes),
    ),
    "stereoset": _Builtin(
        "probe/stereoset.csv",
        CardMeta(
            name="stereoset", dimension="fairness",
            label1_meaning=("the continuation is StereoSet's anti-stereotype for the context "
                            "(inter-sentence, race)"),
            label0_meaning="the continuation is StereoSet's unrelated (meaningless) option",
            desirable_label=1, harmful_label=None,
            source=_REFERENCE + "stereoset.csv",
            upstream="StereoSet (Nadeem et al., 2021) dev set, CC BY-SA 4.0",
            license="CC-BY-SA-4.0",
            notes=("Every row is context + option of one of the 976 inter-sentence race items "
                   "of data/eval/stereoset_dev.jsonl: label 1 rows are the items' "
                   "'anti-stereotype' option, label 0 rows their 'unrelated' option; no "
                   "'stereotype' option occurs, although the reference README calls label 1 "
                   "'stereotype'. There is no harmful class; steering toward label 1 "
                   "(anti-stereotype) is the fair direction. Groups = the item's context, so "
                   "splits, samples and bootstrap intervals keep an item's two options "
                   "together. Remove these items from StereoSet evaluations with "
                   "exclude_stereoset_items()."),
        ),
        TableFormat(group_fn=stereoset_context, on_conflict="drop"),
    ),
    "sst2": _Builtin(
        "probe/sst2.csv",
        CardMeta(
            name="sst2", dimension="robustness",
            label1_meaning="the sentence was perturbed by random letter-case flips",
            label0_meaning="the original SST-2 sentence",
            desirable_label=None, harmful_label=None,
            source=_REFERENCE + "sst2.csv",
            upstream="SST-2 (Socher et al., 2013) via GLUE",
            license=_REFERENCE_LICENSE,
            notes=("Each original sentence appears once as label 0 and once case-perturbed as "
                   "label 1. Where no letter was flipped the two rows are identical with both "
                   "labels; such pairs are dropped. No class is harmful: the vector points "
                   "toward 'surface noise' and steering along it (the reference study's sign) "
                   "tests concept salience, not a safer model. Groups = the lower-cased "
                   "sentence, so a sentence and its perturbed copy stay together."),
        ),
        TableFormat(group_fn=caseless, on_conflict="drop"),
    ),
}


@dataclass(frozen=True)
class _Generated:
    load: Callable[[], ProbeDataset]
    source: Callable[[], Path]  # the vendored file the rows are made from


_GENERATED: dict[str, _Generated] = {
    SENTENCES_META.name: _Generated(load_sentences, sentences_source)}
"""Builtin datasets generated from vendored material rather than read from a probe file."""


def resolve_name(name: str) -> str:
    """Map a builtin dataset or dimension name (case-insensitive) to the dataset name."""
    key = name.strip().lower()
    key = DIMENSIONS.get(key, key)
    if key not in _BUILTINS and key not in _GENERATED:
        raise DatasetError(
            f"unknown dataset {name!r}; builtin datasets: {', '.join(BUILTIN_DATASETS)}; "
            f"dimensions: {', '.join(f'{d} ({n})' for d, n in DIMENSIONS.items())}. "
            "Load your own file with load_table(path, name=...)."
        )
    return key


def builtin_path(name: str) -> Path:
    """Return the vendored file of a builtin dataset (or dimension), or the one it is made from."""
    key = resolve_name(name)
    if key in _GENERATED:
        return _GENERATED[key].source()
    return paths.DATA_DIR / _BUILTINS[key].file


def load_dataset(name: str) -> ProbeDataset:
    """Load a builtin probe dataset by dataset name (``"toxigen"``) or dimension (``"toxicity"``).

    Rows are cleaned and validated; drops are counted on the card instead of warned about.
    ``sentences`` is generated from the vendored corpus (and needs torch to be importable).

    Raises:
        DatasetError: Unknown name (the message lists the valid ones) or a missing file.
        SuiteError: ``sentences`` without its vendored corpus file.

    """
    key = resolve_name(name)
    if key in _GENERATED:
        return _GENERATED[key].load()
    spec = _BUILTINS[key]
    path = paths.DATA_DIR / spec.file
    if not path.is_file():
        raise DatasetError(f"vendored dataset file {path} is missing; restore data/probe/ "
                           "from the repository")
    return _load_file(path, spec.meta, spec.fmt, warn=False)


def builtin_cards() -> dict[str, DatasetCard]:
    """Build the card of every builtin dataset from its vendored file."""
    return {name: load_dataset(name).card for name in BUILTIN_DATASETS}
