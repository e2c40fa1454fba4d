"""Benchmark: batched activation extraction vs the paper's one-statement-at-a-time loop.

Baseline (the reference implementation's approach): for each statement, a forward pass of
the full causal LM with ``output_hidden_states=True``, keeping ``hidden_states[ℓ+1][0, -1]``
for every layer ℓ. Ours: :func:`trustdyn.activations.extract_activations` (length-sorted
left-padded batches, block hooks that keep only the pooled rows, base model without LM
head). Second baseline, the best a user could do with plain transformers: the same
length-sorted batches, left-padded by the tokenizer, through the base model (no LM head)
with ``output_hidden_states=True``. Same model, same statements, same process. Also timed, to
show where the gain comes from: ours with ``batch_size=1`` (batching alone) and ours
running the full model with its LM head (what skipping the head saves).

It prints the speed-up, the max abs difference between the two paths (layers 0..L-2: the
last entry of transformers' ``hidden_states`` has the final norm applied, so it is not the
last block's output), and the achieved FLOP rate (2 × non-embedding parameters × tokens
processed, padding included) against this machine's measured float32 matmul peak.

Model: SmolLM2-135M-Instruct if its converted folder exists under
``data/generated/models/smollm2-135m-instruct``, else a random Llama of the same shape.
Statements: a seeded sample of the vendored probe CSVs in ``data/probe``.

    python -m bench.bench_extraction [--n 200] [--batch-size 32] [--repeats 1] [--skip-variants]
"""

from __future__ import annotations

import argparse
import csv
import importlib
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import nn

from bench.common import (
    contention_note,
    interleaved_medians,
    matmul_peak_gflops,
    ratio,
    write_result,
)
from trustdyn import activations as act
from trustdyn.blocks import decoder_blocks
from trustdyn.paths import DATA_DIR, generated_dir

SMOLLM2_DIR = "models/smollm2-135m-instruct"
PROBE_FILES = ("truthfulqa_train.csv", "toxigen.csv", "confaide.csv", "stereoset.csv",
               "sst2.csv")
MAX_LENGTH = 256


def load_statements(n: int, seed: int = 0) -> list[str]:
    """Return ``n`` statements sampled (seeded) from the vendored probe CSVs."""
    pool: list[str] = []
    for name in PROBE_FILES:
        path = DATA_DIR / "probe" / name
        if path.exists():
            with path.open(newline="", encoding="utf-8") as fh:
                pool.extend(row["statement"] for row in csv.DictReader(fh) if row["statement"])
    if not pool:
        raise SystemExit(f"No probe CSVs under {DATA_DIR / 'probe'}; vendor the datasets first")
    return random.Random(seed).sample(pool, min(n, len(pool)))


def load_model() -> tuple[nn.Module, Any, str]:
    """Return (model, tokenizer, description): SmolLM2 if converted, else a same-shape Llama."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = generated_dir() / SMOLLM2_DIR
    if (folder / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        return model, AutoTokenizer.from_pretrained(folder), f"SmolLM2-135M-Instruct ({folder})"
    # Imported by name: the test helpers are not part of the typed package.
    tokenizer = importlib.import_module("tests.conftest").build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         tie_word_embeddings=True, pad_token_id=0)
    model = LlamaForCausalLM(config).eval()
    return model, tokenizer, "random Llama shaped like SmolLM2-135M (converted folder missing)"


def reference_loop(model: nn.Module, tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """The paper's approach: batch of one, full model, ``output_hidden_states=True``.

    Returns:
        ``[n_layers, n, d]`` float32: ``hidden_states[ℓ + 1][0, -1]`` per text.
    """
    n_layers = len(decoder_blocks(model))
    out: torch.Tensor | None = None
    with torch.no_grad():
        for i, text in enumerate(texts):
            enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=MAX_LENGTH)
            hidden = model(**enc, output_hidden_states=True).hidden_states
            if out is None:
                out = torch.empty(n_layers, len(texts), hidden[0].shape[-1])
            for layer in range(n_layers):
                out[layer, i] = hidden[layer + 1][0, -1].float()
    assert out is not None
    return out


def batched_reference(model: nn.Module, tokenizer: Any, texts: list[str], batch_size: int
                      ) -> torch.Tensor:
    """Plain transformers at its best: length-sorted, left-padded batches, no LM head.

    Returns:
        ``[n_layers, n, d]`` float32, like :func:`reference_loop`.
    """
    n_layers = len(decoder_blocks(model))
    base = getattr(model, "base_model", model)
    ids = act.tokenize_left_truncated(tokenizer, texts, MAX_LENGTH)
    out: torch.Tensor | None = None
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        with torch.no_grad():
            for batch in act.length_sorted_batches([len(x) for x in ids], batch_size):
                enc = tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
                hidden = base(**enc, output_hidden_states=True).hidden_states
                if out is None:
                    out = torch.empty(n_layers, len(texts), hidden[0].shape[-1])
                for layer in range(n_layers):
                    out[layer, batch] = hidden[layer + 1][:, -1].float()
    finally:
        tokenizer.padding_side = side
    assert out is not None
    return out


def non_embedding_params(model: nn.Module) -> int:
    """Parameters of the decoder stack that every token passes through (no embeddings/head)."""
    base = getattr(model, "base_model", model)
    embedding = act.embedding_weight(model).numel()
    return sum(p.numel() for p in base.parameters()) - embedding


def padded_tokens(tokenizer: Any, texts: list[str], batch_size: int) -> tuple[int, int]:
    """Return (real tokens, tokens processed incl. padding) for ours' batching of ``texts``."""
    ids = act.tokenize_left_truncated(tokenizer, texts, MAX_LENGTH)
    lengths = [len(x) for x in ids]
    batches = act.length_sorted_batches(lengths, batch_size)
    return sum(lengths), sum(len(b) * max(lengths[i] for i in b) for b in batches)


def ours(model: nn.Module, tokenizer: Any, texts: list[str], batch_size: int,
         with_head: bool = False) -> Callable[[], act.Activations]:
    """Return a thunk running our extraction, optionally on the full model (LM head)."""

    def run() -> act.Activations:
        if not with_head:
            return act.extract_activations(model, tokenizer, texts, batch_size=batch_size,
                                           max_length=MAX_LENGTH)
        with mock.patch.object(act, "_forward_module", lambda m: m):
            return act.extract_activations(model, tokenizer, texts, batch_size=batch_size,
                                           max_length=MAX_LENGTH)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="statements (default 200)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1,
                        help="interleaved rounds; medians are reported (default 1)")
    parser.add_argument("--skip-variants", action="store_true",
                        help="time only the baseline and ours (no batch-1 / LM-head variants)")
    parser.add_argument("--out", type=Path, default=None, help="results folder override")
    args = parser.parse_args()

    torch.manual_seed(0)
    texts = load_statements(args.n)
    model, tokenizer, described = load_model()
    n_layers = len(decoder_blocks(model))
    print(f"model: {described}; {n_layers} layers; {len(texts)} statements; "
          f"torch threads {torch.get_num_threads()}")
    print(contention_note())

    # Warm-up both paths on a few statements (allocator, thread pools, lazy init).
    reference_loop(model, tokenizer, texts[:4])
    act.extract_activations(model, tokenizer, texts[:8], batch_size=args.batch_size)

    methods: dict[str, Callable[[], Any]] = {
        "baseline": lambda: reference_loop(model, tokenizer, texts),
        "ours": ours(model, tokenizer, texts, args.batch_size),
        "batched_baseline": lambda: batched_reference(model, tokenizer, texts, args.batch_size),
    }
    if not args.skip_variants:
        methods["ours_batch1"] = ours(model, tokenizer, texts, 1)
        methods["ours_with_lm_head"] = ours(model, tokenizer, texts, args.batch_size,
                                            with_head=True)
    seconds, outputs = interleaved_medians(methods, args.repeats)
    # The peak is measured before and after; the higher one is the less disturbed one.
    peak = max(matmul_peak_gflops(), matmul_peak_gflops())
    base_s, ours_s = seconds["baseline"], seconds["ours"]
    batched_s = seconds["batched_baseline"]
    reference, got = outputs["baseline"], outputs["ours"].blocks
    diff = float((got[:-1] - reference[:-1]).abs().max())
    scale = float(reference[:-1].abs().max())

    real, processed = padded_tokens(tokenizer, texts, args.batch_size)
    nonemb = non_embedding_params(model)
    vocab_flops = 2 * act.embedding_weight(model).numel() * real
    ours_gflops = 2 * nonemb * processed / ours_s / 1e9
    base_gflops = (2 * nonemb * real + vocab_flops) / base_s / 1e9
    results: dict[str, Any] = {
        "model": described, "n_statements": len(texts), "n_layers": n_layers,
        "batch_size": args.batch_size, "repeats": args.repeats,
        "non_embedding_params": nonemb, "real_tokens": real,
        "processed_tokens_incl_padding": processed, "padding_overhead": processed / real - 1,
        "seconds": seconds, "speedup": ratio(base_s, ours_s),
        "speedup_vs_batched_baseline": ratio(batched_s, ours_s),
        "max_abs_diff_batched_baseline": float(
            (outputs["batched_baseline"][:-1] - reference[:-1]).abs().max()),
        "max_abs_diff_layers_0_to_L-2": diff, "max_abs_activation": scale,
        "matmul_peak_gflops": peak, "ours_gflops": ours_gflops,
        "ours_fraction_of_peak": ours_gflops / peak,
        "baseline_gflops_incl_lm_head": base_gflops,
        "baseline_fraction_of_peak": base_gflops / peak,
    }
    print(f"float32 matmul peak (2048², best of 6): {peak:.1f} GFLOP/s")
    print(f"batched baseline (batch {args.batch_size}, base model, output_hidden_states): "
          f"{batched_s:8.2f} s → ours {results['speedup_vs_batched_baseline']:.2f}× faster")
    print(f"baseline (batch 1, full model, output_hidden_states): {base_s:8.2f} s")
    print(f"ours (batch {args.batch_size}, base model, block hooks):       {ours_s:8.2f} s"
          f"   → {results['speedup']:.1f}× faster")
    print(f"max |ours - baseline| over layers 0..L-2: {diff:.2e} (activations up to {scale:.1f}"
          f", relative {diff / scale:.1e})")
    print(f"tokens: {real} real, {processed} processed incl. padding "
          f"(+{100 * results['padding_overhead']:.1f}%)")
    print(f"achieved: ours {ours_gflops:.1f} GFLOP/s = {100 * ours_gflops / peak:.0f}% of the "
          f"matmul peak; baseline {base_gflops:.1f} GFLOP/s "
          f"({100 * base_gflops / peak:.0f}%, LM head counted)")
    if not args.skip_variants:
        one_s, head_s = seconds["ours_batch1"], seconds["ours_with_lm_head"]
        print(f"ours, batch 1 (hooks + no head, no batching): {one_s:8.2f} s "
              f"({ratio(base_s, one_s):.1f}× vs baseline)")
        print(f"ours, batch {args.batch_size} but full model with LM head:  {head_s:8.2f} s "
              f"(skipping the head saves {100 * (1 - ours_s / head_s):.0f}%)")
    print(contention_note())
    path = write_result("bench_extraction", results, args.out)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
