"""Revision selection: explicit names, step ranges, every k-th and log spacing, on any suite.

Pythia-160M's real revision table (log-spaced to step 512, then every 1000 steps) is the
case that motivated log spacing: ``every`` alone keeps none of its early checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trustdyn.suites import RevisionSelection, SuiteError, get_suite, select_revisions
from trustdyn.suites.base import CheckpointRef, Suite
from trustdyn.suites.selection import parse_revision_list, parse_step_range


def names(suite: Suite) -> list[str]:
    return [ref.name for ref in suite.checkpoints]


def pythia(**fields: Any) -> list[str]:
    return names(get_suite("pythia-160m", selection=RevisionSelection(**fields)))


def test_every_keeps_what_it_kept_before() -> None:
    assert names(get_suite("pythia-160m", every=60)) == [
        "step0", "step50000", "step110000", "step143000"]
    assert pythia(every=60) == names(get_suite("pythia-160m", every=60))


def test_log_spaced_on_pythia_keeps_early_steps_and_both_ends() -> None:
    assert pythia(log_spaced=10) == [
        "step0", "step2", "step16", "step64", "step256", "step1000", "step3000", "step10000",
        "step38000", "step143000"]


def test_log_spaced_within_a_step_range_is_geometric() -> None:
    # Targets 1000 x 3.46^k: 3460, 11960, 41360; Pythia has every 1000th step there.
    assert pythia(steps=(1000, 143_000), log_spaced=5) == [
        "step1000", "step3000", "step12000", "step41000", "step143000"]


def test_log_spaced_keeps_everything_when_asked_for_more_than_exists() -> None:
    assert pythia(steps=(0, 8), log_spaced=50) == ["step0", "step1", "step2", "step4", "step8"]


def test_step_range_is_inclusive_and_may_be_open_ended() -> None:
    assert pythia(steps=(0, 512)) == [f"step{s}" for s in (0, *(2 ** k for k in range(10)))]
    assert pythia(steps=parse_step_range("141000:")) == [
        "step141000", "step142000", "step143000"]
    assert pythia(steps=parse_step_range(":1"), every=2) == ["step0", "step1"]


def test_explicit_names_in_step_order_by_name_or_revision() -> None:
    suite = get_suite("amber", selection=RevisionSelection(revisions=("main", "ckpt_002")))
    assert names(suite) == ["ckpt_002", "ckpt_359"]


def test_unknown_revisions_are_all_named_with_close_matches() -> None:
    with pytest.raises(SuiteError) as caught:
        pythia(revisions=("step1000", "stpe2000", "latest"))
    message = str(caught.value)
    assert "no revision 'stpe2000' (did you mean step2000," in message
    assert "or 'latest'. It has 154, e.g. step0" in message
    assert "'step1000'" not in message


@pytest.mark.parametrize("fields, message", [
    ({"steps": (143_001, 200_000)}, r"No checkpoint .* has a step in 143001:200000 \(its "
                                    r"steps run from 0 to 143000\)"),
    ({"steps": (600, 900)}, "No checkpoint"),
])
def test_empty_selection_is_an_error(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(SuiteError, match=message):
        pythia(**fields)


def test_chat_model_is_kept_and_may_be_named() -> None:
    suite = get_suite("amber", selection=RevisionSelection(revisions=("ckpt_100", "AmberChat"),
                                                            log_spaced=2))
    assert names(suite) == ["ckpt_100"]
    assert suite.chat is not None and suite.chat.name == "AmberChat"
    assert [r.name for r in suite.all_refs()] == ["ckpt_100", "AmberChat"]
    with pytest.raises(SuiteError, match="keeps no pre-training checkpoint"):
        get_suite("amber", selection=RevisionSelection(revisions=("AmberChat",)))


def test_a_single_model_suite_keeps_its_model() -> None:
    # SmolLM2-Instruct style: one ref that is both the only checkpoint and the chat model.
    ref = CheckpointRef(suite="one", name="it", step=0, source="org/it", is_chat=True)
    suite = Suite(name="one", description="", checkpoints=(ref,), chat=ref)
    kept = select_revisions(suite, RevisionSelection(log_spaced=3))
    assert kept.all_refs() == (ref,)


def test_any_suite_kind_is_selected_the_same_way(tmp_path: Path) -> None:
    rows = "".join(f'[[checkpoints]]\nsource = "org/model"\nrevision = "r{step}"\n'
                   f"step = {step}\n\n" for step in (0, 10, 100, 1000, 10_000))
    file = tmp_path / "suite.toml"
    file.write_text(f'name = "mine"\n\n{rows}', encoding="utf-8")
    selection = RevisionSelection(steps=(10, 10_000), log_spaced=3)
    # The middle target is step ~331, nearer to 1000 than to 100 in log(1 + step).
    assert names(get_suite(str(file), selection=selection)) == ["r10", "r1000", "r10000"]
    assert names(get_suite(str(file), every=2)) == ["r0", "r100", "r10000"]


@pytest.mark.parametrize("fields, message", [
    ({"revisions": ()}, "No revisions selected"),
    ({"revisions": ["a"]}, "must be a tuple"),
    ({"revisions": ("a", " ")}, "non-empty names"),
    ({"revisions": ("a", "a")}, "names a more than once"),
    ({"steps": (5, 1)}, "0 <= first <= last, got 5:1"),
    ({"steps": (-1, 5)}, "0 <= first <= last"),
    ({"steps": (1,)}, r"\(first, last\) pair"),
    ({"every": 0}, "`every` must be an integer >= 1, got 0"),
    ({"every": True}, "`every` must be an integer"),
    ({"log_spaced": 1}, "`log_spaced` must be an integer >= 2"),
    ({"revisions": ("a",), "steps": (0, 1)}, "either revision names or a step range"),
    ({"every": 3, "log_spaced": 4}, "either every=3 or log_spaced=4"),
])
def test_invalid_selections_say_what_is_wrong(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(SuiteError, match=message):
        RevisionSelection(**fields)


def test_every_next_to_a_selection_is_refused() -> None:
    with pytest.raises(SuiteError, match="put it in the selection"):
        get_suite("pythia-160m", every=2, selection=RevisionSelection(log_spaced=3))


def test_flag_parsers() -> None:
    assert parse_revision_list("step1, step2,main") == ("step1", "step2", "main")
    assert parse_step_range("10:20") == (10, 20)
    assert parse_step_range(":20") == (0, 20)
    for bad in ("10", "a:b", "1:2:3"):
        with pytest.raises(SuiteError, match="--steps takes FIRST:LAST"):
            parse_step_range(bad)
    with pytest.raises(SuiteError, match="empty name"):
        parse_revision_list("a,,b")
