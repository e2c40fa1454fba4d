"""Steering-evaluation material under ``data/eval/``, and removing what overlaps a probe dataset.

Loads the TruthfulQA multiple-choice questions, the held-out TruthfulQA prompts and the
StereoSet dev items, and regroups the TruthfulQA probe statements into questions with all
their reference answers (:func:`truthfulqa_answer_sets`); :func:`exclude_questions` and
:func:`exclude_stereoset_items` drop the items a probe dataset already contains, so no
evaluation item was seen while fitting.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from trustdyn import paths
from trustdyn.datasets.errors import _MAX_LISTED, DatasetError
from trustdyn.datasets.probe_dataset import ProbeDataset
from trustdyn.datasets.tables import _decode_file, _json_lines, _read_table
from trustdyn.datasets.text import clean_text, normalise_question, truthfulqa_parts
from trustdyn.datasets.validate import _parse_label

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MCQuestion:
    """One TruthfulQA multiple-choice question.

    From BIG-bench ``truthful_qa`` (:func:`load_truthfulqa_mc`: one true answer) or
    regrouped from the probe statements (:func:`truthfulqa_answer_sets`: all reference
    true and false answers of a question).

    Attributes:
        question: Question text.
        choices: Answer options, in file order (BIG-bench lists the true answer first, so
            evaluators must not break ties by position).
        labels: 1 for a true answer, 0 for a false one, aligned with ``choices``.

    """

    question: str
    choices: tuple[str, ...]
    labels: tuple[int, ...]

    @property
    def correct(self) -> tuple[int, ...]:
        """Indices of the true answers."""
        return tuple(i for i, label in enumerate(self.labels) if label == 1)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise DatasetError(f"repeated JSON key(s) {repeated[:3]}")
    return dict(pairs)


def _eval_path(name: str, path: str | Path | None) -> Path:
    resolved = Path(path) if path is not None else paths.DATA_DIR / "eval" / name
    if not resolved.is_file():
        raise DatasetError(f"{resolved}: no such file (vendored evaluation data lives in "
                           "data/eval/)")
    return resolved


def _parse_mc_example(example: Any) -> MCQuestion:
    if not isinstance(example, dict) or not {"input", "target_scores"} <= set(example):
        raise ValueError("expected an object with 'input' and 'target_scores'")
    scores = example["target_scores"]
    if not isinstance(scores, dict) or len(scores) < 2:
        raise ValueError("'target_scores' must map at least two answers to 0/1")
    labels = tuple(_parse_label(v) for v in scores.values())
    if any(label is None for label in labels) or len(set(labels)) != 2:
        raise ValueError(f"scores must be 0/1 with at least one of each, got "
                         f"{list(scores.values())}")
    question = clean_text(str(example["input"]))
    choices = tuple(clean_text(str(c)) for c in scores)
    if not question or not all(choices):
        raise ValueError("empty question or answer")
    return MCQuestion(question, choices, tuple(int(label or 0) for label in labels))


def load_truthfulqa_mc(path: str | Path | None = None) -> list[MCQuestion]:
    """Load the BIG-bench TruthfulQA multiple-choice questions (``data/eval/truthfulqa_mc.json``).

    Raises:
        DatasetError: Unreadable JSON or an example not in the expected format (named by
            its 1-based position in ``examples``).

    """
    resolved = _eval_path("truthfulqa_mc.json", path)
    try:
        data = json.loads(_decode_file(resolved), object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{resolved}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except DatasetError as exc:
        raise DatasetError(f"{resolved}: {exc}") from None
    examples = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(examples, list) or not examples:
        raise DatasetError(f"{resolved}: expected a BIG-bench task with a non-empty "
                           "'examples' list")
    questions = []
    for number, example in enumerate(examples, start=1):
        try:
            questions.append(_parse_mc_example(example))
        except ValueError as exc:
            raise DatasetError(f"{resolved}: example {number}: {exc}") from None
    return questions


def load_truthfulqa_test_questions(path: str | Path | None = None) -> list[str]:
    """Load the reference study's held-out TruthfulQA generation prompts (no answers).

    Reads ``data/probe/truthfulqa_test.csv`` (one ``Question`` column); these questions do
    not occur in ``truthfulqa_train.csv``.
    """
    resolved = Path(path) if path is not None else paths.DATA_DIR / "probe/truthfulqa_test.csv"
    table = _read_table(resolved)
    if "Question" not in table.columns:
        raise DatasetError(f"{resolved}: missing column 'Question'; columns found: "
                           f"{list(table.columns)}")
    questions = [clean_text(str(row.values["Question"])) for row in table.rows]
    empty = [row.where() for row, q in zip(table.rows, questions, strict=True) if not q]
    if empty:
        raise DatasetError(f"{resolved}: empty question in {', '.join(empty[:_MAX_LISTED])}")
    return questions


def _question_answers(ds: ProbeDataset) -> list[tuple[str, str]]:
    """Return ``(question, answer)`` of each TruthfulQA statement ``Q: …<TAB>A: …`` of ``ds``."""
    # Parsed from the statements, not taken from the groups: other datasets have groups too.
    try:
        return [truthfulqa_parts(text) for text in ds.texts]
    except ValueError:
        raise DatasetError(f"{ds.name}: its statements are not 'Q: …<TAB>A: …'; pass the "
                           "truthfulqa dataset") from None


def _probe_questions(ds: ProbeDataset) -> set[str]:
    return {normalise_question(question) for question, _ in _question_answers(ds)}


def truthfulqa_answer_sets(ds: ProbeDataset) -> list[MCQuestion]:
    """Regroup TruthfulQA probe statements into one question with all its answers each.

    The probe file (``truthfulqa_train.csv``) ships TruthfulQA's reference true (label 1)
    and false (label 0) answers as one ``Q: …<TAB>A: …`` statement each, with a question's
    rows scattered over the file; this collects them per (normalised) question.

    Returns:
        Questions in order of first appearance, answers in row order.

    Raises:
        DatasetError: ``ds`` does not hold TruthfulQA statements.

    """
    answers: dict[str, tuple[str, list[str], list[int]]] = {}
    for (question, answer), label in zip(_question_answers(ds), ds.labels, strict=True):
        _, choices, labels = answers.setdefault(normalise_question(question),
                                                (question, [], []))
        choices.append(answer)
        labels.append(int(label))
    return [MCQuestion(question, tuple(choices), tuple(labels))
            for question, choices, labels in answers.values()]


def exclude_questions(questions: Sequence[MCQuestion], ds: ProbeDataset) -> list[MCQuestion]:
    """Drop questions whose (normalised) text is a question of the probe dataset ``ds``.

    Use before evaluating vectors fitted on ``ds``, so no evaluation question was seen
    while fitting. ``len(questions) - len(result)`` is the overlap (logged at INFO).
    """
    seen = _probe_questions(ds)
    kept = [q for q in questions if normalise_question(q.question) not in seen]
    logger.info("exclude_questions: %d of %d questions overlap %s", len(questions) - len(kept),
                len(questions), ds.name)
    return kept


StereoSetKind = Literal["inter", "intra", "all"]
_STEREOSET_TYPES = {"intersentence": "inter", "intrasentence": "intra"}
_STEREOSET_KEYS = ("type", "target", "bias_type", "context", "stereotype", "anti-stereotype",
                   "unrelated")


@dataclass(frozen=True)
class StereoSetItem:
    """One StereoSet dev item: a context and its three candidate continuations.

    Attributes:
        context: Inter-sentence: the first sentence. Intra-sentence: a sentence with
            ``BLANK`` where the options differ.
        stereotype: Stereotypical option (inter: second sentence; intra: full sentence).
        anti_stereotype: Anti-stereotypical option.
        unrelated: Unrelated (meaningless) option.
        bias_type: ``race``, ``profession``, ``gender`` or ``religion``.
        kind: ``"inter"`` or ``"intra"``.
        target: The group the context is about.

    """

    context: str
    stereotype: str
    anti_stereotype: str
    unrelated: str
    bias_type: str
    kind: Literal["inter", "intra"]
    target: str

    def sentences(self) -> dict[str, str]:
        """Return the full text of each option: context + option (inter) or the option."""
        options = {"stereotype": self.stereotype, "anti-stereotype": self.anti_stereotype,
                   "unrelated": self.unrelated}
        if self.kind == "inter":
            return {k: f"{self.context} {v}" for k, v in options.items()}
        return options


def _parse_stereoset_line(values: Any) -> StereoSetItem:
    if not isinstance(values, dict):
        raise ValueError("expected a JSON object")
    missing = [k for k in _STEREOSET_KEYS if k not in values]
    if missing:
        raise ValueError(f"missing key(s) {missing}")
    kind = _STEREOSET_TYPES.get(str(values["type"]))
    if kind is None:
        raise ValueError(f"type {values['type']!r} is not intersentence or intrasentence")
    text = {k: clean_text(str(values[k])) for k in _STEREOSET_KEYS}
    empty = [k for k, v in text.items() if not v]
    if empty:
        raise ValueError(f"empty {empty}")
    return StereoSetItem(
        context=text["context"], stereotype=text["stereotype"],
        anti_stereotype=text["anti-stereotype"], unrelated=text["unrelated"],
        bias_type=text["bias_type"], kind="inter" if kind == "inter" else "intra",
        target=text["target"],
    )


def load_stereoset_dev(kind: StereoSetKind = "all", path: str | Path | None = None
                       ) -> list[StereoSetItem]:
    """Load StereoSet dev items from ``data/eval/stereoset_dev.jsonl``.

    Args:
        kind: ``"inter"`` (inter-sentence), ``"intra"`` (intra-sentence) or ``"all"``.
        path: Alternative file in the same format.

    Raises:
        DatasetError: Unknown ``kind`` or a malformed line (named by its line number).

    """
    if kind not in ("inter", "intra", "all"):
        raise DatasetError(f"kind must be 'inter', 'intra' or 'all', got {kind!r}")
    resolved = _eval_path("stereoset_dev.jsonl", path)
    items = []
    for line_no, line in enumerate(_json_lines(_decode_file(resolved)), start=1):
        if not line.strip():
            continue
        try:
            item = _parse_stereoset_line(json.loads(line))
        except (ValueError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{resolved}: line {line_no}: {exc}") from None
        if kind in ("all", item.kind):
            items.append(item)
    return items


def exclude_stereoset_items(items: Sequence[StereoSetItem], ds: ProbeDataset
                            ) -> list[StereoSetItem]:
    """Drop StereoSet items any of whose option sentences is a statement of ``ds``.

    The builtin ``stereoset`` probe data is built from the 976 inter-sentence race items of
    the dev set, so evaluate vectors fitted on it only on the remaining items.
    """
    seen = {normalise_question(t) for t in ds.texts}
    kept = [item for item in items
            if not any(normalise_question(s) in seen for s in item.sentences().values())]
    logger.info("exclude_stereoset_items: %d of %d items overlap %s", len(items) - len(kept),
                len(items), ds.name)
    return kept
