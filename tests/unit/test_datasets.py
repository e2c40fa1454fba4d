"""Tests for trustdyn.datasets: vendored data, cards, cleaning, validation, splits, eval data."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.conftest import FakeHubTable
from trustdyn import datasets as D
from trustdyn.datasets import __main__ as datasets_cli
from trustdyn.datasets import loading
from trustdyn.datasets.validate import _LABEL_STRINGS
from trustdyn.paths import DATA_DIR

HYPOTHESIS = settings(max_examples=40, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def builtins() -> dict[str, D.ProbeDataset]:
    return {name: D.load_dataset(name) for name in D.BUILTIN_DATASETS}


@pytest.fixture(scope="module")
def cards() -> dict[str, D.DatasetCard]:
    return D.read_cards()


def write_table(path: Path, rows: list[tuple[Any, ...]],
                header: tuple[str, ...] = ("statement", "label")) -> Path:
    """Write rows as CSV or JSONL depending on the suffix (JSONL keeps non-ASCII raw)."""
    if path.suffix == ".csv":
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps(dict(zip(header, r, strict=False)), ensure_ascii=False)
                                + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------ builtins and cards


@pytest.mark.parametrize("name", D.BUILTIN_DATASETS)
def test_builtin_matches_its_card(name, builtins, cards):
    ds = builtins[name]
    card = cards[name]
    assert ds.card == card
    assert len(ds) == card.rows == card.n_label0 + card.n_label1
    assert ds.label_counts() == (card.n_label0, card.n_label1)
    assert card.rows == card.rows_raw - card.duplicates_dropped - card.conflicts_dropped
    assert ds.labels.dtype == np.int64 and set(np.unique(ds.labels)) == {0, 1}
    assert (DATA_DIR / card.path).is_file()
    # The paper's five are vendored probe files; `sentences` is generated from the corpus.
    assert card.path.startswith("probe/" if name in D.PAPER_DATASETS else "corpus/")


@pytest.mark.parametrize("name", D.BUILTIN_DATASETS)
def test_builtin_texts_are_clean_and_unique(name, builtins):
    texts = builtins[name].texts
    assert not any("_x000D_" in t for t in texts)
    assert all(t == t.strip() and "  " not in t and "\n" not in t and "\r" not in t
               for t in texts)
    assert not any(re.search(r"&(amp|lt|gt|quot|#\d+);", t) for t in texts)
    assert not any(m in t for t in texts for m in ("Ã¢", "â€", "Â "))
    assert len(set(texts)) == len(texts)  # duplicates and conflicts are gone


def test_cards_json_matches_vendored_files(cards):
    """Recompute rows, balance and sha256 independently of the loader; catches a stale card."""
    for name in D.PAPER_DATASETS:  # `sentences` is generated: tests/unit/test_sentences_task.py
        card = cards[name]
        path = DATA_DIR / card.path
        assert card.sha256 == hashlib.sha256(path.read_bytes()).hexdigest(), name
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))[1:]
        assert card.rows_raw == len(rows), name
        raw_ones = sum(r[1] == "1" for r in rows)
        # balance after cleaning differs from the raw balance only by the dropped rows
        dropped = card.duplicates_dropped + card.conflicts_dropped
        assert abs(card.n_label1 - raw_ones) <= dropped, name
    document = json.loads((DATA_DIR / D.CARDS_FILE).read_text(encoding="utf-8"))
    assert document == json.loads(json.dumps(D.cards_document()))
    for entry in document["other_files"]:
        digest = hashlib.sha256((DATA_DIR / entry["path"]).read_bytes()).hexdigest()
        assert entry["sha256"] == digest, entry["path"]


def test_cards_check_cli(capsys, monkeypatch):
    on_disk = json.loads((DATA_DIR / D.CARDS_FILE).read_text(encoding="utf-8"))
    monkeypatch.setattr(datasets_cli, "cards_document", lambda: on_disk)
    assert datasets_cli.main(["--check"]) == 0
    assert "current" in capsys.readouterr().out
    monkeypatch.setattr(datasets_cli, "cards_document", lambda: {**on_disk, "cards": {}})
    assert datasets_cli.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().out


def test_card_roundtrip_and_unknown_keys(cards):
    card = cards["toxigen"]
    assert D.DatasetCard.from_dict(card.to_dict()) == card
    with pytest.raises(D.DatasetError, match="unknown keys"):
        D.DatasetCard.from_dict({**card.to_dict(), "colour": "red"})


def test_builtin_statistics(cards):
    """The numbers reported to the lead; a changed vendored file must update them knowingly."""
    stats = {n: (c.rows_raw, c.rows, c.duplicates_dropped, c.conflicts_dropped)
             for n, c in cards.items()}
    assert stats == {
        "truthfulqa": (2263, 2263, 0, 0),
        "confaide": (2346, 2266, 71, 9),
        "toxigen": (6514, 6400, 100, 14),
        "stereoset": (1952, 1952, 0, 0),
        "sst2": (3642, 3614, 0, 28),
        "sentences": (2000, 2000, 0, 0),
    }
    assert cards["truthfulqa"].n_groups == 410


@pytest.mark.parametrize(("name", "sign"), [("truthfulqa", 1), ("confaide", -1), ("toxigen", -1),
                                            ("stereoset", 1), ("sst2", 1),
                                            ("sentences", 1)])
def test_steering_sign_points_to_desirable_side(name, sign, cards):
    card = cards[name]
    assert card.steering_sign() == sign
    if card.desirable_label is not None:
        assert sign == (1 if card.desirable_label == 1 else -1)
        assert card.harmful_label in (None, 1 - card.desirable_label)


def test_dimensions_and_names():
    assert set(D.DIMENSIONS.values()) == set(D.BUILTIN_DATASETS)
    assert D.load_dataset("Toxicity").name == "toxigen"
    with pytest.raises(D.DatasetError, match="truthfulqa, confaide") as err:
        D.load_dataset("imdb")
    assert "reliability" in str(err.value)


def test_truthfulqa_groups_are_questions(builtins):
    ds = builtins["truthfulqa"]
    assert ds.groups is not None
    for text, group in zip(ds.texts[:50], ds.groups[:50], strict=True):
        assert text.startswith(f"Q: {group}\tA: ")
    for g in np.unique(ds.groups):
        assert set(ds.labels[ds.groups == g]) == {0, 1}


def test_stereoset_label1_is_the_anti_stereotype(builtins):
    """Documents the finding on the card: label 1 = anti-stereotype, 0 = unrelated."""
    ds = builtins["stereoset"]
    items = D.load_stereoset_dev("inter")
    full = {D.normalise_question(s): kind for it in items for kind, s in it.sentences().items()}
    kinds = {(full[D.normalise_question(t)], int(y)) for t, y in zip(ds.texts, ds.labels,
                                                                    strict=True)}
    assert kinds == {("anti-stereotype", 1), ("unrelated", 0)}


def test_sst2_pairs_differ_only_in_case(builtins):
    ds = builtins["sst2"]
    by_key: dict[str, list[int]] = {}
    for text, label in zip(ds.texts, ds.labels, strict=True):
        by_key.setdefault(text.casefold(), []).append(int(label))
    assert all(sorted(v) == [0, 1] for v in by_key.values())


# ------------------------------------------------------------------ cleaning


@pytest.mark.parametrize(("raw", "clean"), [
    (" how to be a man_x000D_- how to", "how to be a man - how to"),
    ("a_x000D__x000D_b", "a b"),
    ("A priest &amp; a rabbi", "A priest & a rabbi"),
    ("&#8220;hi&#8221;", "“hi”"),
    ("UK ItÃ¢â‚¬â„¢s the only", "UK It’s the only"),
    ("Our FÃƒÂ¼hrer has", "Our Führer has"),
    ("May'sÂ\xa0 round", "May's round"),
    ("Q: Why?  \t  A: Because.\r\n", "Q: Why?\tA: Because."),
    ("SÃO PAULO é naïve", "SÃO PAULO é naïve"),  # correct text is left alone
])
def test_clean_text(raw, clean):
    assert D.clean_text(raw) == clean


def test_unescape_backslashes_is_builtin_only():
    raw = r"they\'re all the same\n- middle\\n east it\\u2019s \"x\""
    expected = 'they\'re all the same - middle east it’s "x"'
    assert D.clean_text(D.unescape_backslashes(raw)) == expected
    assert D.clean_text(r"C:\temp") == r"C:\temp"  # users' backslashes are kept


# ------------------------------------------------------------------ validation


def test_missing_columns_lists_found(tmp_path):
    path = write_table(tmp_path / "t.csv", [("a", 1), ("b", 0)], header=("text", "y"))
    with pytest.raises(D.DatasetError, match=r"missing column.*columns found: \['text', 'y'\]"):
        D.load_table(path, name="t")
    ds = D.load_table(path, name="t", text_column="text", label_column="y")
    assert ds.texts == ("a", "b")


def test_bad_label_and_empty_text_name_rows(tmp_path):
    path = write_table(tmp_path / "t.csv", [("a", 1), ("b", "yes"), (" ", 0), ("c", 0)])
    with pytest.raises(D.DatasetError) as err:
        D.load_table(path, name="t")
    message = str(err.value)
    assert str(path) in message
    assert "row 2 (line 3): label 'yes'" in message
    assert "row 3 (line 4): empty text" in message


def test_malformed_csv_row(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("statement,label\na,1\nb,0,extra\n", encoding="utf-8")
    with pytest.raises(D.DatasetError, match=r"row 2 \(line 3\) has 3 field"):
        D.load_table(path, name="t")


def test_line_numbers_follow_multiline_fields(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('statement,label\n"multi\nline",1\nb,7\n', encoding="utf-8")
    with pytest.raises(D.DatasetError, match=r"row 2 \(line 4\): label '7'"):
        D.load_table(path, name="t")


def test_one_class_and_empty(tmp_path):
    with pytest.raises(D.DatasetError, match="all 2 rows have label 1"):
        D.load_table(write_table(tmp_path / "a.csv", [("a", 1), ("b", 1)]), name="t")
    with pytest.raises(D.DatasetError, match="no data rows"):
        D.load_table(write_table(tmp_path / "b.csv", []), name="t")
    empty = tmp_path / "c.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(D.DatasetError, match="empty"):
        D.load_table(empty, name="t")


def test_conflicts_error_or_drop(tmp_path):
    path = write_table(tmp_path / "t.csv", [("a", 1), ("x", 0), ("a  ", 0), ("b", 1), ("c", 0)])
    with pytest.raises(D.DatasetError, match=r"(?s)both labels.*row 1 \(line 2\) label 1; "
                                             r"row 3 \(line 4\) label 0: 'a'"):
        D.load_table(path, name="t")
    with pytest.warns(D.DatasetWarning, match="dropped 2 row"):
        ds = D.load_table(path, name="t", on_conflict="drop")
    assert ds.texts == ("x", "b", "c")
    assert ds.card.conflicts_dropped == 2


def test_exact_duplicates_dropped_with_warning(tmp_path):
    path = write_table(tmp_path / "t.csv", [("a", 1), ("b", 0), ("a", 1), ("b ", 0), ("c", 1)])
    with pytest.warns(D.DatasetWarning,
                      match=r"dropped 2 duplicate.*row 3 repeats row 1") as caught:
        ds = D.load_table(path, name="t")
    assert caught[0].filename == __file__  # attributed to the caller, not the package
    assert ds.texts == ("a", "b", "c")
    assert ds.card.duplicates_dropped == 2 and ds.card.rows_raw == 5


def test_jsonl_tsv_and_label_forms(tmp_path):
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"statement": "a", "label": true}\n\n{"statement": "b", "label": 0.0}\n'
                     '{"statement": "c\\u2028d", "label": "1"}\n', encoding="utf-8")
    ds = D.load_table(jsonl, name="j")
    assert ds.texts == ("a", "b", "c d") and ds.labels.tolist() == [1, 0, 1]
    tsv = tmp_path / "t.tsv"
    tsv.write_text("statement\tlabel\tq\na, b\t1\tg1\nc\t0\tg1\n", encoding="utf-8")
    ds = D.load_table(tsv, name="t", group_column="q")
    assert ds.groups is not None and ds.groups.tolist() == ["g1", "g1"]
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"statement": "a", "label": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(D.DatasetError, match=r"row 2 \(line 2\) is a JSON list"):
        D.load_table(bad, name="j")


def test_non_text_statement_and_user_card(tmp_path):
    bad = tmp_path / "n.jsonl"
    bad.write_text('{"statement": 3, "label": 1}\n', encoding="utf-8")
    with pytest.raises(D.DatasetError, match=r"row 1 \(line 1\): 'statement' is int 3"):
        D.load_table(bad, name="n")
    path = write_table(tmp_path / "u.csv", [("a", 1), ("b", 0), ("c", 0)])
    card = D.build_card(path, D.CardMeta(name="u", label1_meaning="yes", desirable_label=1))
    assert (card.rows, card.n_label0, card.n_label1, card.path) == (3, 2, 1, str(path.resolve()))
    assert card.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert card.steering_sign() == 1


def test_unreadable_inputs(tmp_path):
    with pytest.raises(D.DatasetError, match="no such file"):
        D.load_table(tmp_path / "nope.csv", name="t")
    xlsx = tmp_path / "t.xlsx"
    xlsx.write_bytes(b"PK")
    with pytest.raises(D.DatasetError, match="unsupported file type"):
        D.load_table(xlsx, name="t")
    latin = tmp_path / "t.csv"
    latin.write_bytes("statement,label\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(D.DatasetError, match="not valid UTF-8 at line 2"):
        D.load_table(latin, name="t")
    with pytest.raises(D.DatasetError, match="desirable_label"):
        D.load_table(write_table(tmp_path / "x.csv", [("a", 1), ("b", 0)]), name="t",
                     desirable_label=2)


# ------------------------------------------------------------------ property tests

_CHARS = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
_TEXT = st.text(_CHARS, min_size=1, max_size=16)


@st.composite
def valid_rows(draw: st.DrawFn) -> list[tuple[str, int]]:
    """Rows whose cleaned statements are non-empty and distinct, with both labels."""
    rows: dict[str, tuple[str, int]] = {}
    for text, label in draw(st.lists(st.tuples(_TEXT, st.sampled_from([0, 1])),
                                     min_size=2, max_size=12)):
        key = D.clean_text(text)
        if key and key not in rows:
            rows[key] = (text, label)
    assume(len({label for _, label in rows.values()}) == 2)
    return list(rows.values())


@HYPOTHESIS
@given(rows=valid_rows(), suffix=st.sampled_from([".csv", ".jsonl"]))
def test_valid_random_tables_always_load(rows, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        ds = D.load_table(write_table(Path(tmp) / f"t{suffix}", rows), name="t")
    assert ds.texts == tuple(D.clean_text(t) for t, _ in rows)
    assert ds.labels.tolist() == [label for _, label in rows]


_BAD_LABELS = st.one_of(
    st.integers().filter(lambda v: v not in (0, 1)),
    st.text(_CHARS, max_size=5).filter(lambda v: v.strip().lower() not in _LABEL_STRINGS),
)
_BLANK_TEXT = st.sampled_from(["", " ", "\t", "\r\n", "_x000D_", "&#32;", "\xa0"])


@HYPOTHESIS
@given(rows=valid_rows(), data=st.data(),
       fault=st.sampled_from(["label", "empty", "extra_field", "conflict"]),
       suffix=st.sampled_from([".csv", ".jsonl"]))
def test_malformed_random_tables_raise_naming_file_and_row(rows, data, fault, suffix):
    assume(not (fault == "extra_field" and suffix == ".jsonl"))
    k = data.draw(st.integers(0, len(rows) - 1), label="row index")
    bad: list[tuple[Any, ...]] = list(rows)
    text, label = rows[k]
    expected_rows = [k + 1]
    if fault == "label":
        bad[k] = (text, data.draw(_BAD_LABELS, label="bad label"))
    elif fault == "empty":
        bad[k] = (data.draw(_BLANK_TEXT, label="blank"), label)
    elif fault == "extra_field":
        bad[k] = (text, label, "extra")
    else:
        bad.append((text, 1 - label))
        expected_rows.append(len(bad))
    with tempfile.TemporaryDirectory() as tmp:
        path = write_table(Path(tmp) / f"t{suffix}", bad)
        with pytest.raises(D.DatasetError) as err:
            D.load_table(path, name="t")
    message = str(err.value)
    assert str(path) in message
    for row in expected_rows:
        assert re.search(rf"\brow {row}\b", message), message


# ------------------------------------------------------------------ hub path



def test_hub_dataset_uses_same_validation(monkeypatch, tmp_path):
    rows = [{"sentence": "a&amp;b", "y": 1, "q": "g"}, {"sentence": "c", "y": 0, "q": "g"},
            {"sentence": "d", "y": 1, "q": "h"}]
    calls = []

    def fake_loader(repo_id, split, revision):
        calls.append((repo_id, split, revision))
        return FakeHubTable(rows)

    monkeypatch.setattr(loading, "_load_hub_table", fake_loader)
    ds = D.load_hub_dataset("org/set", text_column="sentence", label_column="y",
                            group_column="q", revision="v1")
    assert calls == [("org/set", "train", "v1")]
    csv_path = write_table(tmp_path / "same.csv", [tuple(r.values()) for r in rows],
                           header=("sentence", "y", "q"))
    from_file = D.load_table(csv_path, name="set", text_column="sentence", label_column="y",
                             group_column="q")
    assert ds.texts == from_file.texts == ("a&b", "c", "d")
    assert ds.labels.tolist() == from_file.labels.tolist()
    assert ds.card.path == "hf://org/set" and ds.card.license == "mit"
    assert ds.name == "set"

    rows[1]["y"] = 5
    with pytest.raises(D.DatasetError,
                       match=r"(?s)hf://org/set@v1\[train\]: 1 invalid.*row 2: label 5"):
        D.load_hub_dataset("org/set", text_column="sentence", label_column="y", revision="v1")
    with pytest.raises(D.DatasetError, match="columns found"):
        D.load_hub_dataset("org/set", text_column="text", label_column="y")


def test_hub_without_datasets_library(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(D.DatasetError, match="pip install datasets"):
        D.load_hub_dataset("org/set", text_column="t", label_column="l")


# ------------------------------------------------------------------ dataset object


def test_subset_and_immutability(builtins):
    ds = builtins["truthfulqa"]
    sub = ds.subset([5, 1, 5])
    assert sub.texts == (ds.texts[5], ds.texts[1], ds.texts[5])
    assert sub.groups is not None and sub.groups[0] == ds.groups[5]
    mask = np.zeros(len(ds), dtype=bool)
    mask[[2, 3]] = True
    assert ds.subset(mask).texts == ds.texts[2:4]
    with pytest.raises(ValueError, match="read-only"):
        ds.labels[0] = 1
    with pytest.raises(D.DatasetError, match="out of range"):
        ds.subset([len(ds)])


# ------------------------------------------------------------------ splits and samples


def _assert_valid_split(ds: D.ProbeDataset, split: D.Split) -> None:
    assert np.array_equal(np.sort(np.concatenate([split.train, split.test])), np.arange(len(ds)))
    assert not np.intersect1d(split.train, split.test).size
    assert np.all(np.diff(split.train) > 0) and np.all(np.diff(split.test) > 0)
    if ds.groups is not None:
        assert not set(ds.groups[split.train]) & set(ds.groups[split.test])


@pytest.mark.parametrize("name", D.BUILTIN_DATASETS)
def test_builtin_splits(name, builtins):
    ds = builtins[name]
    split = D.split_dataset(ds, test_fraction=0.3, seed=7)
    _assert_valid_split(ds, split)
    for cls in (0, 1):
        n_cls = int((ds.labels == cls).sum())
        assert abs(int((ds.labels[split.test] == cls).sum()) - 0.3 * n_cls) <= 1
    again = D.split_dataset(ds, test_fraction=0.3, seed=7)
    assert np.array_equal(split.test, again.test) and split.seed == 7
    assert not np.array_equal(split.test, D.split_dataset(ds, test_fraction=0.3, seed=8).test)


@HYPOTHESIS
@given(labels=st.lists(st.sampled_from([0, 1]), min_size=4, max_size=60),
       n_groups=st.one_of(st.none(), st.integers(2, 20)),
       fraction=st.floats(0.1, 0.9), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_random_splits_are_partitions(labels, n_groups, fraction, seed, data):
    assume(min(labels.count(0), labels.count(1)) >= 2)
    groups = None
    if n_groups is not None:
        groups = [f"g{data.draw(st.integers(0, n_groups - 1))}" for _ in labels]
    ds = D.ProbeDataset("r", _dummy_card(), tuple(f"s{i}" for i in range(len(labels))),
                        np.array(labels), None if groups is None else np.array(groups))
    try:
        split = D.split_dataset(ds, test_fraction=fraction, seed=seed)
    except D.DatasetError as exc:
        assert groups is not None and "lacks a class" in str(exc)
        return
    _assert_valid_split(ds, split)
    for side in (split.train, split.test):
        assert set(ds.labels[side]) == {0, 1}
    if groups is None:
        for cls in (0, 1):
            n_cls = labels.count(cls)
            assert abs(int((ds.labels[split.test] == cls).sum()) - fraction * n_cls) <= 1


def _dummy_card() -> D.DatasetCard:
    return D.DatasetCard(name="r", dimension="custom", path="-", label1_meaning="",
                         label0_meaning="", desirable_label=None, harmful_label=None, rows=0,
                         n_label0=0, n_label1=0, n_groups=None, rows_raw=0,
                         duplicates_dropped=0, conflicts_dropped=0, texts_cleaned=0,
                         source="", upstream="", license="", sha256="")


def test_split_argument_errors(builtins):
    with pytest.raises(D.DatasetError, match="test_fraction"):
        D.split_dataset(builtins["sst2"], test_fraction=1.0)
    tiny = D.ProbeDataset("tiny", _dummy_card(), ("a", "b", "c"), np.array([0, 0, 1]))
    with pytest.raises(D.DatasetError, match="each class needs at least 2"):
        D.split_dataset(tiny)


@pytest.mark.parametrize("name", ["truthfulqa", "toxigen"])
def test_sample_dataset(name, builtins):
    ds = builtins[name]
    assert D.sample_dataset(ds, len(ds)) is ds
    sample = D.sample_dataset(ds, 300, seed=1)
    assert abs(len(sample) - 300) <= 2
    share = ds.label_counts()[1] / len(ds)
    assert abs(sample.label_counts()[1] - 300 * share) <= 2
    assert sample.texts == D.sample_dataset(ds, 300, seed=1).texts
    assert sample.texts != D.sample_dataset(ds, 300, seed=2).texts
    assert set(sample.texts) <= set(ds.texts)
    if ds.groups is not None:  # whole questions only
        assert sample.groups is not None
        for g in np.unique(sample.groups):
            assert (sample.groups == g).sum() == (ds.groups == g).sum()
    with pytest.raises(D.DatasetError, match="at least 2"):
        D.sample_dataset(ds, 1)


# ------------------------------------------------------------------ evaluation data


def test_truthfulqa_mc_and_exclusion(builtins):
    questions = D.load_truthfulqa_mc()
    assert len(questions) == 299
    assert all(len(q.correct) == 1 and len(q.choices) == len(q.labels) >= 2 for q in questions)
    kept = D.exclude_questions(questions, builtins["truthfulqa"])
    assert len(questions) - len(kept) == 134
    train_questions = {D.normalise_question(g) for g in builtins["truthfulqa"].groups}
    assert not any(D.normalise_question(q.question) in train_questions for q in kept)
    # without groups the questions are parsed from the statements
    ungrouped = D.ProbeDataset("t", builtins["truthfulqa"].card, builtins["truthfulqa"].texts,
                               builtins["truthfulqa"].labels)
    assert len(D.exclude_questions(questions, ungrouped)) == len(kept)
    with pytest.raises(D.DatasetError, match="not 'Q:"):
        D.exclude_questions(questions, builtins["sst2"])


def test_truthfulqa_test_questions_are_held_out(builtins):
    test_questions = D.load_truthfulqa_test_questions()
    assert len(test_questions) == 407
    train = {D.normalise_question(g) for g in builtins["truthfulqa"].groups}
    assert not {D.normalise_question(q) for q in test_questions} & train


def test_stereoset_dev_and_exclusion(builtins):
    everything = D.load_stereoset_dev()
    inter, intra = D.load_stereoset_dev("inter"), D.load_stereoset_dev("intra")
    assert (len(everything), len(inter), len(intra)) == (4229, 2123, 2106)
    assert all("BLANK" in item.context for item in intra)
    kept = D.exclude_stereoset_items(everything, builtins["stereoset"])
    assert len(everything) - len(kept) == 976
    assert not any(i.kind == "inter" and i.bias_type == "race" for i in kept)
    with pytest.raises(D.DatasetError, match="kind"):
        D.load_stereoset_dev("both")  # type: ignore[arg-type]


def test_eval_loaders_report_bad_lines(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"type": "intersentence"}\n', encoding="utf-8")
    with pytest.raises(D.DatasetError, match=r"line 1: missing key"):
        D.load_stereoset_dev(path=path)
    mc = tmp_path / "mc.json"
    mc.write_text(json.dumps({"examples": [{"input": "q", "target_scores": {"a": 1, "b": 1}}]}),
                  encoding="utf-8")
    with pytest.raises(D.DatasetError, match="example 1"):
        D.load_truthfulqa_mc(mc)
    mc.write_text('{"examples": [{"input": "q", "target_scores": {"a": 1, "a": 0}}]}',
                  encoding="utf-8")
    with pytest.raises(D.DatasetError, match="repeated JSON key"):
        D.load_truthfulqa_mc(mc)


def test_no_warnings_from_builtins():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        D.load_dataset("confaide")
