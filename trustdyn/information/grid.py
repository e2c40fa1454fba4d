"""Permutation nulls and one checkpoint's grid of I(X;T) and I(T;Y) for every layer.

:func:`information_grid` builds each variable's Gram matrix once and shares it between the
Rényi and nHSIC estimators, both quantities and all permutations (each null equals
:func:`permutation_null` for the same seed). X comes from the caller: the pipeline passes
the token-embedding output at the same token positions as the blocks (the paper's "layer
0"). Caveat: the embedding matrix is trained too, so X itself changes from checkpoint to
checkpoint; I(X;T) at two checkpoints compares each checkpoint's layers against its own
input representation.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from trustdyn.information.hsic import DEFAULT_RIDGE, _nhsic_from_resolvents, _resolvent
from trustdyn.information.kernels import (
    DEFAULT_WIDTH_RULE,
    Data,
    InformationError,
    _batched_gram,
    _index_rows,
    _permutations,
    _permute_gram,
    as_matrix,
    check_same_n,
    label_codes,
    label_gram,
)
from trustdyn.information.renyi import (
    DEFAULT_ALPHA,
    _check_alpha,
    _entropy_from_spectrum,
    _joint_entropy_with_labels,
    _label_entropy,
)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


# ---------------------------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _single_intra_op_thread() -> Iterator[None]:
    """Run torch ops with one intra-op thread, restoring the previous setting afterwards.

    n × n eigen/Cholesky work at n ≈ 256 gains little from MKL/OpenMP threads, and on a
    shared, oversubscribed machine two spinning OpenMP threads made it 15-30× *slower* in
    our measurements; parallelism comes from worker threads instead (:func:`_map`).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _map(fn: Callable[[ItemT], ResultT], items: Iterable[ItemT], workers: int
         ) -> list[ResultT]:
    """``[fn(i) for i in items]``, on ``workers`` threads (torch releases the GIL), in order."""
    if workers <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def _default_workers() -> int:
    return min(2, os.cpu_count() or 1)

# ---------------------------------------------------------------------------------------------
# Permutation null
# ---------------------------------------------------------------------------------------------


def permutation_null(
    estimator: Callable[[Any, Any], float],
    a: Any,
    b: Any,
    *,
    n_permutations: int = 20,
    seed: int = 0,
) -> tuple[float, float]:
    """Return the mean and std of ``estimator(a, b_perm)`` over seeded row shuffles of ``b``.

    Shuffling rows of one variable keeps both marginals and breaks the pairing, so the
    result is the estimator's value under independence at this sample size and these
    widths: the bias floor to subtract (mean) and the scale of chance variation (std).
    Shuffle the labels for I(T;Y) and the representation's rows for I(X;T). The
    permutations are the ones :func:`information_grid` uses for the same seed.

    Args:
        estimator: ``f(a, b) -> float``, e.g. ``renyi_mutual_information``.
        a: First variable (kept fixed).
        b: Second variable (rows shuffled), tensor or array.
        n_permutations: Number of shuffles (≥ 2).
        seed: Seed of the shuffles.

    Returns:
        ``(mean, std)``; std uses ddof = 1.

    """
    perms = _permutations(len(b), n_permutations, seed)
    values = np.array([estimator(a, _index_rows(b, p)) for p in perms], dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1))


# ---------------------------------------------------------------------------------------------
# One checkpoint's grid
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InfoEstimate:
    """One information estimate with its permutation null and what reproduces it.

    Attributes:
        layer: Layer index ℓ (output of decoder block ℓ).
        estimator: ``"renyi"`` or ``"nhsic"``.
        quantity: ``"I(X;T)"`` or ``"I(T;Y)"``.
        value: The estimate.
        null_mean: Mean of the estimate over permutations (independence).
        null_std: Std (ddof 1) of the estimate over permutations.
        unit: ``"bits"`` (renyi) or ``"score"`` (nhsic).
        params: Estimator, α / ridge, kernel widths, width rule, n, seed, permutations.

    """

    layer: int
    estimator: str
    quantity: str
    value: float
    null_mean: float
    null_std: float
    unit: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Prepared:
    """Everything the estimators share for one checkpoint: Grams, widths, permutations."""

    k_x: torch.Tensor  # [n, n]
    k_t: torch.Tensor  # [L, n, n]
    codes: torch.Tensor  # [n]
    sigma_x: float
    sigma_t: list[float]
    perms: torch.Tensor  # [P, n]


def _series(values: torch.Tensor) -> tuple[list[float], list[float], list[float]]:
    """Split ``[1 + P, L]`` (unpermuted row first) into value, null mean, null std per layer."""
    null = values[1:]
    return values[0].tolist(), null.mean(0).tolist(), null.std(0, unbiased=True).tolist()


def _renyi_grid(p: _Prepared, alpha: float, workers: int) -> dict[str, torch.Tensor]:
    """Compute Rényi I(X;T), I(T;Y) ``[1 + P, L]``: row 0 unpermuted, then one per permutation."""
    h_x = _entropy_from_spectrum(torch.linalg.eigvalsh(p.k_x), alpha)
    h_t = _entropy_from_spectrum(torch.linalg.eigvalsh(p.k_t), alpha)  # [L]
    h_y = _label_entropy(p.codes, alpha)

    def joint_entropies(perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Shuffling T's rows by P leaves H(T) unchanged, and K_X ∘ P K_T Pᵀ has the spectrum
        # of (Pᵀ K_X P) ∘ K_T: permute the one X Gram instead of all L layer Grams.
        k_x_inv = _permute_gram(p.k_x, torch.argsort(perm))
        h_xt = _entropy_from_spectrum(torch.linalg.eigvalsh(k_x_inv * p.k_t), alpha)  # [L]
        return h_xt, _joint_entropy_with_labels(p.k_t, p.codes[perm], alpha)  # [L], [L]

    identity = torch.arange(p.codes.numel())
    joints = _map(joint_entropies, [identity, *p.perms], workers)
    h_xt = torch.stack([j[0] for j in joints])  # [1 + P, L]
    h_ty = torch.stack([j[1] for j in joints])
    return {"I(X;T)": h_x + h_t - h_xt, "I(T;Y)": h_t + h_y - h_ty}


def _nhsic_grid(p: _Prepared, ridge: float) -> dict[str, torch.Tensor]:
    """Compute the nHSIC I(X;T), I(T;Y) scores ``[1 + P, L]``, row 0 unpermuted."""
    r_all = _resolvent(torch.cat([p.k_x[None], p.k_t, label_gram(p.codes.numpy())[None]]), ridge)
    r_x, r_t, r_y = r_all[0], r_all[1:-1], r_all[-1]
    identity = torch.arange(p.codes.numel())
    xt, ty = [], []
    for perm in [identity, *p.perms]:
        # R(P G Pᵀ) = P R(G) Pᵀ, so a permutation costs O(n²), not a new inverse; and
        # tr(R_X P R_T Pᵀ) = tr(Pᵀ R_X P R_T) lets the one X matrix move instead of L layers.
        xt.append(_nhsic_from_resolvents(_permute_gram(r_x, torch.argsort(perm)), r_t))
        ty.append(_nhsic_from_resolvents(r_t, _permute_gram(r_y, perm)))
    return {"I(X;T)": torch.stack(xt), "I(T;Y)": torch.stack(ty)}


def _prepare(blocks: Data, x: Data, y: Data, seed: int, n_permutations: int, width_rule: str
             ) -> _Prepared:
    """Validate the grid's inputs and build the shared Grams, widths and permutations."""
    t = torch.as_tensor(np.asarray(blocks) if not isinstance(blocks, torch.Tensor) else blocks)
    t = t.detach().to("cpu", torch.float64)
    if t.ndim != 3:
        raise InformationError(
            f"blocks must be [n_layers, n, d]; got shape {tuple(t.shape)} (stack the layers)"
        )
    if not torch.isfinite(t).all():
        raise InformationError("blocks contain NaN or inf; check the checkpoint's activations")
    xx = as_matrix(x, "x")
    codes = label_codes(y, "y")
    n = t.shape[1]
    check_same_n(n, xx.shape[0], "information_grid (blocks vs x)")
    check_same_n(n, codes.numel(), "information_grid (blocks vs y)")
    if torch.unique(codes).numel() < 2:
        raise InformationError(
            "information_grid: the labels have a single class, so I(T;Y) is 0 by "
            "construction; sample statements from both classes"
        )
    k_x, sigma_x = _batched_gram(xx, width_rule)
    k_t, sigma_t = _batched_gram(t, width_rule)
    return _Prepared(k_x=k_x, k_t=k_t, codes=codes, sigma_x=float(sigma_x),
                     sigma_t=sigma_t.tolist(), perms=_permutations(n, n_permutations, seed))


def information_grid(
    blocks: Data,
    x: Data,
    y: Data,
    *,
    seed: int = 0,
    n_permutations: int = 20,
    alpha: float = DEFAULT_ALPHA,
    width_rule: str = DEFAULT_WIDTH_RULE,
    ridge: float = DEFAULT_RIDGE,
    layers: Sequence[int] | None = None,
    estimators: Sequence[str] = ("renyi", "nhsic"),
    workers: int | None = None,
) -> list[InfoEstimate]:
    """Estimate I(X;T) and I(T;Y) for every layer of one checkpoint, with permutation nulls.

    Gram matrices are built once per variable and shared by both estimators, the quantities
    and all permutations; Rényi spectra are batched over layers; nHSIC permutations only
    re-index R. Nulls: rows of T are shuffled for I(X;T), labels for I(T;Y), with the
    permutations of :func:`permutation_null` for the same seed (so each null equals
    ``permutation_null(estimator, x, t)`` / ``(t, y)``). Cost at n = 256, 6 layers, 20
    permutations: ≈ 0.85–0.9 s of CPU (measured on a heavily shared 2-core machine), about
    three quarters of it in the 6 × 21 n × n joint spectra of the Rényi I(X;T) null; nHSIC
    is ≈ 0.1 s; ``workers`` split the Rényi spectra across cores. It grows as L · P · n³
    (``bench/bench_information.py`` measures it).

    Args:
        blocks: Layer representations ``[L, n, d]`` (last-token residual stream per layer).
        x: The input representation ``[n, d_x]`` for the same rows — the pipeline passes
            the token-embedding output at the same positions (the paper's "layer 0").
            It changes with the checkpoint's embeddings (see the module docstring).
        y: Labels ``[n]``.
        seed: Seed of the permutations.
        n_permutations: Permutations per null (≥ 2).
        alpha: Rényi order.
        width_rule: Kernel width rule, applied per variable (see :func:`kernel_width`).
        ridge: nHSIC regulariser ε.
        layers: Layer indices to record for ``blocks``' rows (default 0..L-1).
        estimators: Subset of ``("renyi", "nhsic")``.
        workers: Threads computing the Rényi spectra of different permutations in parallel
            (``None``: min(2, CPU count)). While the grid runs torch uses one intra-op
            thread (restored afterwards): threads inside a 256 × 256 eigensolver gain little
            and, on an oversubscribed machine, made it 15–30× slower in our measurements.
            Results do not depend on ``workers``.

    Returns:
        One :class:`InfoEstimate` per (layer, estimator, quantity), layer-major.

    """
    _check_alpha(alpha)
    unknown = set(estimators) - {"renyi", "nhsic"}
    if unknown:
        raise InformationError(f"Unknown estimators {sorted(unknown)}; use 'renyi' and/or 'nhsic'")
    n_workers = _default_workers() if workers is None else int(workers)
    if n_workers < 1:
        raise InformationError(f"workers must be >= 1 or None; got {workers}")
    with _single_intra_op_thread():
        prep = _prepare(blocks, x, y, seed, n_permutations, width_rule)
        n_layers, n = prep.k_t.shape[0], prep.k_t.shape[1]
        layer_ids = list(range(n_layers)) if layers is None else [int(i) for i in layers]
        if len(layer_ids) != n_layers:
            raise InformationError(f"layers has {len(layer_ids)} entries for {n_layers} blocks")
        results: dict[str, dict[str, torch.Tensor]] = {}
        if "renyi" in estimators:
            results["renyi"] = _renyi_grid(prep, alpha, n_workers)
        if "nhsic" in estimators:
            results["nhsic"] = _nhsic_grid(prep, ridge)
    common = {"width_rule": width_rule, "n": n, "seed": seed, "n_permutations": n_permutations,
              "label_kernel": "delta", "sigma_x": prep.sigma_x}
    described = {
        "renyi": ("bits", {"estimator": "matrix_renyi", "alpha": alpha}),
        "nhsic": ("score", {"estimator": "nhsic_nocco", "ridge": ridge}),
    }
    out: list[InfoEstimate] = []
    for name, by_quantity in results.items():
        unit, extra = described[name]
        for quantity, values in by_quantity.items():
            null_of = "rows of T" if quantity == "I(X;T)" else "labels"
            for li, (v, m, sd) in enumerate(zip(*_series(values), strict=True)):
                params = {**common, **extra, "sigma_t": prep.sigma_t[li], "permuted": null_of}
                out.append(InfoEstimate(layer=layer_ids[li], estimator=name, quantity=quantity,
                                        value=v, null_mean=m, null_std=sd, unit=unit,
                                        params=params))
    out.sort(key=lambda e: (e.layer, e.estimator, e.quantity))
    return out
