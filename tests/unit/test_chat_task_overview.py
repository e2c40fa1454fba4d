"""The chat task on the Overview: reading the stored result back from the checkpoints table,
its verdict against the majority baseline, and the page showing it (AppTest on a synthetic
study whose chat row is given a task result)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from trustdyn.dashboard import study
from trustdyn.dashboard.chat_task import ChatTaskResult, chat_task_result
from trustdyn.paths import REPO_ROOT
from trustdyn.store import Store
from trustdyn.testing.synthetic import write_synthetic_study

STORED = {"task_name": "real or shuffled sentence", "task_description": "Is it real?",
          "task_accuracy": 0.81, "task_accuracy_ci": [0.77, 0.85],
          "majority_baseline": 0.5, "task_n": 400}


def _checkpoints(extra: object) -> pd.DataFrame:
    return pd.DataFrame({"checkpoint": ["step-1", "chat"], "is_chat": [False, True],
                         "extra": [json.dumps({"x": 1}), extra]})


@pytest.mark.parametrize("extra", [json.dumps(STORED), STORED])
def test_result_is_read_from_the_chat_row(extra: object) -> None:
    result = chat_task_result(_checkpoints(extra))
    assert result == ChatTaskResult("real or shuffled sentence", "Is it real?", 0.81, 0.77,
                                    0.85, 0.5, 400)
    assert result.beats_majority
    assert result.verdict().startswith("Answers better than always saying the majority")


@pytest.mark.parametrize("extra", [
    None, "{}", json.dumps({"synthetic": True}),
    json.dumps({**STORED, "task_accuracy_ci": [0.7]}),
    json.dumps({**STORED, "task_accuracy": None}),
    json.dumps({**STORED, "majority_baseline": float("nan")}),
])
def test_missing_or_broken_results_give_none(extra: object) -> None:
    assert chat_task_result(_checkpoints(extra)) is None
    assert chat_task_result(_checkpoints(extra).iloc[:1]) is None


def test_verdict_says_when_the_interval_reaches_or_misses_the_baseline() -> None:
    reaching = ChatTaskResult("t", "", 0.55, 0.49, 0.61, 0.5, 200)
    assert not reaching.beats_majority
    assert reaching.verdict().startswith("Does not answer better")
    below = ChatTaskResult("t", "", 0.40, 0.35, 0.45, 0.629, 200)
    assert not below.beats_majority and below.verdict().startswith("Answers worse")
    at_baseline = ChatTaskResult("t", "", 0.6, 0.5, 0.7, 0.5, 200)
    assert not at_baseline.beats_majority


@pytest.fixture
def task_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A synthetic study whose chat checkpoint stores a chat task result."""
    path = tmp_path / "study.duckdb"
    store = write_synthetic_study(path, n_checkpoints=3, n_layers=3, hidden_size=32, seed=0)
    suite = store.query("SELECT * FROM suites WHERE suite = 'synthetic'").iloc[0]
    ckpts = store.checkpoints("synthetic")
    ckpts["extra"] = [STORED if chat else {} for chat in ckpts["is_chat"]]
    store.put_suite("synthetic", description=suite["description"],
                    chat_checkpoint=suite["chat_checkpoint"],
                    config=json.loads(suite["config"] or "{}"), checkpoints=ckpts)
    monkeypatch.setenv(study.STUDY_ENV, str(path))
    monkeypatch.setenv("TRUSTDYN_HOME", str(tmp_path / "home"))
    return path


def test_overview_shows_accuracy_interval_baseline_and_verdict(task_study: Path) -> None:
    assert chat_task_result(Store(task_study).checkpoints("synthetic")) is not None
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception
    assert any("chat model's task" in str(s.value) for s in at.subheader)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Held-out accuracy"] == "0.810"
    assert metrics["95% interval"] == "0.770 – 0.850"
    assert metrics["Majority baseline"] == "0.500"
    assert any("better than always saying the majority answer" in str(s.value)
               for s in at.success)
