"""Opt-in timing: nothing without the variable, one line per block with it, sums per part."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from trustdyn.timing import TIMINGS_ENV, summarise_timings, timed


def test_without_the_variable_nothing_is_written(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TIMINGS_ENV, raising=False)
    with timed("extraction"):
        pass
    assert list(tmp_path.iterdir()) == []
    assert summarise_timings(tmp_path / "missing.jsonl") == {}


def test_blocks_append_lines_and_sum_per_part(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.jsonl"
    monkeypatch.setenv(TIMINGS_ENV, str(path))
    with timed("probe"):
        with timed("probe/fits"):
            time.sleep(0.02)
        with timed("probe/fits"):
            pass
    with pytest.raises(RuntimeError), timed("info"):  # a failing block is still timed
        raise RuntimeError("boom")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["part"] for r in lines] == ["probe/fits", "probe/fits", "probe", "info"]
    assert {r["pid"] for r in lines} == {lines[0]["pid"]}
    parts = summarise_timings(path)
    assert list(parts) == ["info", "probe", "probe/fits"]
    assert parts["probe/fits"].count == 2 and parts["probe"].count == 1
    assert parts["probe/fits"].wall_s == pytest.approx(lines[0]["wall_s"] + lines[1]["wall_s"])
    assert parts["probe"].wall_s >= parts["probe/fits"].wall_s >= 0.02
