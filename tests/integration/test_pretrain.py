"""End-to-end runs of the ``smoke`` preset: determinism, resumption, loading, the CLI.

One uninterrupted run (shared by the tests of this module) is compared with a run that
is interrupted after a checkpoint and resumed: every checkpoint and the chat model must
have the same weight hashes, which checks determinism and exact resumption together.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from precompute import pretrain as pretrain_cli
from trustdyn.provenance import hash_state_dict
from trustdyn.suites.base import CheckpointRef, Suite, SuiteError
from trustdyn.suites.builtin import PRESETS, load_suite, pretrain, suite_dir
from trustdyn.suites.builtin_chat import task_count
from trustdyn.suites.builtin_task import TASK_DESCRIPTION, TASK_NAME, load_heldout_items

pytestmark = pytest.mark.integration

SMOKE = PRESETS["smoke"]


class InterruptedRunError(RuntimeError):
    """Stands in for a kill right after a checkpoint was saved."""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:
        home = tmp_path_factory.mktemp("home")
        patch.setenv("TRUSTDYN_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def finished(home: Path) -> tuple[Suite, Path]:
    root = home / "a"
    return pretrain("smoke", root=root, progress=False), root


def _hashes(suite: Suite) -> list[tuple[str, str | None]]:
    return [(ref.name, ref.weight_hash) for ref in suite.all_refs()]


def test_suite_has_every_scheduled_checkpoint_and_a_chat_model(finished):
    suite, root = finished
    assert suite.name == "builtin-smoke"
    assert [ref.step for ref in suite.checkpoints] == list(SMOKE.checkpoints)
    for ref in suite.checkpoints:
        assert ref.tokens == ref.step * SMOKE.batch_size * SMOKE.seq_len
        assert ref.revision is None and not ref.is_chat
        assert ref.extra["preset"] == "smoke" and ref.extra["seed"] == 0
        assert ref.train_loss is not None and ref.heldout_loss is not None
        assert Path(ref.source) == suite_dir("smoke", root) / ref.name
    assert suite.duplicates() == []
    chat = suite.chat
    assert chat is not None and chat.is_chat and chat.step == SMOKE.steps
    extra = chat.extra
    for key in ("task_accuracy", "majority_baseline", "task_accuracy_base",
                "task_predicted_yes_rate"):
        assert 0.0 <= extra[key] <= 1.0
    low, high = extra["task_accuracy_ci"]
    assert 0.0 <= low <= extra["task_accuracy"] <= high <= 1.0 and low < high
    items = load_heldout_items("smoke")
    assert extra["task_n"] == len(items) >= 20
    yes_share = float(np.mean([i.answer for i in items]))
    assert extra["majority_baseline"] == pytest.approx(max(yes_share, 1 - yes_share))
    assert extra["task_name"] == TASK_NAME and extra["task_description"] == TASK_DESCRIPTION
    assert extra["sft_task_items"] == task_count(SMOKE.chat_steps * SMOKE.chat_batch_size)
    assert not (suite_dir("smoke", root) / "resume").exists()


def test_heldout_loss_falls(finished):
    suite, _ = finished
    first, last = suite.checkpoints[0].heldout_loss, suite.checkpoints[-1].heldout_loss
    assert last < first - 0.3


def test_checkpoints_load_with_from_pretrained_and_match_their_hash(finished):
    suite, _ = finished
    for ref in (suite.checkpoints[0], suite.checkpoints[-1], suite.chat):
        assert isinstance(ref, CheckpointRef)
        model = LlamaForCausalLM.from_pretrained(ref.source)
        assert hash_state_dict(model.state_dict()) == ref.weight_hash
        tokenizer = PreTrainedTokenizerFast.from_pretrained(ref.source)
        assert tokenizer.chat_template and tokenizer.padding_side == "left"
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Is it?"}],
                                               add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)
        with torch.no_grad():
            logits = model(**prompt).logits
        assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all()


def test_load_suite_reads_the_manifest(finished):
    suite, root = finished
    assert load_suite("smoke", root=root) == suite
    manifest = json.loads((suite_dir("smoke", root) / "manifest.json").read_text())
    assert manifest["complete"] and manifest["preset"]["name"] == "smoke"
    assert len(manifest["checkpoints"]) == len(SMOKE.checkpoints)


def test_rerun_of_a_finished_run_is_a_no_op(finished):
    suite, root = finished
    folder = suite_dir("smoke", root)
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    calls: list[CheckpointRef] = []
    assert pretrain("smoke", root=root, progress=False, on_checkpoint=calls.append) == suite
    assert calls == []
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before


def test_other_seed_in_same_folder_is_refused(finished):
    _, root = finished
    with pytest.raises(SuiteError, match="different settings"):
        pretrain("smoke", seed=1, root=root, progress=False)


def test_interrupted_run_resumes_to_identical_weights(finished, home):
    suite, _ = finished
    root = home / "b"
    stop_after = SMOKE.checkpoints[3]
    seen: list[int] = []

    def interrupt(ref: CheckpointRef) -> None:
        seen.append(ref.step)
        if ref.step == stop_after:
            raise InterruptedRunError(ref.name)

    with pytest.raises(InterruptedRunError):
        pretrain("smoke", root=root, progress=False, on_checkpoint=interrupt)
    assert seen == list(SMOKE.checkpoints[:4])
    with pytest.raises(SuiteError, match="unfinished"):
        load_suite("smoke", root=root)
    assert (suite_dir("smoke", root) / "resume" / "trainer_state.pt").is_file()

    redone: list[CheckpointRef] = []
    resumed = pretrain("smoke", root=root, progress=False, on_checkpoint=redone.append)
    # Saved checkpoints are not redone; the rest of the schedule is.
    assert [ref.step for ref in redone] == list(SMOKE.checkpoints[4:])
    assert _hashes(resumed) == _hashes(suite)
    assert [r.heldout_loss for r in resumed.checkpoints] == [
        r.heldout_loss for r in suite.checkpoints]
    assert resumed.chat is not None and suite.chat is not None
    for key in ("task_accuracy", "task_accuracy_ci"):
        assert resumed.chat.extra[key] == suite.chat.extra[key]


def test_cli_prints_the_summary_table(finished, capsys):
    _, root = finished
    parser = argparse.ArgumentParser()
    pretrain_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["pretrain", "--preset", "smoke", "--root", str(root), "--quiet"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "held-out" in out and "task accuracy" in out and "majority" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(row[0]) for row in rows] == list(SMOKE.checkpoints)


def test_mismatched_tokenizer_is_refused(finished, home):
    _, root = finished
    copy = home / "c" / "builtin-smoke"
    shutil.copytree(suite_dir("smoke", root), copy)
    manifest_path = copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(complete=False, tokenizer_hash="0" * 64)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SuiteError, match="does not match"):
        pretrain("smoke", root=home / "c", progress=False)
