"""Benchmark: the batched probe grid vs scikit-learn at its best, per fit and per grid.

Baseline (the headline): ``make_pipeline(StandardScaler(), LogisticRegression(max_iter=200,
tol=1e-4))`` — our objective, iteration cap and stopping rule — fitted per layer on the real
labels and again on the shuffled-label control, then test accuracy and ``roc_auc_score``,
as a careful user would run it: one thread per fit (no BLAS/OpenMP oversubscription) and
the layers spread over every core with joblib's process pool. Ours:
:func:`trustdyn.probes.fit_probe_grid` over all layers at once with the default torch
threads, timed twice: fits only (``n_bootstrap=0``: the same work as the baseline) and as
the pipeline runs it (plus 1000 bootstrap replicates, the cross-entropy and raw-space
directions). Two secondary pairs keep the other views: both single-threaded (the
algorithmic comparison) and, unless ``--skip-default-threads``, scikit-learn with its
default threading in one process (what an unconfigured loop gets; it oversubscribes a
shared machine and is not a fair baseline). Every pair runs in the same process on the same
data; per-fit times are a grid's time over its ``2 L`` fits (real labels and control).

It also prints the mean and max absolute difference in test accuracy between ours and
scikit-learn (percentage points).

Data: synthetic activations shaped like a residual stream (low-rank structure, a few
massive outlier dimensions, a label signal that grows with depth) with L=30, d=576 and
n=1000 train / 250 test rows by default, or ``--real N``: SmolLM2-135M-Instruct
activations of N statements of a vendored probe dataset (needs the converted model).

    python -m bench.bench_probes [--layers 30] [--d 576] [--n-train 1000] [--real 600]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bench.common import contention_note, median_time, ratio, thread_limit, write_result
from trustdyn.paths import DATA_DIR, generated_dir
from trustdyn.probes import fit_probe_grid

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def synthetic_activations(n_layers: int, n_train: int, n_test: int, d: int, seed: int = 0
                          ) -> Split:
    """Residual-stream-like activations ``[L, n, d]`` with a depth-growing label signal."""
    gen = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    y = torch.randperm(n, generator=gen) % 2  # balanced
    latent = torch.randn(n, 64, generator=gen)
    direction = torch.nn.functional.normalize(torch.randn(d, generator=gen), dim=0)
    outliers = torch.ones(d)
    outliers[torch.randperm(d, generator=gen)[:4]] = 50.0  # "massive activation" dims
    layers = []
    for layer in range(n_layers):
        mixing = torch.randn(64, d, generator=gen) / 8
        noise = torch.randn(n, d, generator=gen)
        signal = 0.15 * (layer + 1) / n_layers * (2 * y[:, None] - 1) * direction * d**0.5
        layers.append((latent @ mixing + noise + signal) * outliers)
    x = torch.stack(layers)
    return x[:, :n_train], y[:n_train], x[:, n_train:], y[n_train:]


def real_activations(n: int, dataset: str, seed: int = 0) -> tuple[Split, str]:
    """SmolLM2 activations of ``n`` balanced statements of ``dataset``, 80/20 split."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trustdyn.activations import extract_activations

    folder = generated_dir() / "models" / "smollm2-135m-instruct"
    if not (folder / "config.json").exists():
        raise SystemExit(f"--real needs the converted SmolLM2 folder at {folder}")
    with (DATA_DIR / "probe" / dataset).open(newline="", encoding="utf-8") as fh:
        rows = [(r["statement"], int(r["label"])) for r in csv.DictReader(fh) if r["statement"]]
    rng = random.Random(seed)
    by_class = [[r for r in rows if r[1] == c] for c in (0, 1)]
    picked = [r for group in by_class for r in rng.sample(group, n // 2)]
    rng.shuffle(picked)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    acts = extract_activations(model, tokenizer, [t for t, _ in picked], progress=True)
    y = torch.tensor([label for _, label in picked])
    cut = int(0.8 * len(picked))
    return ((acts.blocks[:, :cut], y[:cut], acts.blocks[:, cut:], y[cut:]),
            f"SmolLM2-135M-Instruct on {n} statements of {dataset}")


def _sklearn_layer(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                   y_test: np.ndarray, control_labels: np.ndarray) -> tuple[float, float, float]:
    """Fit one layer's probe and control as scikit-learn would; (accuracy, AUROC, control)."""
    scores = []
    for labels in (y_train, control_labels):
        pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200, tol=1e-4))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            pipe.fit(x_train, labels)
        scores.append(pipe)
    probe, control = scores
    return (float(probe.score(x_test, y_test)),
            float(roc_auc_score(y_test, probe.decision_function(x_test))),
            float(control.score(x_test, y_test)))


def _one_thread_layer(*args: np.ndarray) -> tuple[float, float, float]:
    """:func:`_sklearn_layer` in a worker whose native pools use one thread."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _sklearn_layer(*args)


def sklearn_grid(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                 y_test: np.ndarray, n_jobs: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Per layer: scikit-learn probe on real and on shuffled labels; accuracy and AUROC.

    ``n_jobs > 1`` spreads the layers over a joblib process pool, one thread per fit.
    """
    control_labels = np.random.default_rng(seed).permutation(y_train)
    layers = range(x_train.shape[0])
    if n_jobs == 1:
        rows = [_sklearn_layer(x_train[ell], y_train, x_test[ell], y_test, control_labels)
                for ell in layers]
    else:
        rows = joblib.Parallel(n_jobs=n_jobs, backend="loky")(
            joblib.delayed(_one_thread_layer)(x_train[ell], y_train, x_test[ell], y_test,
                                              control_labels) for ell in layers)
    accuracy, auroc, control = (np.asarray(column) for column in zip(*rows, strict=True))
    return {"accuracy": accuracy, "auroc": auroc, "control_accuracy": control}


def run_pair(data: Split, label: str, *, ours_threads: int | None, base_threads: int | None,
             n_jobs: int = 1) -> dict[str, Any]:
    """Time one scikit-learn setting against our grid (fits only, and as the pipeline runs)."""
    x_train, y_train, x_test, y_test = data
    np_data = (x_train.numpy(), y_train.numpy(), x_test.numpy(), y_test.numpy())
    fits = 2 * x_train.shape[0]
    with thread_limit(ours_threads):
        fit_probe_grid(x_train[:1], y_train, x_test[:1], y_test, n_bootstrap=10)  # warm-up
        fits_s, _ = median_time(lambda: fit_probe_grid(x_train, y_train, x_test, y_test,
                                                       n_bootstrap=0))
        ours_s, grid = median_time(lambda: fit_probe_grid(x_train, y_train, x_test, y_test))
    with thread_limit(base_threads):
        # Warm-up: the process pool starts once, as it would for a user's grid of grids.
        base_s, sk = median_time(lambda: sklearn_grid(*np_data, n_jobs=n_jobs),
                                 warmup=1 if n_jobs > 1 else 0)
    diff_pp = 100 * np.abs(grid.accuracy - sk["accuracy"])
    result = {
        "setting": label, "ours_threads": ours_threads or "default",
        "sklearn_threads_per_fit": base_threads or "default", "sklearn_jobs": n_jobs,
        "sklearn_seconds": base_s, "ours_fits_seconds": fits_s, "ours_seconds": ours_s,
        "sklearn_per_fit_ms": 1000 * base_s / fits, "ours_per_fit_ms": 1000 * fits_s / fits,
        "speedup_fits": ratio(base_s, fits_s), "speedup": ratio(base_s, ours_s),
        "mean_abs_accuracy_diff_pp": float(diff_pp.mean()),
        "max_abs_accuracy_diff_pp": float(diff_pp.max()),
        "mean_abs_auroc_diff": float(np.abs(grid.auroc - sk["auroc"]).mean()),
        "ours_max_iter_used": int(grid.n_iter.max()), "ours_all_converged": bool(
            grid.converged.all()),
        "ours_accuracy": grid.accuracy, "sklearn_accuracy": sk["accuracy"],
        "ours_control_accuracy": grid.control_accuracy,
        "sklearn_control_accuracy": sk["control_accuracy"],
    }
    print(f"[{label}] scikit-learn {base_s:6.2f} s ({result['sklearn_per_fit_ms']:.1f} ms/fit) "
          f"| ours, fits only {fits_s:5.2f} s ({result['ours_per_fit_ms']:.1f} ms/fit) → "
          f"{result['speedup_fits']:.2f}× | ours + 1000 bootstraps {ours_s:5.2f} s → "
          f"{result['speedup']:.2f}× | accuracy diff mean "
          f"{result['mean_abs_accuracy_diff_pp']:.2f} pp, max "
          f"{result['max_abs_accuracy_diff_pp']:.2f} pp")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--d", type=int, default=576)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=250)
    parser.add_argument("--real", type=int, default=0, metavar="N",
                        help="use SmolLM2 activations of N statements instead of synthetic")
    parser.add_argument("--dataset", default="toxigen.csv", help="probe CSV for --real")
    parser.add_argument("--skip-default-threads", action="store_true",
                        help="only run the single-threaded pair (the default-thread sklearn "
                             "loop can take minutes on a contended machine)")
    parser.add_argument("--out", type=Path, default=None, help="results folder override")
    args = parser.parse_args()

    if args.real:
        data, described = real_activations(args.real, args.dataset)
    else:
        data = synthetic_activations(args.layers, args.n_train, args.n_test, args.d)
        described = "synthetic residual-stream-like activations"
    n_layers, n_train, d = data[0].shape
    print(f"data: {described}; L={n_layers}, d={d}, n_train={n_train}, "
          f"n_test={data[2].shape[1]}")
    print(contention_note())
    cores = os.cpu_count() or 1
    runs = [run_pair(data, f"tuned: scikit-learn 1 thread/fit × {cores} processes; ours "
                     "default threads", ours_threads=None, base_threads=1, n_jobs=cores),
            run_pair(data, "single thread, both", ours_threads=1, base_threads=1)]
    if not args.skip_default_threads:
        runs.append(run_pair(data, f"scikit-learn default threads in one process "
                             f"({torch.get_num_threads()}; oversubscribes, not a baseline)",
                             ours_threads=None, base_threads=None))
    path = write_result("bench_probes", {"data": described, "n_layers": n_layers, "d": d,
                                         "n_train": n_train, "n_test": data[2].shape[1],
                                         "headline": "tuned", "runs": runs}, args.out)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
