"""Probe datasets: load, clean, validate, split and describe them with dataset cards.

The paper's five builtin datasets (one per trustworthiness dimension) are vendored under
``data/probe/`` and the steering-evaluation material under ``data/eval/``; a sixth,
``sentences`` (real vs word-shuffled sentences, beyond the paper), is generated from the
vendored corpus; nothing here reads outside :data:`trustdyn.paths.DATA_DIR`. Users' own
CSV/TSV/JSON/JSONL files go through :func:`load_table` and hub datasets through
:func:`load_hub_dataset`; all three share one cleaning (:mod:`~trustdyn.datasets.text`)
and validation (:mod:`~trustdyn.datasets.validate`) path, so a problem is reported the
same way wherever the rows came from: a :class:`DatasetError` naming the file, the row and
what is wrong.
The other modules: :mod:`~trustdyn.datasets.cards` (card types),
:mod:`~trustdyn.datasets.tables` (reading files), :mod:`~trustdyn.datasets.loading`
(files and hub into datasets), :mod:`~trustdyn.datasets.user` (a study's own datasets),
:mod:`~trustdyn.datasets.builtins`, :mod:`~trustdyn.datasets.corpus_sentences` (the
generated dataset),
:mod:`~trustdyn.datasets.splits`, :mod:`~trustdyn.datasets.eval_material` (data under
``data/eval/``) and :mod:`~trustdyn.datasets.cards_json` (``data/probe/cards.json``,
checked by ``python -m trustdyn.datasets --check``).
"""

from trustdyn.datasets.builtins import (
    BUILTIN_DATASETS,
    PAPER_DATASETS,
    builtin_cards,
    builtin_path,
    load_dataset,
    resolve_name,
)
from trustdyn.datasets.cards import CARDS_FILE, DIMENSIONS, CardMeta, DatasetCard
from trustdyn.datasets.cards_json import cards_document, read_cards, write_cards
from trustdyn.datasets.errors import DatasetError, DatasetWarning
from trustdyn.datasets.eval_material import (
    MCQuestion,
    StereoSetItem,
    StereoSetKind,
    exclude_questions,
    exclude_stereoset_items,
    load_stereoset_dev,
    load_truthfulqa_mc,
    load_truthfulqa_test_questions,
)
from trustdyn.datasets.loading import build_card, load_hub_dataset, load_table
from trustdyn.datasets.probe_dataset import ProbeDataset
from trustdyn.datasets.splits import Split, sample_dataset, split_dataset
from trustdyn.datasets.tables import TABLE_SUFFIXES
from trustdyn.datasets.text import (
    clean_text,
    normalise_question,
    normalise_whitespace,
    truthfulqa_question,
    unescape_backslashes,
)
from trustdyn.datasets.user import TABLE_KINDS, UserDataset, load_study_dataset
from trustdyn.datasets.validate import OnConflict, TableFormat

__all__ = [
    "BUILTIN_DATASETS",
    "CARDS_FILE",
    "DIMENSIONS",
    "PAPER_DATASETS",
    "TABLE_KINDS",
    "TABLE_SUFFIXES",
    "CardMeta",
    "DatasetCard",
    "DatasetError",
    "DatasetWarning",
    "MCQuestion",
    "OnConflict",
    "ProbeDataset",
    "Split",
    "StereoSetItem",
    "StereoSetKind",
    "TableFormat",
    "UserDataset",
    "build_card",
    "builtin_cards",
    "builtin_path",
    "cards_document",
    "clean_text",
    "exclude_questions",
    "exclude_stereoset_items",
    "load_dataset",
    "load_hub_dataset",
    "load_stereoset_dev",
    "load_study_dataset",
    "load_table",
    "load_truthfulqa_mc",
    "load_truthfulqa_test_questions",
    "normalise_question",
    "normalise_whitespace",
    "read_cards",
    "resolve_name",
    "sample_dataset",
    "split_dataset",
    "truthfulqa_question",
    "unescape_backslashes",
    "write_cards",
]
