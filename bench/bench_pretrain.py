"""Benchmark: built-in pre-training throughput against this machine's matmul peak.

Builds a preset's model and optimiser exactly as the pre-training run does
(:func:`trustdyn.suites.builtin_train.build_model` / ``build_optimizer``) and times
steady-state steps of its :func:`~trustdyn.suites.builtin_train.optimizer_step`
(forward, backward, clipping, AdamW) on random blocks of the preset's shape,
after a warm-up. Reports tokens/s and the achieved rate in GFLOP/s — ``6 N`` per token for
the ``N`` weights every token multiplies (the tied output projection included, the
embedding lookup not) plus ``6 L T d`` for attention scores and values (``T`` the block
length, half of it on average under the causal mask) — as a fraction of the float32
matmul peak measured in the same process (best of two). Checkpoint saves and held-out
evaluations are left out: they are the run's stalls, not its steady state. Two what-ifs
are timed beside the run's own step: a fused AdamW and a doubled batch.

    python -m bench.bench_pretrain [--preset default] [--steps 30]

Writes ``bench/results/bench_pretrain.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import torch

from bench.common import contention_note, matmul_peak_gflops, write_result
from trustdyn.suites.builtin_presets import Preset, get_preset
from trustdyn.suites.builtin_train import build_model, build_optimizer, optimizer_step


class _Vocabulary:
    """The part of a tokenizer :func:`build_model` reads: a size and special ids."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pad_token_id, self.bos_token_id, self.eos_token_id = 0, 1, 2

    def __len__(self) -> int:
        return self.size


def flops_per_token(preset: Preset, vocab: int) -> float:
    """Return training FLOPs per token: 6 per multiplied weight, plus attention."""
    head_dim = preset.hidden // preset.heads
    attention = preset.hidden * (preset.hidden + 2 * preset.kv_heads * head_dim
                                 + preset.hidden)
    mlp = 3 * preset.hidden * preset.intermediate
    weights = preset.layers * (attention + mlp) + preset.hidden * vocab
    scores = preset.layers * preset.seq_len * preset.hidden  # causal: T/2 keys, QK and AV
    return 6.0 * weights + 6.0 * scores


VARIANTS: dict[str, dict[str, Any]] = {
    "as run": {},
    "fused AdamW": {"fused": True},
    "batch x2": {"batch_scale": 2},
}
"""What the steady state would gain from each change (measured, not applied)."""


def time_steps(preset: Preset, steps: int, warmup: int = 3, *, fused: bool = False,
               batch_scale: int = 1) -> float:
    """Return the median seconds of one optimiser step over ``steps`` timed steps.

    ``fused`` swaps in a fused AdamW with the same hyper-parameters; ``batch_scale``
    multiplies the batch (a what-if for throughput; the run's numbers would change).
    """
    model = build_model(preset, _Vocabulary(preset.vocab))  # type: ignore[arg-type]
    model.train()
    optimizer = build_optimizer(model, preset)
    if fused:
        optimizer = torch.optim.AdamW(optimizer.param_groups, fused=True)
    preset = dataclasses.replace(preset, batch_size=preset.batch_size * batch_scale)
    gen = torch.Generator().manual_seed(0)
    times = []
    for step in range(warmup + steps):
        batch = torch.randint(3, preset.vocab, (preset.batch_size, preset.seq_len),
                              generator=gen)
        start = time.perf_counter()
        optimizer_step(model, optimizer, batch)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    preset = get_preset(args.preset)
    print(contention_note())
    peak = max(matmul_peak_gflops(), matmul_peak_gflops())
    per_token = flops_per_token(preset, preset.vocab)
    result: dict[str, Any] = {
        "preset": preset.name, "batch_size": preset.batch_size, "seq_len": preset.seq_len,
        "flops_per_token": per_token, "matmul_peak_gflops": peak,
        "threads": torch.get_num_threads(), "variants": {},
    }
    print(f"float32 matmul peak {peak:.1f} GFLOP/s; {preset.name}: {per_token / 1e6:.2f} "
          "MFLOP per token")
    for name, options in VARIANTS.items():
        step_s = time_steps(preset, args.steps, **options)
        tokens = preset.batch_size * options.get("batch_scale", 1) * preset.seq_len
        gflops = tokens * per_token / step_s / 1e9
        result["variants"][name] = {"step_seconds": step_s, "tokens_per_s": tokens / step_s,
                                    "achieved_gflops": gflops, "fraction_of_peak": gflops / peak}
        print(f"  {name:12s} {tokens / step_s:9,.0f} tokens/s ({1000 * step_s:6.1f} ms per "
              f"step of {tokens:,} tokens) = {100 * gflops / peak:3.0f}% of the peak")
    result.update(result["variants"]["as run"])
    print(f"wrote {write_result('bench_pretrain', result)}")
    return result


if __name__ == "__main__":
    main()
