"""Command line: ``python -m trustdyn.datasets [--write-cards | --check]``.

Without options it prints the builtin datasets' statistics and the evaluation overlaps;
``--write-cards`` regenerates ``data/probe/cards.json`` and ``--check`` exits 1 if it is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from trustdyn import paths
from trustdyn.datasets.builtins import builtin_cards, load_dataset
from trustdyn.datasets.cards import CARDS_FILE
from trustdyn.datasets.cards_json import cards_document, write_cards
from trustdyn.datasets.errors import DatasetError
from trustdyn.datasets.eval_material import (
    exclude_questions,
    exclude_stereoset_items,
    load_stereoset_dev,
    load_truthfulqa_mc,
)


def _summary() -> str:
    lines = [f"{'dataset':<11}{'dimension':<12}{'raw':>6}{'rows':>6}{'label0':>7}{'label1':>7}"
             f"{'dups':>6}{'confl':>6}{'cleaned':>8}{'groups':>7}"]
    for card in builtin_cards().values():
        lines.append(f"{card.name:<11}{card.dimension:<12}{card.rows_raw:>6}{card.rows:>6}"
                     f"{card.n_label0:>7}{card.n_label1:>7}{card.duplicates_dropped:>6}"
                     f"{card.conflicts_dropped:>6}{card.texts_cleaned:>8}"
                     f"{card.n_groups if card.n_groups is not None else '-':>7}")
    truthfulqa = load_dataset("truthfulqa")
    mc = load_truthfulqa_mc()
    stereo = load_stereoset_dev("all")
    lines.append(f"truthfulqa_mc: {len(mc)} questions, "
                 f"{len(mc) - len(exclude_questions(mc, truthfulqa))} overlap truthfulqa_train")
    lines.append(f"stereoset_dev: {len(stereo)} items, "
                 f"{len(stereo) - len(exclude_stereoset_items(stereo, load_dataset('stereoset')))}"
                 " overlap the stereoset probe data")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print dataset statistics, or write/check ``data/probe/cards.json``."""
    parser = argparse.ArgumentParser(prog="python -m trustdyn.datasets", description=main.__doc__)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write-cards", action="store_true", help="regenerate cards.json")
    action.add_argument("--check", action="store_true",
                        help="exit 1 if cards.json differs from the vendored files")
    args = parser.parse_args(argv)
    try:
        if args.write_cards:
            print(f"wrote {write_cards()}")
        elif args.check:
            current = json.loads((paths.DATA_DIR / CARDS_FILE).read_text(encoding="utf-8"))
            if current != json.loads(json.dumps(cards_document())):
                print("cards.json is stale: run python -m trustdyn.datasets --write-cards")
                return 1
            print("cards.json is current")
        else:
            print(_summary())
    except (DatasetError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
