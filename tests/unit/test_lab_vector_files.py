"""The Steering lab with vector files: reading, width checks, the device, and the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from streamlit.testing.v1 import AppTest

from trustdyn.dashboard import lab, study
from trustdyn.export import VectorRequest, export_vectors
from trustdyn.paths import REPO_ROOT
from trustdyn.steering import SteeringVector, save_vectors
from trustdyn.store import Store
from trustdyn.testing.synthetic import write_synthetic_study

TIMEOUT = 120  # seconds per script run: the machine is shared, and the lab loads torch


@pytest.fixture(scope="module")
def study_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic study whose vectors fit the tiny test model (d=32, 3 layers)."""
    path = tmp_path_factory.mktemp("study") / "study.duckdb"
    write_synthetic_study(path, n_checkpoints=3, n_layers=3, hidden_size=32, seed=0)
    return path


@pytest.fixture(scope="module")
def files(study_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The chat model's truthfulqa vectors as exported files (layers 0-2; GGUF: 1-2)."""
    request = VectorRequest("synthetic", "chat", "truthfulqa")
    return export_vectors(Store(study_file), request, tmp_path_factory.mktemp("v") / "tq")



def narrow_file(path: Path) -> Path:
    """A trustdyn vector file of width 8 at layers 1 and 4."""
    return save_vectors(path, [SteeringVector(
        direction=torch.eye(8)[layer], scale=2.0, layer=layer, dataset="toxigen",
        toward_label=1, source="elsewhere/chat", model="other", revision=None,
        hidden_size=8) for layer in (1, 4)])


def test_files_are_read_and_checked_against_the_model(files: Any, tmp_path: Path) -> None:
    vectors = lab.read_vector_file(files.gguf)
    usable = lab.file_vectors(vectors, 32, 2, "tq.gguf")
    assert sorted(usable) == [1]  # layer 2 is beyond a 2-layer model
    line = lab.describe_file_vectors(vectors, usable)
    assert "truthfulqa vector from synthetic/chat" in line
    assert "units of the chat model's σ" in line and "layers [2] are beyond this model" in line
    uploaded = lab.read_vector_upload("tq.safetensors", files.safetensors.read_bytes())
    assert [v.layer for v in uploaded] == [0, 1, 2]
    narrow = lab.read_vector_file(narrow_file(tmp_path / "narrow.safetensors"))
    with pytest.raises(lab.LabError, match=r"width 8 \(layers 1, 4\).*hidden size is 32"):
        lab.file_vectors(narrow, 32, 3, "narrow.safetensors")
    with pytest.raises(lab.LabError, match="holds layers 1, 4 but this chat model has layers "
                                           "0 to 0"):
        lab.file_vectors(narrow, 8, 1, "narrow.safetensors")


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(lab.LabError, match="No vector file"):
        lab.read_vector_file(tmp_path / "none.gguf")
    with pytest.raises(lab.LabError, match=r"^notes\.txt is not a readable safetensors"):
        lab.read_vector_upload("notes.txt", b"not a vector file at all")


def test_the_lab_loads_models_on_the_best_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import trustdyn.suites as suites

    seen = []
    monkeypatch.setattr(suites, "load_checkpoint",
                        lambda ref, options: seen.append(options) or ("model", "tok"))
    lab.load_chat_model(lab.ChatModelSpec("m", "folder", str(REPO_ROOT)))
    assert [o.device for o in seen] == ["auto"]  # CUDA, else MPS, else CPU


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, study_file: Path,
            tiny_chat: Path) -> None:
    monkeypatch.setenv(study.STUDY_ENV, str(study_file))
    monkeypatch.setenv("TRUSTDYN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(lab.CHAT_MODELS_ENV, f"tiny={tiny_chat}")
    monkeypatch.setattr(lab, "_smollm2_installed", lambda: False)


def lab_page() -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/steering_lab.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="lab_source").set_value(lab.FILE_CHOICE).run()
    return at


@pytest.mark.usefixtures("app_env")
def test_the_lab_steers_with_a_gguf_file(files: Any, tiny_chat: Path) -> None:
    from trustdyn.generation import generate
    from trustdyn.suites import CheckpointRef, LoadOptions, load_checkpoint

    at = lab_page()
    assert "Upload or name" in "".join(str(i.value) for i in at.info)
    at.text_input(key="lab_file_path").set_value(str(files.gguf)).run()
    assert not at.error, [e.value for e in at.error]
    assert "layers 1, 2 of width 32" in "".join(str(c.value) for c in at.caption)
    assert at.select_slider(key="lab_layer").options == ["1", "2"]
    at.select_slider(key="lab_layer").set_value(1)
    at.slider(key="lab_alpha").set_value(8.0)
    at.slider(key="lab_tokens").set_value(16).run()
    at.chat_input(key="lab_prompt").set_value("Is the sky blue?").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    turn = at.session_state["lab_history"][0]
    assert turn["settings"].startswith("steered: file tq.gguf")
    model, tokenizer = load_checkpoint(CheckpointRef("t", "t", 0, str(tiny_chat)),
                                       LoadOptions(device="cpu"))
    vector = lab.read_vector_file(files.gguf)[0]
    messages = [{"role": "user", "content": "Is the sky blue?"}]
    assert turn["steered"] == generate(model, tokenizer, messages, vector=vector, alpha=8.0,
                                       max_new_tokens=16)
    assert turn["steered"] != turn["unsteered"]


@pytest.mark.usefixtures("app_env")
def test_the_lab_names_both_widths_for_a_file_that_does_not_fit(tmp_path: Path) -> None:
    at = lab_page()
    at.text_input(key="lab_file_path").set_value(
        str(narrow_file(tmp_path / "narrow.safetensors"))).run()
    errors = "".join(str(e.value) for e in at.error)
    assert "width 8 (layers 1, 4)" in errors and "hidden size is 32" in errors
    assert not at.exception


def test_every_dimension_has_example_prompts_and_fluency_uses_the_chat_task_format() -> None:
    from trustdyn.datasets import DIMENSIONS
    from trustdyn.suites.builtin_task import PROMPT

    assert set(lab.EXAMPLE_PROMPTS) == set(DIMENSIONS)
    prefix = PROMPT.split("{sentence}")[0]
    real, shuffled = lab.EXAMPLE_PROMPTS["fluency"]
    assert real.startswith(prefix) and shuffled.startswith(prefix)
    words = real.removeprefix(prefix).strip('"').split()
    # The task's shuffles keep each word with its punctuation (builtin_task.shuffle_words).
    assert sorted(shuffled.removeprefix(prefix).strip('"').split()) == sorted(words)
