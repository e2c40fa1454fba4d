"""The built-in checkpoint suite: a small Llama pre-trained from scratch on the vendored corpus.

:func:`pretrain` runs (or resumes, or returns a finished) pre-training run of a preset
and a short chat fine-tune after it; :func:`load_suite` reads a finished run. A run lives
in ``generated_dir()/suites/builtin-<preset>/``::

    manifest.json          preset, seed, tokenizer hash, one row per checkpoint, chat row
    tokenizer/             the run's byte-level BPE (also copied into every checkpoint)
    step-000000/ ...       Hugging Face folders (safetensors + config + tokenizer)
    chat/                  the chat model fine-tuned from the last checkpoint
    resume/                optimizer/RNG/data-position state, only while the run is unfinished

Same preset and seed give byte-identical weights on one machine, and a killed run
continues from its last checkpoint to the same weights. See ``builtin_presets`` (sizes
and schedules), ``builtin_data`` (corpus, tokenizer, packing), ``builtin_train`` (the
loop), ``builtin_chat`` (the chat stage) and ``builtin_task`` (the chat model's task).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from trustdyn.paths import generated_dir
from trustdyn.provenance import code_version, hash_state_dict
from trustdyn.suites.base import CheckpointRef, Suite, SuiteError
from trustdyn.suites.builtin_chat import finetune, gloss_pairs, sft_mixture, task_count
from trustdyn.suites.builtin_data import (
    CorpusSplit,
    encode_documents,
    load_corpus,
    load_tokenizer,
    pack_documents,
    split_corpus,
    tokenizer_hash,
    train_tokenizer,
)
from trustdyn.suites.builtin_presets import PRESETS, Preset, get_preset
from trustdyn.suites.builtin_task import (
    N_BOOT,
    TASK_DESCRIPTION,
    TASK_NAME,
    heldout_items,
    score_task,
    train_items,
)
from trustdyn.suites.builtin_train import (
    ManifestRow,
    PretrainRun,
    deterministic_algorithms,
    heldout_loss,
    quiet_transformers,
    save_folder_atomic,
    write_json_atomic,
)
from trustdyn.timing import timed

__all__ = ["PRESETS", "Preset", "load_suite", "pretrain", "suite_dir"]

MANIFEST = "manifest.json"
TOKENIZER_DIR = "tokenizer"
CHAT_DIR = "chat"
FORMAT = 1


def suite_name(preset: str) -> str:
    """Return the suite name of a preset, e.g. ``builtin-default``."""
    return f"builtin-{preset}"


def suite_dir(preset: str, root: Path | None = None) -> Path:
    """Return the folder of a preset's run.

    Args:
        preset: Preset name.
        root: Folder holding suite folders (default ``generated_dir()/suites``).

    Raises:
        SuiteError: for an unknown preset.

    """
    get_preset(preset)
    return (root if root is not None else generated_dir() / "suites") / suite_name(preset)


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SuiteError(f"{path} is not valid JSON ({err}); delete {folder} and rerun "
                         "`python -m precompute pretrain`.") from err
    return manifest


def _check_same_run(manifest: dict[str, Any], preset: Preset, folder: Path) -> None:
    """Refuse to mix a run with another preset definition or seed in one folder."""
    if manifest.get("preset") != preset.to_json():
        raise SuiteError(
            f"{folder} holds a run with different settings (seed "
            f"{manifest.get('preset', {}).get('seed')}, or an older definition of preset "
            f"{preset.name!r}). Delete that folder or pass another root to start afresh."
        )


def _prepare_tokenizer(folder: Path, split: CorpusSplit, preset: Preset,
                       manifest: dict[str, Any] | None) -> PreTrainedTokenizerFast:
    """Load the run's saved tokenizer, or train it on the pre-training documents and save it.

    A tokenizer folder without a manifest (a run killed before its first checkpoint, maybe
    with another seed) is retrained rather than trusted.
    """
    path = folder / TOKENIZER_DIR
    if manifest is not None and path.is_dir():
        tokenizer = load_tokenizer(path)
        if tokenizer_hash(tokenizer) != manifest.get("tokenizer_hash"):
            raise SuiteError(f"The tokenizer in {path} does not match {folder / MANIFEST}; "
                             f"delete {folder} and rerun to start afresh.")
        return tokenizer
    tokenizer = train_tokenizer(split.train_docs, preset.vocab)
    folder.mkdir(parents=True, exist_ok=True)
    save_folder_atomic(path, lambda tmp: _save_tokenizer(tokenizer, tmp))
    return load_tokenizer(path)


def _save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: Path) -> None:
    tokenizer.save_pretrained(folder)


def _blocks(tokenizer: PreTrainedTokenizerFast, docs: tuple[str, ...], seq_len: int
            ) -> torch.Tensor:
    ids, offsets = encode_documents(tokenizer, docs)
    return pack_documents(ids, offsets, seq_len, int(tokenizer.bos_token_id),
                          int(tokenizer.eos_token_id))


def _manifest_header(preset: Preset, tokenizer: PreTrainedTokenizerFast, split: CorpusSplit,
                     train_blocks: torch.Tensor, heldout_blocks: torch.Tensor
                     ) -> dict[str, Any]:
    """Return the run-level part of the manifest (what the rows were produced from)."""
    return {
        "format": FORMAT, "suite": suite_name(preset.name), "preset": preset.to_json(),
        "tokenizer_hash": tokenizer_hash(tokenizer), "vocab_size": len(tokenizer),
        "code_version": code_version(), "train_blocks": len(train_blocks),
        "heldout_blocks": len(heldout_blocks), "train_docs": len(split.train_docs),
        "heldout_docs": len(split.heldout_docs),
    }


def _ref(suite: str, folder: Path, row: ManifestRow, preset: dict[str, Any], *,
         is_chat: bool = False) -> CheckpointRef:
    extra = {k: v for k, v in row.items() if k not in {
        "name", "path", "step", "tokens", "weight_hash", "train_loss", "heldout_loss"}}
    extra.update(preset=preset["name"], seed=preset["seed"])
    return CheckpointRef(
        suite=suite, name=row["name"], step=int(row["step"]), source=str(folder / row["path"]),
        tokens=row.get("tokens"), revision=None, weight_hash=row.get("weight_hash"),
        train_loss=row.get("train_loss"), heldout_loss=row.get("heldout_loss"),
        is_chat=is_chat, extra=extra,
    )


def _suite_from_manifest(manifest: dict[str, Any], folder: Path) -> Suite:
    preset = manifest["preset"]
    name = manifest["suite"]
    checkpoints = tuple(_ref(name, folder, row, preset) for row in manifest["checkpoints"])
    chat = _ref(name, folder, manifest["chat"], preset, is_chat=True)
    for ref in (*checkpoints, chat):
        if not Path(ref.source).is_dir():
            raise SuiteError(f"Checkpoint folder {ref.source} of suite {name!r} is missing; "
                             f"delete {folder} and rerun `python -m precompute pretrain "
                             f"--preset {preset['name']}`.")
    description = (
        f"Llama {preset['layers']}×{preset['hidden']} (vocab {manifest['vocab_size']}) "
        f"pre-trained from scratch on the vendored corpus, preset {preset['name']!r}, seed "
        f"{preset['seed']}: {len(checkpoints)} checkpoints over {preset['steps']} steps, "
        f"then a {preset['chat_steps']}-step chat fine-tune."
    )
    return Suite(name=name, description=description, checkpoints=checkpoints, chat=chat)


def load_suite(preset: str = "default", *, root: Path | None = None) -> Suite:
    """Return the suite of a finished built-in run.

    Raises:
        SuiteError: for an unknown preset, or a run that is missing or unfinished (the
            message says how to pre-train it).

    """
    folder = suite_dir(preset, root)
    manifest = _read_manifest(folder)
    if manifest is None or not manifest.get("complete"):
        state = "is unfinished" if manifest else "has not been pre-trained yet"
        raise SuiteError(
            f"The built-in suite {suite_name(preset)!r} {state} (no complete manifest in "
            f"{folder}); run `python -m precompute pretrain --preset {preset}`"
            + (f" --root {root}" if root is not None else "") + " first."
        )
    return _suite_from_manifest(manifest, folder)


def _chat_stage(folder: Path, preset: Preset, tokenizer: PreTrainedTokenizerFast,
                split: CorpusSplit, heldout_blocks: torch.Tensor, last: ManifestRow,
                progress: bool) -> ManifestRow:
    """Fine-tune the last checkpoint into the chat model, evaluate it and save ``chat/``."""
    started, cpu_started = time.perf_counter(), time.process_time()
    model = LlamaForCausalLM.from_pretrained(folder / last["path"], dtype=torch.float32)
    n_pairs = preset.chat_steps * preset.chat_batch_size
    # Drawing as many distinct items as the mixture takes means no task item repeats
    # while the corpus has enough sentences.
    task = [item.pair() for item in train_items(split, task_count(n_pairs), preset.seed)]
    evaluation = heldout_items(split, seed=preset.seed)
    base = score_task(model, tokenizer, evaluation, preset.seed)
    mixture = sft_mixture(task, gloss_pairs(split.train_glosses), n_pairs, preset.seed)
    losses = finetune(model, tokenizer, mixture, steps=preset.chat_steps,
                      batch_size=preset.chat_batch_size, lr=preset.chat_lr,
                      max_len=preset.seq_len, progress=progress)
    chat = score_task(model, tokenizer, evaluation, preset.seed)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    save_folder_atomic(folder / CHAT_DIR, write)
    tail = losses[-max(1, len(losses) // 10):]
    return {
        "name": CHAT_DIR, "path": CHAT_DIR, "step": last["step"], "tokens": last["tokens"],
        "weight_hash": hash_state_dict(model.state_dict()),
        "train_loss": sum(tail) / len(tail), "heldout_loss": heldout_loss(model, heldout_blocks),
        "sft_steps": preset.chat_steps, "sft_examples": len(mixture),
        "sft_task_items": len(task), "task_name": TASK_NAME,
        "task_description": TASK_DESCRIPTION, "task_accuracy": chat.accuracy,
        "task_accuracy_ci": list(chat.interval), "majority_baseline": chat.majority_baseline,
        "task_accuracy_base": base.accuracy,
        "task_predicted_yes_rate": chat.predicted_yes_rate, "task_n": chat.n,
        "task_method": "log p('Yes.') vs log p('No.') after the chat prompt; "
                       f"percentile bootstrap over items ({N_BOOT} replicates)",
        "elapsed_s": round(time.perf_counter() - started, 2),
        "cpu_s": round(time.process_time() - cpu_started, 2),
    }


def pretrain(preset: str = "default", *, seed: int = 0, root: Path | None = None,
             progress: bool = True,
             on_checkpoint: Callable[[CheckpointRef], None] | None = None) -> Suite:
    """Pre-train (or resume, or return the finished) built-in suite of a preset.

    Args:
        preset: Preset name (see :data:`PRESETS`).
        seed: Seed of initialisation, data order, held-out split and chat mixture.
        root: Folder holding suite folders (default ``generated_dir()/suites``).
        progress: Show tqdm progress bars.
        on_checkpoint: Called after each pre-training checkpoint is fully saved (hook for
            logging; an exception raised there stops the run, which a rerun resumes).

    Returns:
        The suite: checkpoints ordered by step, and the chat model.

    Raises:
        SuiteError: unknown preset, missing corpus file, or a folder holding another run.

    """
    spec = get_preset(preset, seed)
    folder = suite_dir(preset, root)
    manifest = _read_manifest(folder)
    if manifest is not None:
        _check_same_run(manifest, spec, folder)
        if manifest.get("complete"):
            return _suite_from_manifest(manifest, folder)
    with deterministic_algorithms(), quiet_transformers():
        with timed("corpus and tokenizer"):
            split = split_corpus(load_corpus(spec.corpus_lines), spec.heldout_fraction,
                                 spec.seed)
            tokenizer = _prepare_tokenizer(folder, split, spec, manifest)
            train_blocks = _blocks(tokenizer, split.train_docs, spec.seq_len)  # [n, seq_len]
            heldout_blocks = _blocks(tokenizer, split.heldout_docs,
                                     spec.seq_len)[: spec.heldout_seqs]
        header = _manifest_header(spec, tokenizer, split, train_blocks, heldout_blocks)

        def write_manifest(rows: list[ManifestRow], chat: ManifestRow | None = None) -> None:
            write_json_atomic(folder / MANIFEST, {**header, "complete": chat is not None,
                                                  "checkpoints": rows, "chat": chat})

        run = PretrainRun(spec, folder, tokenizer, train_blocks, heldout_blocks,
                          on_rows=write_manifest)
        run.resume()
        hook = None if on_checkpoint is None else (
            lambda row: on_checkpoint(_ref(header["suite"], folder, row, header["preset"])))
        with timed("pre-training"):
            rows = run.train(progress=progress, on_checkpoint=hook)
        with timed("chat fine-tune"):
            chat = _chat_stage(folder, spec, tokenizer, split, heldout_blocks, rows[-1],
                               progress)
        write_manifest(rows, chat)
        run.discard_resume_state()
    return load_suite(preset, root=root)

