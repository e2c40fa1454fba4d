"""Benchmark: cost of the information estimators per (checkpoint, layer) cell, with nulls.

Times :func:`trustdyn.information.information_grid` on synthetic activations shaped like
the default study's (n = 256 statements, L = 6 layers, widths d = 128 and 576) for each
estimator alone and together, with the study's 20 permutations, without and with the 20
half-samples behind the standard errors (the cost increase they bring is printed),
single-threaded and on 2 worker threads. The baseline is the naive
route — the standalone estimators plus :func:`permutation_null`, which rebuilds every
Gram matrix and spectrum per call — timed on one layer; the ratio shows what sharing
Grams/spectra across layers, quantities and permutations buys. It then projects the
grid cost onto the default study (25 checkpoints × 5 datasets, a 2-minute budget) and
prints how the normalised HSIC and the Rényi MI move with the kernel width, against the
reference code's fixed width (σ = 50·√d) when the activations' scale changes.

Timings are wall-clock medians over interleaved repeats; on a shared machine use more
``--repeats`` and read the ratios rather than the absolute numbers.

    python -m bench.bench_information --repeats 3 --json /tmp/info.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustdyn.information import (
    hsic_sensitivity,
    information_grid,
    kernel_width,
    normalised_hsic,
    permutation_null,
    renyi_mutual_information,
)
from trustdyn.information.grid import single_intra_op_thread

STUDY_GRIDS = 25 * 5  # checkpoints × datasets in the default study
STUDY_BUDGET_S = 120.0


def environment() -> dict[str, Any]:
    """Return what the numbers depend on: versions, CPU, threads, load."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average_1m": load[0],
    }


def synthetic(n: int, d: int, n_layers: int, seed: int
              ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Anisotropic 'embeddings' X ``[n, d]``, layers ``[L, n, d]`` and binary labels ``[n]``.

    X has a power-law spectrum (like residual streams); each layer is a random nonlinear
    map of the previous one plus a growing label direction, so both quantities are > 0.
    """
    gen = torch.Generator().manual_seed(seed)
    spectrum = torch.arange(1, d + 1, dtype=torch.float32) ** -0.7
    x = torch.randn(n, d, generator=gen) * spectrum
    y = torch.randint(0, 2, (n,), generator=gen)
    direction = torch.randn(d, generator=gen)
    layers, h = [], x
    for layer in range(n_layers):
        w = torch.randn(d, d, generator=gen) / math.sqrt(d)
        h = h + torch.tanh(h @ w) + 0.05 * layer * (2 * y[:, None] - 1) * direction
        layers.append(h)
    return torch.stack(layers), x, y.numpy()


def naive_layer(x: torch.Tensor, t: torch.Tensor, y: np.ndarray, n_permutations: int) -> None:
    """Baseline: one layer's four estimates and nulls through the standalone functions."""
    for est in (renyi_mutual_information, normalised_hsic):
        for first, second in ((x, t), (t, y)):
            est(first, second)
            permutation_null(est, first, second, n_permutations=n_permutations)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Return (wall seconds, process CPU seconds) of one call.

    CPU time is the contention-robust number for single-threaded work on a shared machine
    (it approximates the uncontended wall time); wall time is what a user waits.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def time_conditions(conditions: dict[str, Callable[[], object]], repeats: int
                    ) -> dict[str, dict[str, float]]:
    """Median wall/CPU seconds per condition, interleaved round-robin with a rotating order."""
    names = list(conditions)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for name in names:  # warm-up (allocator, lazy imports)
        conditions[name]()
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            samples[name].append(timed(conditions[name]))
    return {name: {"wall": statistics.median(w for w, _ in v),
                   "cpu": statistics.median(c for _, c in v)} for name, v in samples.items()}


def bench_dimension(d: int, args: argparse.Namespace) -> dict[str, Any]:
    blocks, x, y = synthetic(args.n, d, args.layers, args.seed)
    perms = args.permutations

    def grid(estimators: tuple[str, ...], workers: int, resamples: int = 0
             ) -> Callable[[], object]:
        return lambda: information_grid(blocks, x, y, n_permutations=perms, seed=args.seed,
                                        estimators=estimators, workers=workers,
                                        n_resamples=resamples)

    def naive() -> None:
        with single_intra_op_thread():
            naive_layer(x, blocks[0], y, perms)

    both, every = ("renyi", "nhsic"), ("renyi", "nhsic", "nhsic_paper")
    r = args.resamples
    conditions = {
        "grid renyi (1 thread)": grid(("renyi",), 1),
        "grid nhsic (1 thread)": grid(("nhsic",), 1),
        "grid nhsic_paper (1 thread)": grid(("nhsic_paper",), 1),
        "grid both (1 thread)": grid(both, 1),
        f"grid both + {r} halves (1 thread)": grid(both, 1, r),
        "grid all 3 (1 thread)": grid(every, 1),
        f"grid all 3 + {r} halves (1 thread)": grid(every, 1, r),
        f"grid all 3 + {r} halves (2 workers)": grid(every, 2, r),
    }
    seconds = time_conditions(conditions, args.repeats)
    # The naive route is one layer (the grid does L); scale it to a grid.
    naive_runs = [timed(naive) for _ in range(max(1, args.repeats // 2))]
    seconds["naive standalone + nulls (1 thread)"] = {
        "wall": statistics.median(w for w, _ in naive_runs) * args.layers,
        "cpu": statistics.median(c for _, c in naive_runs) * args.layers,
    }
    base = seconds["grid both (1 thread)"]
    default = seconds[f"grid all 3 + {r} halves (1 thread)"]
    naive_cost = seconds["naive standalone + nulls (1 thread)"]
    print(f"\nd = {d}, n = {args.n}, L = {args.layers}, permutations = {perms}, "
          f"half-samples = {r}")
    print(f"  {'condition':<40}{'grid wall s':>12}{'grid CPU s':>12}{'cell wall ms':>13}"
          f"{'cell CPU ms':>12}")
    for name, s in seconds.items():
        print(f"  {name:<40}{s['wall']:>12.3f}{s['cpu']:>12.3f}"
              f"{s['wall'] / args.layers * 1e3:>13.1f}{s['cpu'] / args.layers * 1e3:>12.1f}")
    speedup = naive_cost["cpu"] / base["cpu"]
    print(f"  grid vs naive route (renyi + nhsic, CPU): {speedup:.1f}x less work")
    increase = {
        "half-samples, renyi + nhsic": seconds[f"grid both + {r} halves (1 thread)"]["cpu"]
        / base["cpu"] - 1,
        "half-samples, all 3": default["cpu"] / seconds["grid all 3 (1 thread)"]["cpu"] - 1,
        "nhsic_paper (no halves)": seconds["grid all 3 (1 thread)"]["cpu"] / base["cpu"] - 1,
        "default grid vs former default (both, no halves)": default["cpu"] / base["cpu"] - 1,
    }
    for name, frac in increase.items():
        print(f"  cost increase, {name}: {100 * frac:+.0f}% CPU")
    study = {k: default[k] * STUDY_GRIDS for k in ("wall", "cpu")}
    print(f"  default study ({STUDY_GRIDS} grids), single-threaded: {study['cpu']:.0f} s CPU "
          f"({study['cpu'] / STUDY_BUDGET_S:.2f} x the {STUDY_BUDGET_S:.0f} s budget; the "
          f"Rényi spectra split over 2 workers on 2 free cores), {study['wall']:.0f} s wall here")
    return {"d": d, "n": args.n, "layers": args.layers, "permutations": perms,
            "resamples": r, "grid_seconds": seconds, "speedup_vs_naive_cpu": speedup,
            "cost_increase_cpu": increase, "study_seconds": study}


def intra_op_threads(args: argparse.Namespace) -> dict[str, Any]:
    """Why the grid pins torch to one intra-op thread: batched n × n eigvalsh, 1 vs default."""
    gen = torch.Generator().manual_seed(args.seed)
    a = torch.randn(12, args.n, args.n, generator=gen, dtype=torch.float64)
    a = a @ a.transpose(1, 2)
    default = torch.get_num_threads()

    def with_threads(k: int) -> Callable[[], object]:
        def run() -> None:
            torch.set_num_threads(k)
            try:
                torch.linalg.eigvalsh(a)
            finally:
                torch.set_num_threads(default)
        return run

    seconds = time_conditions({"1 thread": with_threads(1),
                               f"{default} threads": with_threads(default)}, args.repeats)
    print(f"\nbatched eigvalsh of 12 x {args.n}x{args.n} float64, intra-op threads:")
    for name, s in seconds.items():
        print(f"  {name:<12} wall {s['wall'] * 1e3:8.1f} ms   CPU {s['cpu'] * 1e3:8.1f} ms")
    return seconds


def width_report(args: argparse.Namespace) -> list[dict[str, Any]]:
    """How nHSIC / Rényi I(T;Y) and I(X;T) move with width, vs a scale change."""
    d = args.dims[0]
    blocks, x, y = synthetic(args.n, d, args.layers, args.seed)
    t = blocks[-1]
    factors = [0.25, 0.5, 1.0, 2.0, 4.0]
    rows: list[dict[str, Any]] = []
    print(f"\nwidth sensitivity (last layer, d = {d}; widths are factors of the median rule)")
    print(f"  {'width':>8}{'nHSIC I(T;Y)':>14}{'nHSIC I(X;T)':>14}{'Renyi I(T;Y)':>14}"
          f"{'Renyi I(X;T)':>14}")
    s_x, s_t = kernel_width(x), kernel_width(t)
    hsic_ty = hsic_sensitivity(t, y, factors)
    hsic_xt = hsic_sensitivity(x, t, factors)
    for f, ty, xt in zip(factors, hsic_ty, hsic_xt, strict=True):
        r_ty = renyi_mutual_information(t, y, sigma_a=f * s_t)
        r_xt = renyi_mutual_information(x, t, sigma_a=f * s_x, sigma_b=f * s_t)
        print(f"  {f:>8.2f}{ty.value:>14.3f}{xt.value:>14.3f}{r_ty:>14.3f}{r_xt:>14.3f}")
        rows.append({"width_factor": f, "nhsic_ty": asdict(ty), "nhsic_xt": asdict(xt),
                     "renyi_ty": r_ty, "renyi_xt": r_xt})
    paper = 50.0 * math.sqrt(d)
    print(f"\nscale change (activations × c): median rule vs the reference's fixed σ = 50·√d "
          f"= {paper:.0f}")
    print(f"  {'c':>8}{'nHSIC rule':>14}{'nHSIC fixed':>14}{'Renyi rule':>14}{'Renyi fixed':>14}")
    for c in (0.1, 1.0, 10.0, 100.0):
        rule = normalised_hsic(c * t, y)
        fixed = normalised_hsic(c * t, y, sigma_x=paper)
        r_rule = renyi_mutual_information(c * t, y)
        r_fixed = renyi_mutual_information(c * t, y, sigma_a=paper)
        print(f"  {c:>8.1f}{rule:>14.3f}{fixed:>14.3f}{r_rule:>14.3f}{r_fixed:>14.3f}")
        rows.append({"scale": c, "nhsic_rule": rule, "nhsic_fixed": fixed,
                     "renyi_rule": r_rule, "renyi_fixed": r_fixed})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 576])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--permutations", type=int, default=20)
    parser.add_argument("--resamples", type=int, default=20, help="half-samples for the se")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    parser.add_argument("--threaded", action="store_true",
                        help="also time batched eigvalsh with torch's own intra-op threads")
    args = parser.parse_args()

    env = environment()
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    cells = [bench_dimension(d, args) for d in args.dims]
    intra_op = intra_op_threads(args) if args.threaded else None
    with single_intra_op_thread():
        widths = width_report(args)
    results = {"environment": env, "cells": cells, "width_sensitivity": widths,
               "intra_op_threads": intra_op}
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
