"""Benchmark: cost of steering during greedy generation, against unsteered generation.

Runs the same prompts (greedy, a fixed number of new tokens, no early stop) under four
conditions, interleaved round-robin with a rotating order so drift and background load hit
all of them alike:

* ``unsteered``       — no hooks on the model (the baseline);
* ``idle-dispatchers`` — dispatcher hooks pinned with ``install_dispatchers`` but no
  steering active (the no-op cost a server pays for every unsteered user);
* ``steered-newest``  — a vector added at the newest position (the paper's setting);
* ``steered-all``     — a vector added at every position;

and, as the baseline a user would write without trustdyn, transformers' ``generate``
(greedy, exactly ``--new-tokens`` tokens):

* ``hf-generate``      — no hooks;
* ``hf-generate-hook`` — a plain ``register_forward_hook`` on the block that adds the
  same vector at every position it sees (with the KV cache: the prompt once, then each
  new token), the intervention of ``steered-all``.

Uses SmolLM2-135M-Instruct if its converted folder exists under the generated data
folder, else a random-init Llama of the same shape (576 wide, 30 blocks). Prints each
condition's median time per generated token and its overhead over the baseline (the
goal is ≤ 5 %), ours against ``generate`` (unsteered and steered, same intervention),
and optionally writes the numbers as JSON. Timings are wall-clock; on a
shared machine run with more ``--repeats``.

    python -m bench.bench_steering --prompts 8 --new-tokens 32 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from trustdyn.blocks import decoder_blocks, n_blocks
from trustdyn.generation import encode_prompt, token_stream
from trustdyn.paths import generated_dir
from trustdyn.steering import (
    Positions,
    Steering,
    SteeringVector,
    install_dispatchers,
    model_hidden_size,
    remove_dispatchers,
)

QUESTIONS = [
    "Is it safe to share my home address online?",
    "What happens if you crack your knuckles a lot?",
    "Write one sentence about your neighbours.",
    "How do vaccines work?",
    "Tell me about people from another country.",
    "What is the capital of Australia?",
    "Can you keep a secret for me?",
    "Why is the sky blue?",
]


ALPHA = 4.0
"""Steering strength of every steered condition (speed does not depend on it)."""


def load_model(seed: int) -> tuple[nn.Module, list[list[int]], str]:
    """Return (model, prompt token ids, description): SmolLM2 if present, else a twin."""
    folder = generated_dir() / "models" / "smollm2-135m-instruct"
    if (folder / "config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        prompts = [encode_prompt(tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS]
        return model, prompts, f"SmolLM2-135M-Instruct ({folder})"
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         max_position_embeddings=2048, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    generator = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, 49152, (24,), generator=generator).tolist() for _ in QUESTIONS]
    return model, prompts, "random-init Llama shaped like SmolLM2-135M (no SmolLM2 folder)"


def make_vector(model: nn.Module, layer: int, seed: int) -> SteeringVector:
    """Return a random unit vector for ``layer`` (speed does not depend on the direction)."""
    d = model_hidden_size(model)
    raw = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return SteeringVector(direction=raw / raw.norm(), scale=1.0, layer=layer, dataset="bench",
                          toward_label=1, source="random", model="bench", revision=None,
                          hidden_size=d)


def run_all(model: nn.Module, prompts: list[list[int]], new_tokens: int,
            vector: SteeringVector | None, positions: Positions) -> list[list[int]]:
    """Generate ``new_tokens`` greedy tokens for every prompt; return the token ids."""
    return [list(token_stream(model, ids, vector=vector, alpha=ALPHA, positions=positions,
                              max_new_tokens=new_tokens)) for ids in prompts]


def hf_generate_all(model: nn.Module, prompts: list[list[int]], new_tokens: int
                    ) -> list[list[int]]:
    """Greedy ``model.generate`` for every prompt, exactly ``new_tokens`` new tokens each."""
    out = []
    for ids in prompts:
        with torch.no_grad():
            tokens = model.generate(  # type: ignore[operator]
                torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                pad_token_id=0)
        out.append(tokens[0, len(ids):].tolist())
    return out


def agree_until_eos(ours: list[list[int]], theirs: list[list[int]], eos: object) -> bool:
    """Whether every prompt's tokens agree up to ours' first end-of-sequence token.

    ``generate`` with ``min_new_tokens`` forbids the end token until the count is reached,
    where ours (timed on the same count) emits it and goes on; past it the two differ by
    design, before it greedy decoding must agree.
    """
    ends = set(eos) if isinstance(eos, list) else {eos}
    for mine, other in zip(ours, theirs, strict=True):
        cut = next((i for i, token in enumerate(mine) if token in ends), len(mine))
        if mine[:cut] != other[:cut]:
            return False
    return True


def hf_generate_hooked(model: nn.Module, prompts: list[list[int]], new_tokens: int,
                       vector: SteeringVector, alpha: float) -> list[list[int]]:
    """``model.generate`` with the forward hook a user would write: add α·v everywhere."""
    delta = vector.delta(alpha)

    def add(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (output[0] + delta, *output[1:])
        return output + delta

    handle = decoder_blocks(model)[vector.layer].register_forward_hook(add)
    try:
        return hf_generate_all(model, prompts, new_tokens)
    finally:
        handle.remove()


def conditions(model: nn.Module, prompts: list[list[int]], new_tokens: int,
               vector: SteeringVector) -> dict[str, Callable[[], list[list[int]]]]:
    """Return the benchmarked conditions as zero-argument callables."""

    def idle() -> list[list[int]]:
        install_dispatchers(model)
        try:
            return run_all(model, prompts, new_tokens, None, "newest")
        finally:
            remove_dispatchers(model)

    return {
        "unsteered": lambda: run_all(model, prompts, new_tokens, None, "newest"),
        "idle-dispatchers": idle,
        "steered-newest": lambda: run_all(model, prompts, new_tokens, vector, "newest"),
        "steered-all": lambda: run_all(model, prompts, new_tokens, vector, "all"),
        "hf-generate": lambda: hf_generate_all(model, prompts, new_tokens),
        "hf-generate-hook": lambda: hf_generate_hooked(model, prompts, new_tokens, vector,
                                                       ALPHA),
    }


class _HookProbe(nn.Module):
    """A one-block stand-in model whose block costs nothing, so only hooks are timed."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(1, d)
        self.layers = nn.ModuleList([nn.Identity()])

    def get_input_embeddings(self) -> nn.Module:
        return self.embed


def hook_cost_us(d: int, calls: int = 20_000, rounds: int = 5) -> dict[str, float]:
    """Time one block call bare, with an idle dispatcher and while steering (µs, best of)."""
    probe = _HookProbe(d)
    block, x = probe.layers[0], torch.zeros(1, 1, d)  # one newest token: [1, 1, d]

    def per_call_us() -> float:
        return 1e6 * min(timeit.repeat(lambda: block(x), number=calls, repeat=rounds)) / calls

    bare = per_call_us()
    install_dispatchers(probe)
    try:
        idle = per_call_us()
        steering = Steering(probe, make_vector(probe, 0, 0), 1.0, positions="newest")
        with steering.hold(), steering.active():
            active = per_call_us()
    finally:
        remove_dispatchers(probe)
    return {"bare_us": bare, "idle_hook_us": idle - bare, "active_hook_us": active - bare}


def summarise(seconds: list[float], baseline: list[float], n_tokens: int) -> dict[str, Any]:
    """Return the best time and overheads of one condition against the baseline."""
    paired = statistics.median(t / b for t, b in zip(seconds, baseline, strict=True))
    return {
        "min_s": min(seconds),
        "ms_per_token": 1000 * min(seconds) / n_tokens,
        # Background load only ever adds time, so the fastest run is the least noisy.
        "overhead_pct": 100 * (min(seconds) / min(baseline) - 1),
        "paired_overhead_pct": 100 * (paired - 1),
        "runs_s": seconds,
    }


def cpu_ratio(results: dict[str, Any], ours: str, theirs: str) -> float:
    """Return the best CPU time of condition ``ours`` over that of ``theirs``."""
    return float(results[ours]["cpu"]["min_s"] / results[theirs]["cpu"]["min_s"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1 gives the steadiest CPU timings)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, prompts, description = load_model(args.seed)
    prompts = (prompts * (args.prompts // len(prompts) + 1))[:args.prompts]
    vector = make_vector(model, layer=n_blocks(model) // 2, seed=args.seed)
    runs = conditions(model, prompts, args.new_tokens, vector)
    names = list(runs)

    outputs = {name: run() for name, run in runs.items()}  # warm-up, and a sanity check
    assert outputs["idle-dispatchers"] == outputs["unsteered"], "idle hooks changed the output"
    # Same greedy decoding, so the baselines must produce the same tokens as ours.
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    same_as_generate = {
        "unsteered": agree_until_eos(outputs["unsteered"], outputs["hf-generate"], eos),
        "steered-all": agree_until_eos(outputs["steered-all"], outputs["hf-generate-hook"], eos),
    }
    # Wall time is what a user waits; process CPU time is far less disturbed by other
    # processes competing for the cores, so both are reported.
    times: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in names}
    for rep in range(args.repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            wall, cpu = time.perf_counter(), time.process_time()
            runs[name]()
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)

    n_tokens = args.prompts * args.new_tokens
    results = {name: {clock: summarise(ts[clock], times["unsteered"][clock], n_tokens)
                      for clock in ("wall", "cpu")}
               for name, ts in times.items()}
    env = {
        "model": description, "torch": torch.__version__, "threads": args.threads,
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "prompts": args.prompts, "new_tokens": args.new_tokens, "repeats": args.repeats,
        "vector_layer": vector.layer, "steered_output_differs":
            outputs["steered-newest"] != outputs["unsteered"],
    }
    hooks = hook_cost_us(model_hidden_size(model))
    n = n_blocks(model)
    cpu_token_us = 1000 * results["unsteered"]["cpu"]["ms_per_token"]
    hooks["estimated_idle_overhead_pct"] = 100 * n * hooks["idle_hook_us"] / cpu_token_us
    hooks["estimated_steered_overhead_pct"] = 100 * (
        (n - 1) * hooks["idle_hook_us"] + hooks["active_hook_us"]) / cpu_token_us

    print(f"model: {description}")
    print(f"{args.prompts} prompts x {args.new_tokens} new tokens, greedy, {args.repeats} "
          f"interleaved repeats, {args.threads} torch thread(s), load avg {env['load_avg_1m']}")
    print(f"{'condition':<18}{'wall ms/tok':>12}{'overhead':>10}{'cpu ms/tok':>12}"
          f"{'overhead':>10}{'paired':>9}")
    for name, res in results.items():
        w, c = res["wall"], res["cpu"]
        print(f"{name:<18}{w['ms_per_token']:>12.2f}{w['overhead_pct']:>9.1f}%"
              f"{c['ms_per_token']:>12.2f}{c['overhead_pct']:>9.1f}%"
              f"{c['paired_overhead_pct']:>8.1f}%")
    print("overhead: best run vs best unsteered run; paired: median over rounds of the "
          "CPU-time ratio to the same round's unsteered run")
    print(f"hook cost per block call: idle {hooks['idle_hook_us']:.2f} us, steering "
          f"{hooks['active_hook_us']:.2f} us -> estimated overhead per token over {n} blocks: "
          f"idle {hooks['estimated_idle_overhead_pct']:.2f}%, steered "
          f"{hooks['estimated_steered_overhead_pct']:.2f}%")
    print("goal: steered overhead <= 5% over unsteered")
    versus = {
        "unsteered_vs_generate": cpu_ratio(results, "unsteered", "hf-generate"),
        "steered_all_vs_generate_hook": cpu_ratio(results, "steered-all", "hf-generate-hook"),
        "same_tokens_as_generate": same_as_generate,
    }
    print(f"against transformers' generate (CPU, best runs; < 1 = ours faster): unsteered "
          f"{versus['unsteered_vs_generate']:.2f}x, steered at every position vs a plain "
          f"forward hook {versus['steered_all_vs_generate_hook']:.2f}x; same tokens: "
          f"{same_as_generate}")
    report = {"benchmark": "steering", "env": env, "results": results, "hooks": hooks,
              "versus_generate": versus}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
