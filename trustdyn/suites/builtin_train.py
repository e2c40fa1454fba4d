"""The built-in run's pre-training loop: checkpoints, held-out loss and exact resumption.

A :class:`PretrainRun` trains a ``LlamaForCausalLM`` on packed blocks. At every step of
the preset's checkpoint schedule it

1. saves a Hugging Face folder ``step-XXXXXX/`` (safetensors + config + tokenizer),
2. records a manifest row (step, tokens, train loss, held-out loss, weight hash),
3. saves ``resume/trainer_state.pt``: weights, optimizer, RNG, loss window and rows.

Everything is written to a temporary name and renamed, so a killed run leaves either
the old or the new file. The data a step reads is a function of (step, seed), so the
resume state plus the step number restore the run exactly: a resumed run produces the
same weights, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from trustdyn.provenance import hash_state_dict
from trustdyn.suites.builtin_data import batch_indices
from trustdyn.suites.builtin_presets import Preset

RESUME_DIR = "resume"
STATE_FILE = "trainer_state.pt"

ManifestRow = dict[str, Any]


def checkpoint_name(step: int) -> str:
    """Return the folder name of the checkpoint at ``step``, e.g. ``step-000120``."""
    return f"step-{step:06d}"


@contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Turn on ``torch.use_deterministic_algorithms`` for the block, then restore it."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' own save/load progress bars (ours already show the run's progress)."""
    before = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if before:
            hf_logging.enable_progress_bar()


def write_json_atomic(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON via a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def save_folder_atomic(folder: Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temporary folder, then move it to ``folder`` (replacing it)."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def model_config(preset: Preset, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    """Return the Llama config of ``preset`` for ``tokenizer``'s vocabulary."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=preset.hidden,
        intermediate_size=preset.intermediate,
        num_hidden_layers=preset.layers,
        num_attention_heads=preset.heads,
        num_key_value_heads=preset.kv_heads,
        # RoPE has no learned positions; allow chat prompts longer than a training block.
        max_position_embeddings=max(preset.seq_len, 1024),
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        dtype="float32",
    )


def build_model(preset: Preset, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """Return the preset's freshly initialised model (seeded by ``preset.seed``)."""
    torch.manual_seed(preset.seed)
    return LlamaForCausalLM(model_config(preset, tokenizer)).float()


def build_optimizer(model: LlamaForCausalLM, preset: Preset) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (norm gains are not decayed)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": preset.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=preset.lr, betas=(0.9, 0.95), eps=1e-8,
    )


def optimizer_step(model: LlamaForCausalLM, optimizer: torch.optim.Optimizer,
                   batch: torch.Tensor) -> torch.Tensor:
    """Train on ``batch`` ``[b, seq_len]`` once: forward, backward, clip to norm 1, step.

    Returns the batch's loss (detached by the caller).
    """
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


@torch.inference_mode()
def heldout_loss(model: LlamaForCausalLM, blocks: torch.Tensor, batch_size: int = 32) -> float:
    """Return the mean next-token loss over held-out ``blocks`` ``[n, seq_len]``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        chunk = blocks[start: start + batch_size]  # [b, seq_len]
        loss = model(input_ids=chunk, labels=chunk).loss
        n_targets = chunk.shape[0] * (chunk.shape[1] - 1)
        total += float(loss) * n_targets
        count += n_targets
    model.train(was_training)
    return total / count


@dataclass
class TrainerState:
    """What a resumed run needs besides the preset and data (see :func:`PretrainRun.save`).

    Attributes:
        step: Last completed optimiser step (a checkpoint step).
        rows: Manifest rows of the checkpoints saved so far.
        window: Training losses since the last checkpoint.
        elapsed: Wall-clock seconds of pre-training so far (optimiser steps plus the
            saving and evaluation of earlier checkpoints), across resumptions.
        cpu: The same in process CPU seconds (all threads): the compute used, a measure
            that contention from other processes inflates far less than wall time.

    """

    step: int = 0
    rows: list[ManifestRow] = field(default_factory=list)
    window: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    cpu: float = 0.0


class PretrainRun:
    """One pre-training run writing checkpoints into ``folder``.

    Args:
        preset: The run's preset (its seed included).
        folder: The suite folder (``step-*/`` and ``resume/`` go inside).
        tokenizer: The run's tokenizer (saved into every checkpoint).
        train_blocks: ``[n_train, seq_len]`` packed pre-training blocks.
        heldout_blocks: ``[n_heldout, seq_len]`` blocks the held-out loss is measured on.
        on_rows: Called with all rows after each checkpoint (to rewrite the manifest).

    """

    def __init__(self, preset: Preset, folder: Path, tokenizer: PreTrainedTokenizerFast,
                 train_blocks: torch.Tensor, heldout_blocks: torch.Tensor,
                 on_rows: Callable[[list[ManifestRow]], None]) -> None:
        self.preset = preset
        self.folder = folder
        self.tokenizer = tokenizer
        self.train_blocks = train_blocks
        self.heldout_blocks = heldout_blocks
        self.on_rows = on_rows
        self.model = build_model(preset, tokenizer)
        self.optimizer = build_optimizer(self.model, preset)
        self.state = TrainerState()
        self._clock = (time.perf_counter(), time.process_time())

    @property
    def state_path(self) -> Path:
        """Where the resume state lives."""
        return self.folder / RESUME_DIR / STATE_FILE

    def resume(self) -> bool:
        """Restore the last saved state, if any; return whether one was found."""
        if not self.state_path.is_file():
            return False
        saved = torch.load(self.state_path, weights_only=True)
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        self.state = TrainerState(step=int(saved["step"]), rows=json.loads(saved["rows"]),
                                  window=list(saved["window"]), elapsed=float(saved["elapsed"]),
                                  cpu=float(saved["cpu"]))
        return True

    def save(self) -> None:
        """Save the resume state atomically (weights, optimizer, RNG, rows, loss window)."""
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(f".{STATE_FILE}.tmp")
        torch.save({
            "step": self.state.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "rows": json.dumps(self.state.rows),
            "window": self.state.window,
            "elapsed": self.state.elapsed,
            "cpu": self.state.cpu,
        }, tmp)
        os.replace(tmp, self.state_path)

    def batch(self, step: int) -> torch.Tensor:
        """Return the blocks ``[batch_size, seq_len]`` that ``step`` trains on."""
        index = batch_indices(step, self.preset.batch_size, len(self.train_blocks),
                              self.preset.seed)
        return self.train_blocks[index]

    def train_step(self, step: int) -> float:
        """Run optimiser step ``step`` (1-based) and return its training loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.preset.lr_at(step)
        return float(optimizer_step(self.model, self.optimizer, self.batch(step)).item())

    @torch.inference_mode()
    def _initial_train_loss(self) -> float:
        # Step 0 has no optimiser step; log the loss of the first batch at initialisation.
        batch = self.batch(1)
        return float(self.model(input_ids=batch, labels=batch).loss)

    def _tick(self) -> None:
        """Add the wall and CPU time since the last tick to the state."""
        wall, cpu = time.perf_counter(), time.process_time()
        self.state.elapsed += wall - self._clock[0]
        self.state.cpu += cpu - self._clock[1]
        self._clock = (wall, cpu)

    def checkpoint(self, step: int) -> ManifestRow:
        """Save the checkpoint at ``step``, record its row and save the resume state."""
        self._tick()
        name = checkpoint_name(step)

        def write(tmp: Path) -> None:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)

        save_folder_atomic(self.folder / name, write)
        window = self.state.window or [self._initial_train_loss()]
        row: ManifestRow = {
            "name": name,
            "path": name,
            "step": step,
            "tokens": step * self.preset.tokens_per_step,
            "train_loss": sum(window) / len(window),
            "heldout_loss": heldout_loss(self.model, self.heldout_blocks),
            "lr": self.preset.lr_at(step) if step else 0.0,
            "weight_hash": hash_state_dict(self.model.state_dict()),
            "elapsed_s": round(self.state.elapsed, 2),
            "cpu_s": round(self.state.cpu, 2),
        }
        self.state.step, self.state.window = step, []
        self.state.rows.append(row)
        self.on_rows(self.state.rows)
        self.save()
        return row

    def train(self, *, progress: bool = True,
              on_checkpoint: Callable[[ManifestRow], None] | None = None) -> list[ManifestRow]:
        """Train from the current state to the last checkpoint; return all rows."""
        preset, schedule = self.preset, set(self.preset.checkpoints)
        self._clock = (time.perf_counter(), time.process_time())
        self.model.train()
        if not self.state.rows:
            self._after_checkpoint(self.checkpoint(0), on_checkpoint)
        bar = tqdm(total=preset.steps, initial=self.state.step, unit="step",
                   desc=f"pretrain builtin-{preset.name}", disable=not progress)
        with bar:
            for step in range(self.state.step + 1, preset.steps + 1):
                self.state.window.append(self.train_step(step))
                bar.update(1)
                bar.set_postfix(loss=f"{self.state.window[-1]:.3f}",
                                heldout=f"{self.state.rows[-1]['heldout_loss']:.3f}")
                if step in schedule:
                    self._after_checkpoint(self.checkpoint(step), on_checkpoint)
        return self.state.rows

    @staticmethod
    def _after_checkpoint(row: ManifestRow,
                          on_checkpoint: Callable[[ManifestRow], None] | None) -> None:
        if on_checkpoint is not None:
            on_checkpoint(row)

    def discard_resume_state(self) -> None:
        """Delete the resume state once the run is complete (it is only needed mid-run)."""
        shutil.rmtree(self.folder / RESUME_DIR, ignore_errors=True)
