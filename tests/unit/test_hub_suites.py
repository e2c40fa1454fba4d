"""Public hub suites: revision tables, selection, and the hub loading path exercised offline.

Tiny saved models stand in for hub revisions through ``TRUSTDYN_HUB_MIRROR`` (a folder laid
out as ``<repo>/<revision>/``); without a mirror, the real ``from_pretrained(repo,
revision=...)`` call runs, checked here with a spy and with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest

from tests.conftest import build_model
from trustdyn.provenance import hash_state_dict
from trustdyn.suites import LoadOptions, Suite, SuiteError, load_checkpoint, weight_hash
from trustdyn.suites import loading as loading_module
from trustdyn.suites.hub import (
    OLMO2_EARLY_REPO,
    PUBLIC_SUITES,
    olmo2_revision_name,
    public_suite,
)
from trustdyn.suites.selection import RevisionSelection

CPU = LoadOptions(device="cpu")


def picked(name: str, *revisions: str, every: int = 1) -> Suite:
    """The public suite ``name`` narrowed to ``revisions``."""
    return public_suite(name, RevisionSelection(revisions=revisions, every=every))
SaveFn = Callable[[str, int], Path]


# --- revision tables ------------------------------------------------------------------------

def test_pythia_has_154_revisions_with_tokens_from_the_batch_size() -> None:
    suite = public_suite("pythia-160m")
    steps = [r.step for r in suite.checkpoints]
    assert steps[:12] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
    assert steps[-1] == 143_000 and len(steps) == 154
    assert all(r.revision == f"step{r.step}" and r.tokens == r.step * 2_097_152
               for r in suite.checkpoints)
    assert suite.chat is None


def test_amber_has_360_checkpoints_and_main_is_the_last() -> None:
    suite = public_suite("amber")
    refs = suite.checkpoints
    assert [r.name for r in refs[:2]] == ["ckpt_000", "ckpt_001"] and len(refs) == 360
    assert refs[-1].name == "ckpt_359" and refs[-1].revision == "main"
    assert refs[-2].revision == "ckpt_358"
    assert refs[-1].tokens == 1_259_130_000_000
    assert all(a.tokens is not None and b.tokens is not None and a.tokens < b.tokens
               for a, b in itertools.pairwise(refs))
    assert suite.chat is not None and suite.chat.source == "LLM360/AmberChat"
    assert suite.chat.step == 359 and suite.chat.is_chat


def test_smollm2_revisions_every_240k_steps() -> None:
    suite = public_suite("smollm2-135m")
    assert [r.revision for r in suite.checkpoints] == [f"step-{240_000 * k}" for k in range(1, 9)]
    assert suite.checkpoints[0].tokens == 240_000 * 1_048_576
    assert suite.chat is not None and suite.chat.source == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.parametrize("step, label", [
    (0, "stage1-step0-tokens0B"), (300, "stage1-step300-tokens1B"),
    (1000, "stage1-step1000-tokens3B"), (23_100, "stage1-step23100-tokens49B"),
    (120_000, "stage1-step120000-tokens252B"), (950_000, "stage1-step950000-tokens1993B"),
    (1_907_359, "stage1-step1907359-tokens4001B"),
])
def test_olmo2_names_match_published_branches(step: int, label: str) -> None:
    assert olmo2_revision_name(step) == label


def test_olmo2_suite_uses_the_dense_early_repository_then_the_main_one() -> None:
    suite = public_suite("olmo2-1b")
    refs = suite.checkpoints
    assert [r.step for r in refs] == sorted(r.step for r in refs)
    early = [r for r in refs if r.source == OLMO2_EARLY_REPO]
    assert [r.step for r in early] == list(range(0, 36_001, 1000))
    assert refs[-1].revision == "main" and refs[-1].source == "allenai/OLMo-2-0425-1B"
    assert suite.chat is not None and suite.chat.step == refs[-1].step


def test_olmo2_accepts_unlisted_but_well_formed_revisions() -> None:
    suite = picked("olmo2-1b", "stage1-step300-tokens1B", "main")
    first = suite.checkpoints[0]
    assert (first.step, first.tokens, first.source) == (
        300, 300 * 2_097_152, "allenai/OLMo-2-0425-1B")
    with pytest.raises(SuiteError, match="no revision 'stage1-step300-tokens2B'"):
        picked("olmo2-1b", "stage1-step300-tokens2B")


def test_every_public_suite_is_ordered_with_unique_names() -> None:
    for name in PUBLIC_SUITES:
        refs = public_suite(name).all_refs()
        assert len({r.name for r in refs}) == len(refs), name
        steps = [r.step for r in public_suite(name).checkpoints]
        assert steps == sorted(steps), name
        assert all(r.weight_hash is None for r in refs)  # hashed by the pipeline at load


# --- selection --------------------------------------------------------------------------

def test_every_thins_and_keeps_the_last_checkpoint() -> None:
    names = [r.name for r in public_suite("smollm2-135m", RevisionSelection(every=3)).checkpoints]
    assert names == ["step-240000", "step-960000", "step-1680000", "step-1920000"]


def test_revisions_select_by_name_or_revision_in_step_order() -> None:
    suite = picked("amber", "main", "ckpt_010", "ckpt_002")
    assert [r.name for r in suite.checkpoints] == ["ckpt_002", "ckpt_010", "ckpt_359"]
    thinned = picked("pythia-160m", "step4", "step1", "step2", every=2)
    assert [r.name for r in thinned.checkpoints] == ["step1", "step4"]


def test_unknown_revision_names_it_and_lists_some_that_exist() -> None:
    with pytest.raises(SuiteError) as caught:
        picked("pythia-160m", "step1000", "step1500")
    message = str(caught.value)
    assert "'step1500'" in message and "step0" in message and "step143000" in message
    assert "did you mean" in message


def test_unknown_public_suite_lists_the_known_ones() -> None:
    with pytest.raises(SuiteError, match="Unknown public suite 'pythia-12b'; known: amber"):
        public_suite("pythia-12b")


# --- loading through a hub mirror ---------------------------------------------------------

@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, saved_tiny_model: SaveFn) -> Path:
    """A hub mirror holding two Pythia revisions and the SmolLM2 chat model (tiny stand-ins)."""
    root = tmp_path / "mirror"
    layout = {("EleutherAI/pythia-160m", "step1000"): ("gpt_neox", 1),
              ("EleutherAI/pythia-160m", "step2000"): ("gpt_neox", 2),
              ("HuggingFaceTB/SmolLM2-135M-Instruct", "main"): ("llama", 3)}
    for (repo, revision), (family, seed) in layout.items():
        shutil.copytree(saved_tiny_model(family, seed), root / repo / revision)
    monkeypatch.setenv(loading_module.MIRROR_ENV, str(root))
    return root


def test_mirror_serves_each_revision(mirror: Path) -> None:
    suite = picked("pythia-160m", "step1000", "step2000")
    for ref, seed in zip(suite.checkpoints, (1, 2), strict=True):
        model, tokenizer = load_checkpoint(ref, CPU)
        assert weight_hash(model) == hash_state_dict(build_model("gpt_neox", 300, seed)
                                                     .state_dict())
        assert tokenizer.padding_side == "left"
        # provenance still names the hub repository and revision, not the mirror folder
        assert (ref.source, ref.revision) == ("EleutherAI/pythia-160m", f"step{seed}000")
    chat = public_suite("smollm2-135m").chat
    assert chat is not None
    model, _ = load_checkpoint(chat, CPU)
    assert type(model).__name__ == "LlamaForCausalLM"


def test_mirror_without_the_revision_says_where_it_looked(mirror: Path) -> None:
    ref = picked("pythia-160m", "step4000").checkpoints[0]
    expected = mirror / "EleutherAI/pythia-160m" / "step4000"
    with pytest.raises(SuiteError, match="TRUSTDYN_HUB_MIRROR") as caught:
        load_checkpoint(ref, CPU)
    assert str(expected) in str(caught.value) and "'step4000'" in str(caught.value)


# --- loading from the hub itself (no mirror) ----------------------------------------------

def test_without_mirror_from_pretrained_gets_repo_and_revision(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loading_module.MIRROR_ENV, raising=False)
    calls: list[tuple[str, str | None]] = []

    def unreachable(source: str, revision: str | None = None, **kwargs: Any) -> Any:
        calls.append((source, revision))
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(loading_module.AutoTokenizer, "from_pretrained", unreachable)
    ref = picked("pythia-160m", "step1000").checkpoints[0]
    with pytest.raises(SuiteError, match="Could not load the checkpoint 'step1000'"):
        load_checkpoint(ref, CPU)
    assert calls == [("EleutherAI/pythia-160m", "step1000")]


def test_offline_hub_is_a_clear_suite_error(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loading_module.MIRROR_ENV, raising=False)
    # huggingface_hub reads these once at import, so patch the constants as well as the env.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    ref = picked("pythia-160m", "step1000").checkpoints[0]
    with pytest.raises(SuiteError) as caught:
        load_checkpoint(ref, CPU)
    message = str(caught.value)
    assert "checkpoint 'step1000' of suite 'pythia-160m' (EleutherAI/pythia-160m@step1000)" \
        in message
    assert "HF_HUB_OFFLINE" in message and "TRUSTDYN_HUB_MIRROR" in message
    assert isinstance(caught.value.__cause__, OSError)

