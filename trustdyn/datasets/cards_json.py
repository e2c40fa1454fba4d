"""``data/probe/cards.json``: build it from the vendored files, read it and write it.

Run ``python -m trustdyn.datasets --write-cards`` to regenerate it after changing a
vendored file, ``--check`` to verify it is current.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trustdyn import paths
from trustdyn.datasets.builtins import _REFERENCE, _REFERENCE_LICENSE, builtin_cards
from trustdyn.datasets.cards import CARDS_FILE, DatasetCard
from trustdyn.datasets.errors import DatasetError
from trustdyn.datasets.eval_material import (
    load_stereoset_dev,
    load_truthfulqa_mc,
    load_truthfulqa_test_questions,
)
from trustdyn.datasets.loading import _sha256_bytes


def _vendored_files() -> list[dict[str, Any]]:
    """Provenance of the vendored files that are not probe datasets."""
    data = paths.DATA_DIR
    return [
        {"path": "probe/truthfulqa_test.csv", "items": len(load_truthfulqa_test_questions()),
         "what": "held-out TruthfulQA questions (generation prompts, no answers)",
         "source": _REFERENCE + "truthfulqa_test.csv", "license": _REFERENCE_LICENSE,
         "sha256": _sha256_bytes(data / "probe/truthfulqa_test.csv")},
        {"path": "eval/truthfulqa_mc.json", "items": len(load_truthfulqa_mc()),
         "what": "BIG-bench truthful_qa multiple-choice task (questions)",
         "source": "BIG-bench (github.com/google/BIG-bench), bigbench/benchmark_tasks/truthful_qa",
         "license": "Apache-2.0 (BIG-bench) over TruthfulQA (Apache-2.0)",
         "sha256": _sha256_bytes(data / "eval/truthfulqa_mc.json")},
        {"path": "eval/stereoset_dev.jsonl", "items": len(load_stereoset_dev()),
         "what": "StereoSet dev set, inter- and intra-sentence items",
         "source": "StereoSet (github.com/moinnadeem/StereoSet), dev.json flattened",
         "license": "CC-BY-SA-4.0",
         "sha256": _sha256_bytes(data / "eval/stereoset_dev.jsonl")},
    ]


def cards_document() -> dict[str, Any]:
    """Return the content of ``data/probe/cards.json``, rebuilt from the vendored files."""
    return {
        "generated_by": "python -m trustdyn.datasets --write-cards",
        "cards": {name: card.to_dict() for name, card in builtin_cards().items()},
        "other_files": _vendored_files(),
    }


def read_cards(path: str | Path | None = None) -> dict[str, DatasetCard]:
    """Read the vendored ``cards.json`` into cards keyed by dataset name."""
    resolved = Path(path) if path is not None else paths.DATA_DIR / CARDS_FILE
    try:
        document = json.loads(resolved.read_text(encoding="utf-8"))
        return {name: DatasetCard.from_dict(card) for name, card in document["cards"].items()}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(f"{resolved}: unreadable dataset cards ({exc}); regenerate with "
                           "python -m trustdyn.datasets --write-cards") from None


def write_cards(path: str | Path | None = None) -> Path:
    """Regenerate ``cards.json`` from the vendored files and return its path."""
    resolved = Path(path) if path is not None else paths.DATA_DIR / CARDS_FILE
    text = json.dumps(cards_document(), indent=2, ensure_ascii=False) + "\n"
    resolved.write_text(text, encoding="utf-8")
    return resolved
