"""Your own model: a layers path for blocks trustdyn does not find, and remote code only when asked.

The stand-in is a tiny random-init MPT model: its decoder blocks live at
``transformer.blocks``, a path :func:`trustdyn.blocks.decoder_blocks` does not try, so
everything that reads or writes blocks must get there through the recorded layers path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import MptConfig, MptForCausalLM, PreTrainedTokenizerFast

from precompute.__main__ import build_parser, main
from precompute.commands import _load_suite, _selection
from trustdyn.activations import extract_activations
from trustdyn.blocks import decoder_blocks
from trustdyn.steering import SteeringVector, steer
from trustdyn.suites import LoadOptions, SuiteError, get_suite, load_checkpoint
from trustdyn.suites import loading as loading_module
from trustdyn.suites.base import Suite

CPU = LoadOptions(device="cpu")
TEXTS = ["The capital of France is Paris.", "a quick brown fox", "Water boils."]


@pytest.fixture
def mpt_folder(tmp_path: Path, tiny_tokenizer: PreTrainedTokenizerFast) -> Path:
    """A saved tiny MPT checkpoint (blocks at ``transformer.blocks``) with a tokenizer."""
    torch.manual_seed(0)
    config = MptConfig(d_model=32, n_heads=4, n_layers=3, expansion_ratio=2, max_seq_len=128,
                       vocab_size=len(tiny_tokenizer), pad_token_id=0, eos_token_id=2)
    folder = tmp_path / "mpt"
    MptForCausalLM(config).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def toml_suite_file(tmp_path: Path, folder: Path, extra: str = "") -> Path:
    file = tmp_path / "mine.toml"
    file.write_text(f'name = "mine"\n{extra}\n[[checkpoints]]\nsource = "{folder}"\n'
                    "step = 0\n", encoding="utf-8")
    return file


def only_ref_of(suite: Suite) -> Any:
    (ref,) = suite.checkpoints
    return ref


def test_unknown_layout_names_its_module_lists_and_the_fix(mpt_folder: Path) -> None:
    model = MptForCausalLM.from_pretrained(mpt_folder)
    with pytest.raises(ValueError, match=r"--layers-path \(ModuleLists in this model: "
                                         r"transformer.blocks\)"):
        decoder_blocks(model)


def test_layers_path_reaches_extraction_and_steering(tmp_path: Path, mpt_folder: Path,
                                                     tiny_tokenizer: Any) -> None:
    file = toml_suite_file(tmp_path, mpt_folder, 'layers = "transformer.blocks"')
    model, tokenizer = load_checkpoint(only_ref_of(get_suite(str(file))), CPU)
    blocks = decoder_blocks(model)
    assert blocks is model.transformer.blocks
    plain = extract_activations(model, tokenizer, TEXTS, batch_size=2)
    assert plain.blocks.shape == (3, len(TEXTS), 32)
    direction = torch.zeros(32)
    direction[5] = 1.0
    vector = SteeringVector(direction=direction, scale=2.0, layer=1, dataset="toy",
                            toward_label=1, source="test", model="mpt", revision=None,
                            hidden_size=32)
    with steer(model, vector, 1.5):
        steered = extract_activations(model, tokenizer, TEXTS, batch_size=2)
    # Block 1's output moves by exactly alpha * scale * direction; block 0 is untouched.
    torch.testing.assert_close(steered.blocks[1] - plain.blocks[1],
                               (1.5 * 2.0 * direction).expand(len(TEXTS), -1))
    torch.testing.assert_close(steered.blocks[0], plain.blocks[0])
    assert all(not block._forward_hooks for block in blocks)


@pytest.mark.parametrize("path, message", [
    ("transformer.layers", "has no attribute 'transformer.layers'"),
    ("transformer.wte", "leads to Embedding, not a non-empty ModuleList"),
])
def test_wrong_layers_path_fails_at_load_with_the_candidates(
        tmp_path: Path, mpt_folder: Path, path: str, message: str) -> None:
    file = toml_suite_file(tmp_path, mpt_folder, f'layers = "{path}"')
    with pytest.raises(SuiteError) as caught:
        load_checkpoint(only_ref_of(get_suite(str(file))), CPU)
    text = str(caught.value)
    assert message in text and "checkpoint '" in text
    assert "ModuleLists in this model: transformer.blocks" in text


def test_layers_path_syntax_is_checked_before_loading(tmp_path: Path,
                                                      mpt_folder: Path) -> None:
    file = toml_suite_file(tmp_path, mpt_folder, 'layers = "transformer/blocks"')
    with pytest.raises(SuiteError, match="not a dotted attribute path"):
        get_suite(str(file))


def test_cli_flags_set_layers_and_remote_code_on_every_checkpoint(tmp_path: Path,
                                                                  mpt_folder: Path) -> None:
    file = toml_suite_file(tmp_path, mpt_folder)
    args = build_parser().parse_args(["run", "--suite", str(file), "--layers-path",
                                      "transformer.blocks", "--trust-remote-code"])
    ref = only_ref_of(_load_suite(args, _selection(args)))
    assert (ref.layers, ref.trust_remote_code) == ("transformer.blocks", True)
    plain = build_parser().parse_args(["run", "--suite", str(file)])
    ref = only_ref_of(_load_suite(plain, _selection(plain)))
    assert (ref.layers, ref.trust_remote_code) == (None, False)


@pytest.mark.parametrize("flags, message", [
    (["--every", "2", "--log-spaced", "3"], "either every=2 or log_spaced=3"),
    (["--revisions", "step1", "--steps", "0:10"], "either revision names or a step range"),
    (["--steps", "10"], "--steps takes FIRST:LAST"),
    (["--revisions", "step1,stpe2"], "no revision 'stpe2' (did you mean step2"),
])
def test_bad_selection_flags_fail_before_any_file_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str],
        message: str) -> None:
    db = tmp_path / "study.duckdb"
    assert main(["run", "--suite", "pythia-160m", "--db", str(db), *flags]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --- trust_remote_code ------------------------------------------------------------------------

@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch, tiny_tokenizer: PreTrainedTokenizerFast
        ) -> list[tuple[str, Any]]:
    """Record the trust_remote_code each from_pretrained call gets; the model load fails."""
    seen: list[tuple[str, Any]] = []

    def tokenizer(source: str, **kwargs: Any) -> Any:
        seen.append(("tokenizer", kwargs.get("trust_remote_code", "absent")))
        return tiny_tokenizer

    def model(source: str, **kwargs: Any) -> Any:
        seen.append(("model", kwargs.get("trust_remote_code", "absent")))
        raise OSError("stop here")

    monkeypatch.setattr(loading_module.AutoTokenizer, "from_pretrained", tokenizer)
    monkeypatch.setattr(loading_module.AutoModelForCausalLM, "from_pretrained", model)
    monkeypatch.delenv(loading_module.MIRROR_ENV, raising=False)
    return seen


@pytest.mark.parametrize("toml_line, override, expected", [
    ("", False, False),
    ("trust_remote_code = true", False, True),
    ("", True, True),
])
def test_remote_code_is_trusted_only_when_set(tmp_path: Path, spy: list[tuple[str, Any]],
                                              toml_line: str, override: bool,
                                              expected: bool) -> None:
    file = tmp_path / "hub.toml"
    file.write_text(f'name = "hub"\n{toml_line}\n[[checkpoints]]\nsource = "org/custom"\n'
                    "step = 0\n", encoding="utf-8")
    ref = only_ref_of(get_suite(str(file), trust_remote_code=override))
    with pytest.raises(SuiteError, match="stop here"):
        load_checkpoint(ref, CPU)
    assert spy == [("tokenizer", expected), ("model", expected)]


def test_remote_code_refusal_says_how_to_allow_it(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    def refuse(source: str, **kwargs: Any) -> Any:
        raise ValueError(f"The repository {source} contains custom code which must be "
                         "executed to correctly load the model. Please pass the argument "
                         "`trust_remote_code=True` to allow custom code to be run.")

    monkeypatch.setattr(loading_module.AutoTokenizer, "from_pretrained", refuse)
    monkeypatch.delenv(loading_module.MIRROR_ENV, raising=False)
    file = tmp_path / "hub.toml"
    file.write_text('name = "hub"\n[[checkpoints]]\nsource = "org/custom"\nstep = 0\n',
                    encoding="utf-8")
    with pytest.raises(SuiteError, match="turn it on with --trust-remote-code"):
        load_checkpoint(only_ref_of(get_suite(str(file))), CPU)


def test_bad_trust_remote_code_value_names_the_field(tmp_path: Path) -> None:
    file = tmp_path / "hub.toml"
    file.write_text('name = "hub"\ntrust_remote_code = "yes"\n[[checkpoints]]\n'
                    'source = "org/custom"\nstep = 0\n', encoding="utf-8")
    with pytest.raises(SuiteError, match="field 'trust_remote_code' must be true or false"):
        get_suite(str(file))
