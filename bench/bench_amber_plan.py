"""Benchmark: the cost of one Amber-sized checkpoint through the real pipeline, for planning.

The paper's scale is 360 checkpoints of LLM360 Amber (Llama, 32 layers, hidden 4096,
6.7B parameters). Amber's weights cannot be downloaded where this runs, so the model is a
random-init Llama with Amber's exact shape (random weights cost the same FLOPs), saved to
local disk as safetensors and then taken through
:func:`precompute.pipeline.compute_checkpoint` — load, extraction, probe grid, information
grid and vectors for every dataset of a public-suite study (the paper's five and the
generated ``sentences``) at its sizes (every row, :data:`precompute.study.PUBLIC_SIZES`) —
exactly
what a Ray task or a ``--shard`` process does per checkpoint. The tokenizer is
SmolLM2's (a BPE of similar granularity to Llama's; Amber's is not available offline).

Also measured, to say how close to the hardware limit the extraction runs: extraction
throughput on the largest dataset alone, as tokens/s and achieved FLOP/s against this
machine's measured dense matmul peak in the model's dtype.

Results go to ``bench/results/bench_amber_plan.json``; the README's Amber plan multiplies
the per-checkpoint time by 360.

    python -m bench.bench_amber_plan                # an Amber-shaped model on CUDA, bfloat16
    python -m bench.bench_amber_plan --tiny         # a 4-layer model: checks the script
"""

from __future__ import annotations

import argparse
import math
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from bench.common import matmul_peak_gflops, write_result
from precompute.pipeline import CheckpointJob, UnitResult, compute_checkpoint
from precompute.stages import prepare_dataset
from precompute.study import study_config
from trustdyn.activations import extract_activations, tokenize_left_truncated
from trustdyn.paths import generated_dir
from trustdyn.suites import CheckpointRef, LoadOptions, Suite, load_checkpoint

AMBER_SHAPE: dict[str, Any] = {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
    "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
}
TINY_SHAPE: dict[str, Any] = {**AMBER_SHAPE, "hidden_size": 256, "intermediate_size": 688,
                              "num_hidden_layers": 4, "num_attention_heads": 4,
                              "num_key_value_heads": 4}
N_CHECKPOINTS = 360


def build_checkpoint(folder: Path, tokenizer_dir: Path, shape: dict[str, Any],
                     dtype: torch.dtype, device: str) -> tuple[int, int]:
    """Save a random-init Llama of ``shape`` with the tokenizer.

    Returns:
        ``(parameters, block parameters)``: all of them, and those outside the embedding
        and the LM head (what a forward pass without the head multiplies per token).
    """
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(**{**shape, "vocab_size": max(shape["vocab_size"], len(tokenizer))},
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    n_params = sum(p.numel() for p in model.parameters())
    outside_blocks = (model.get_input_embeddings().weight.numel()
                      + model.get_output_embeddings().weight.numel())
    del model
    return n_params, n_params - outside_blocks


def time_pipeline(folder: Path, device: str, dtype: str, n_per_dataset: int | None
                  ) -> dict[str, Any]:
    """Run compute_checkpoint on the saved model; return wall seconds per step."""
    config = study_config(None, device=device, dtype=dtype, batch_size=64,
                          n_per_dataset=n_per_dataset)
    ref = CheckpointRef(suite="amber-shaped", name="ckpt-000", step=0, source=str(folder))
    suite = Suite(name="amber-shaped", description="random Amber-shaped Llama",
                  checkpoints=(ref,))
    datasets = [prepare_dataset(name, config) for name in config.datasets]
    todo = tuple((d, stage) for d in datasets for stage in config.stages)
    units: dict[str, float] = {}
    start = last = time.perf_counter()
    load_s = math.nan
    for result in compute_checkpoint(CheckpointJob(suite, ref, todo), config):
        now = time.perf_counter()
        if isinstance(result, UnitResult):
            label = f"{result.unit.dataset}/{result.unit.stage}"
            units[label] = round(now - last, 3)
        else:
            label, load_s = "load + weight hash", now - last
        print(f"  {label}: {now - last:.2f} s", flush=True)
        last = now
    by_stage = {stage: round(sum(s for k, s in units.items() if k.endswith(f"/{stage}")), 2)
                for stage in config.stages}
    return {
        "statements": sum(len(d.dataset.texts) for d in datasets),
        "load_s": round(load_s, 2),
        "units_s": units,
        "by_stage_s_first_includes_extraction": by_stage,
        "checkpoint_total_s": round(last - start, 2),
    }


def time_extraction(folder: Path, device: str, dtype: torch.dtype, block_params: int,
                    n_statements: int) -> dict[str, Any]:
    """Extraction alone on the largest dataset: tokens/s and achieved FLOP/s vs peak."""
    ref = CheckpointRef(suite="amber-shaped", name="ckpt-000", step=0, source=str(folder))
    model, tokenizer = load_checkpoint(
        ref, LoadOptions(device=device, dtype=str(dtype).removeprefix("torch.")))
    texts = list(prepare_dataset("toxigen", study_config(None)).dataset.texts)
    texts = texts[:n_statements]
    tokens = sum(len(ids) for ids in tokenize_left_truncated(tokenizer, texts, 128))
    extract_activations(model, tokenizer, texts[:64], batch_size=64, max_length=128)  # warm-up
    _sync(device)
    start = time.perf_counter()
    extract_activations(model, tokenizer, texts, batch_size=64, max_length=128)
    _sync(device)
    seconds = time.perf_counter() - start
    # Forward FLOPs ~ 2 x non-embedding parameters per token (the LM head is skipped).
    flops = 2 * block_params * tokens
    peak = (_cuda_peak_tflops(dtype) if device == "cuda"
            else matmul_peak_gflops(dtype=dtype) / 1e3)
    achieved = flops / seconds / 1e12
    return {
        "statements": len(texts), "real_tokens": tokens, "seconds": round(seconds, 2),
        "statements_per_s": round(len(texts) / seconds, 1),
        "tokens_per_s": round(tokens / seconds),
        "achieved_tflops_real_tokens": round(achieved, 3),
        "matmul_peak_tflops": round(peak, 3),
        "fraction_of_peak": round(achieved / peak, 3),
    }


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _cuda_peak_tflops(dtype: torch.dtype, size: int = 8192, repeats: int = 10) -> float:
    a = torch.randn(size, size, device="cuda", dtype=dtype)
    b = torch.randn(size, size, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def plan(pipeline: dict[str, Any]) -> dict[str, Any]:
    """Scale one checkpoint's measured cost to the paper's 360 checkpoints."""
    per_ckpt = pipeline["checkpoint_total_s"]
    return {
        "checkpoints": N_CHECKPOINTS,
        "seconds_per_checkpoint": per_ckpt,
        "gpu_hours_total": round(per_ckpt * N_CHECKPOINTS / 3600, 2),
        "note": "local-disk load; add hub download time (13.5 GB per bf16 checkpoint)",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true",
                        help="a 4-layer model of width 256: checks the script in seconds")
    parser.add_argument("--tokenizer", type=Path,
                        default=generated_dir() / "models" / "smollm2-135m-instruct")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the model is saved (default: a temporary folder)")
    parser.add_argument("--n-per-dataset", type=int, default=None,
                        help="rows per dataset (default: every row, as a public-suite study)")
    parser.add_argument("--extract-n", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    shape = TINY_SHAPE if args.tiny else AMBER_SHAPE
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="amber-plan-"))
    folder = workdir / "ckpt-000"
    try:
        start = time.perf_counter()
        n_params, block_params = build_checkpoint(folder, args.tokenizer, shape, dtype, device)
        build_s = time.perf_counter() - start
        print(f"built and saved {n_params / 1e9:.2f}B parameters in {build_s:.1f} s")
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        pipeline = time_pipeline(folder, device, str(dtype).removeprefix("torch."),
                                 args.n_per_dataset)
        print(f"pipeline, one checkpoint: {pipeline}")
        extraction = time_extraction(folder, device, dtype, block_params,
                                     args.extract_n)
        print(f"extraction alone: {extraction}")
        memory = {
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)
            if device == "cuda" else None,
            "checkpoint_disk_gb": round(sum(f.stat().st_size for f in folder.iterdir()) / 2**30,
                                        2),
        }
        result = {"shape": shape, "device": device, "dtype": str(dtype),
                  "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
                  "parameters": n_params, "save_s": round(build_s, 1), "pipeline": pipeline,
                  "extraction": extraction, "memory": memory, "plan": plan(pipeline)}
        print(f"memory: {memory}\nplan: {result['plan']}")
        name = "bench_amber_plan_tiny" if args.tiny else "bench_amber_plan"
        print(f"wrote {write_result(name, result, args.out)}")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
