"""Permutation nulls, half-sample errors and one checkpoint's grid of I(X;T) and I(T;Y).

:func:`information_grid` builds each variable's Gram matrix once and shares it between the
estimators (Rényi MI, nHSIC and the paper's own nHSIC), both quantities, all permutations
(each null equals :func:`permutation_null` for the same seed) and all half-samples of the
statements (:func:`half_samples`, for standard errors), and marks estimates that mean
nothing — a constant representation, T = X, a null without spread — as undefined with a
reason. X comes from the caller: the pipeline passes the output of decoder block 0 at the
same token positions as the blocks (the paper's "layer 0"). Caveat: X is trained too, so it
changes from checkpoint to checkpoint; I(X;T) at two checkpoints compares each checkpoint's
layers against its own input representation.
"""

from __future__ import annotations

import contextlib
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
    _gram_from_sq,
    _index_rows,
    _pair_distances,
    _permutations,
    _permute_gram,
    _sq_distances,
    as_matrix,
    check_same_n,
    label_codes,
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
def single_intra_op_thread() -> Iterator[None]:
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
    # The process's torch thread budget: a study worker given one thread runs one here too.
    return max(1, min(2, torch.get_num_threads()))

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
# Half-samples of the statements (uncertainty of a value)
# ---------------------------------------------------------------------------------------------


def half_samples(
    n: int,
    n_resamples: int,
    seed: int,
    groups: Sequence[Any] | np.ndarray | None = None,
) -> list[np.ndarray]:
    """Return ``n_resamples`` seeded half-samples of ``n`` rows, drawn without replacement.

    Each half-sample keeps ⌊G/2⌋ of the G groups, chosen uniformly without replacement,
    with all rows of every kept group (rows of a group stay together: e.g. all answers to
    one question); without ``groups`` every row is its own group. The stream is
    ``np.random.SeedSequence(seed).spawn(1)[0]``, independent of the permutation stream
    that the same ``seed`` drives (:func:`permutation_null`).

    Args:
        n: Number of rows.
        n_resamples: Number of half-samples (≥ 0).
        seed: Seed (a non-negative integer).
        groups: Optional group label per row ``[n]`` (any hashable, sortable values).

    Returns:
        One sorted ``int64`` array of row indices per half-sample.

    """
    codes = _group_codes(n, groups)
    n_groups = int(codes.max()) + 1
    keep = n_groups // 2
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    out = []
    for _ in range(n_resamples):
        chosen = np.zeros(n_groups, dtype=bool)
        chosen[rng.choice(n_groups, size=keep, replace=False)] = True
        out.append(np.flatnonzero(chosen[codes]).astype(np.int64))
    return out


def _group_codes(n: int, groups: Sequence[Any] | np.ndarray | None, min_groups: int = 4
                 ) -> np.ndarray:
    """Group codes 0..G-1 per row (each row its own group without ``groups``), G ≥ min."""
    if groups is None:
        codes = np.arange(n)
    else:
        arr = np.asarray(groups)
        if arr.ndim != 1 or arr.shape[0] != n:
            raise InformationError(
                f"groups must be 1-D with one entry per row ({n}); got shape {arr.shape}"
            )
        codes = np.unique(arr, return_inverse=True)[1].reshape(-1)
    if int(codes.max(initial=-1)) + 1 < min_groups:
        raise InformationError(
            f"half-samples need at least 4 groups (or rows) so that each half has 2; got "
            f"{int(codes.max(initial=-1)) + 1}"
        )
    return codes


# ---------------------------------------------------------------------------------------------
# One checkpoint's grid
# ---------------------------------------------------------------------------------------------

ESTIMATORS: tuple[str, ...] = ("renyi", "nhsic", "nhsic_paper")
"""Estimators of :func:`information_grid`: matrix Rényi MI, nHSIC, the paper's nHSIC."""
PAPER_RIDGE = 1e-5
"""The reference code's ridge ε for ``"nhsic_paper"``."""
_Z_95 = 1.959964
_CONSTANT_RTOL = 1e-6
_NULL_RTOL = 1e-12
_QUANTITIES = ("I(X;T)", "I(T;Y)")
_NAN = float("nan")


@dataclass(frozen=True)
class InfoEstimate:
    """One information estimate with its permutation null, uncertainty and provenance.

    For ``status == "undefined"`` every number (value, null_mean, null_std, corrected, z,
    se, corrected_lo, corrected_hi) is NaN and ``reason`` says why.

    Attributes:
        layer: Layer index ℓ (output of decoder block ℓ).
        estimator: ``"renyi"``, ``"nhsic"`` or ``"nhsic_paper"``.
        quantity: ``"I(X;T)"`` or ``"I(T;Y)"``.
        value: The estimate.
        null_mean: Mean of the estimate over permutations (independence).
        null_std: Std (ddof 1) of the estimate over permutations.
        unit: ``"bits"`` (renyi) or ``"score"`` (nhsic, nhsic_paper).
        params: Estimator, α / ridge, kernel widths, width rule, n, seed, permutations,
            resampling.
        status: ``"ok"`` or ``"undefined"``.
        reason: Why the estimate is undefined (``None`` when ok).
        corrected: value − null_mean (the estimate above chance).
        z: corrected / null_std.
        se: Standard error of ``value`` from half-samples of the statements (NaN with no
            resamples).
        corrected_lo: corrected − 1.959964 · se.
        corrected_hi: corrected + 1.959964 · se.

    """

    layer: int
    estimator: str
    quantity: str
    value: float
    null_mean: float
    null_std: float
    unit: str
    params: dict[str, Any] = field(default_factory=dict)
    status: str = field(kw_only=True)
    reason: str | None = field(kw_only=True)
    corrected: float = field(kw_only=True)
    z: float = field(kw_only=True)
    se: float = field(kw_only=True)
    corrected_lo: float = field(kw_only=True)
    corrected_hi: float = field(kw_only=True)


@dataclass(frozen=True)
class _Grams:
    """One estimator family's Gram matrices: X ``[n, n]``, T ``[L, n, n]``, Y ``[n, n]``."""

    k_x: torch.Tensor
    k_t: torch.Tensor
    k_y: torch.Tensor | None  # None: the delta kernel of the codes (Rényi uses its blocks)
    sigma_x: float
    sigma_t: list[float]


@dataclass(frozen=True)
class _Prepared:
    """Everything the estimators share for one checkpoint: Grams, widths, permutations."""

    rule: _Grams  # width_rule Grams (renyi, nhsic); k_y is the delta label kernel
    paper: _Grams | None  # σ = 50·√d Grams and the Gaussian label Gram (nhsic_paper)
    codes: torch.Tensor  # [n]
    perms: torch.Tensor  # [P, n]
    spread_x: tuple[float, float]  # (median pairwise distance, RMS row norm)
    spread_t: list[tuple[float, float]]


@dataclass(frozen=True)
class _Selection:
    """Layer positions whose I(X;T) / I(T;Y) are computed (the others are undefined)."""

    n_layers: int
    xt: torch.Tensor
    ty: torch.Tensor

    def take(self, v: torch.Tensor, quantity: str) -> torch.Tensor:
        """``v[idx]`` along the layer dim 0 (``v`` itself when every layer is selected)."""
        idx = self.xt if quantity == "I(X;T)" else self.ty
        return v if idx.numel() == self.n_layers else v.index_select(0, idx)

    def scatter(self, v: torch.Tensor, quantity: str) -> torch.Tensor:
        """Spread ``[..., k]`` selected-layer values to ``[..., L]``, NaN elsewhere."""
        idx = self.xt if quantity == "I(X;T)" else self.ty
        if idx.numel() == self.n_layers:
            return v
        out = torch.full((*v.shape[:-1], self.n_layers), _NAN, dtype=v.dtype, device=v.device)
        out[..., idx] = v
        return out

    def has(self, quantity: str) -> bool:
        return (self.xt if quantity == "I(X;T)" else self.ty).numel() > 0


def _series(values: torch.Tensor) -> tuple[list[float], list[float], list[float]]:
    """Split ``[1 + P, L]`` (unpermuted row first) into value, null mean, null std per layer."""
    null = values[1:]
    return values[0].tolist(), null.mean(0).tolist(), null.std(0, unbiased=True).tolist()


def _delta_gram(codes: torch.Tensor) -> torch.Tensor:
    """The delta label kernel 1[y_i = y_j] of integer codes, on their device."""
    return (codes[:, None] == codes[None, :]).to(torch.float64)


def _renyi_grid(p: _Prepared, sel: _Selection, alpha: float, workers: int
                ) -> dict[str, torch.Tensor]:
    """Compute Rényi I(X;T), I(T;Y) ``[1 + P, L]``: row 0 unpermuted, then one per permutation."""
    g = p.rule
    h_t = _entropy_from_spectrum(torch.linalg.eigvalsh(g.k_t), alpha)  # [L]
    h_y = _label_entropy(p.codes, alpha)
    k_t_xt, k_t_ty = sel.take(g.k_t, "I(X;T)"), sel.take(g.k_t, "I(T;Y)")
    has_xt, has_ty = sel.has("I(X;T)"), sel.has("I(T;Y)")
    h_x = _entropy_from_spectrum(torch.linalg.eigvalsh(g.k_x), alpha) if has_xt else None

    def joint_entropies(perm: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        # Shuffling T's rows by P leaves H(T) unchanged, and K_X ∘ P K_T Pᵀ has the spectrum
        # of (Pᵀ K_X P) ∘ K_T: permute the one X Gram instead of all L layer Grams.
        h_xt = None
        if has_xt:
            k_x_inv = _permute_gram(g.k_x, torch.argsort(perm))
            h_xt = _entropy_from_spectrum(torch.linalg.eigvalsh(k_x_inv * k_t_xt), alpha)
        h_ty = _joint_entropy_with_labels(k_t_ty, p.codes[perm], alpha) if has_ty else None
        return h_xt, h_ty

    identity = torch.arange(p.codes.numel(), device=p.codes.device)
    joints = _map(joint_entropies, [identity, *p.perms], workers)
    out: dict[str, torch.Tensor] = {}
    if h_x is not None:
        h_xt = torch.stack([j[0] for j in joints if j[0] is not None])  # [1 + P, k]
        out["I(X;T)"] = sel.scatter(h_x + sel.take(h_t, "I(X;T)") - h_xt, "I(X;T)")
    if has_ty:
        h_ty = torch.stack([j[1] for j in joints if j[1] is not None])
        out["I(T;Y)"] = sel.scatter(sel.take(h_t, "I(T;Y)") + h_y - h_ty, "I(T;Y)")
    return out


def _nhsic_resolvents(g: _Grams, codes: torch.Tensor, sel: _Selection, ridge: float,
                      fallback: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """R_X ``[n, n]``, R_T ``[L, n, n]``, R_Y ``[n, n]`` in one batched factorisation.

    Grams of variables no selected estimate needs (constant ones, whose Gram may be
    round-off noise that is not even PSD) are replaced by the identity.
    """
    n = codes.numel()
    eye = torch.eye(n, dtype=torch.float64, device=codes.device)
    k_x = g.k_x if sel.has("I(X;T)") else eye
    used = torch.zeros(sel.n_layers, dtype=torch.bool, device=codes.device)
    used[sel.xt] = True
    used[sel.ty] = True
    k_t = g.k_t if bool(used.all()) else torch.where(used[:, None, None], g.k_t, eye)
    k_y = _delta_gram(codes) if g.k_y is None else g.k_y
    r_all = _resolvent(torch.cat([k_x[None], k_t, k_y[None]]), ridge, solve_fallback=fallback)
    return r_all[0], r_all[1:-1], r_all[-1]


def _nhsic_grid(g: _Grams, p: _Prepared, sel: _Selection, ridge: float, fallback: bool
                ) -> dict[str, torch.Tensor]:
    """Compute the nHSIC I(X;T), I(T;Y) scores ``[1 + P, L]``, row 0 unpermuted."""
    r_x, r_t, r_y = _nhsic_resolvents(g, p.codes, sel, ridge, fallback)
    r_t_xt, r_t_ty = sel.take(r_t, "I(X;T)"), sel.take(r_t, "I(T;Y)")
    identity = torch.arange(p.codes.numel(), device=p.codes.device)
    xt, ty = [], []
    for perm in [identity, *p.perms]:
        # R(P G Pᵀ) = P R(G) Pᵀ, so a permutation costs O(n²), not a new inverse; and
        # tr(R_X P R_T Pᵀ) = tr(Pᵀ R_X P R_T) lets the one X matrix move instead of L layers.
        if sel.has("I(X;T)"):
            xt.append(_nhsic_from_resolvents(_permute_gram(r_x, torch.argsort(perm)), r_t_xt))
        if sel.has("I(T;Y)"):
            ty.append(_nhsic_from_resolvents(r_t_ty, _permute_gram(r_y, perm)))
    out: dict[str, torch.Tensor] = {}
    if xt:
        out["I(X;T)"] = sel.scatter(torch.stack(xt), "I(X;T)")
    if ty:
        out["I(T;Y)"] = sel.scatter(torch.stack(ty), "I(T;Y)")
    return out


def _subset(g: _Grams, idx: torch.Tensor) -> _Grams:
    """The Grams of the rows ``idx`` (widths stay the full sample's)."""
    return _Grams(k_x=_permute_gram(g.k_x, idx), k_t=_permute_gram(g.k_t, idx),
                  k_y=None if g.k_y is None else _permute_gram(g.k_y, idx),
                  sigma_x=g.sigma_x, sigma_t=g.sigma_t)


def _half_sample_values(p: _Prepared, sel: _Selection, idx: torch.Tensor,
                        estimators: Sequence[str], alpha: float, ridge: float
                        ) -> dict[tuple[str, str], torch.Tensor]:
    """Each estimator's values ``[L]`` (NaN where not selected) on the rows ``idx``."""
    out: dict[tuple[str, str], torch.Tensor] = {}
    codes = p.codes[idx]
    has_xt, has_ty = sel.has("I(X;T)"), sel.has("I(T;Y)")
    # Each family's Grams are cut to the rows once: Rényi and nHSIC share the rule's.
    rule = _subset(p.rule, idx)
    paper = None if p.paper is None else _subset(p.paper, idx)
    if "renyi" in estimators:
        h_t = _entropy_from_spectrum(torch.linalg.eigvalsh(rule.k_t), alpha)
        if has_xt:
            h_x = _entropy_from_spectrum(torch.linalg.eigvalsh(rule.k_x), alpha)
            h_xt = _entropy_from_spectrum(
                torch.linalg.eigvalsh(rule.k_x * sel.take(rule.k_t, "I(X;T)")), alpha)
            out["renyi", "I(X;T)"] = sel.scatter(h_x + sel.take(h_t, "I(X;T)") - h_xt,
                                                 "I(X;T)")
        if has_ty:
            h_ty = _joint_entropy_with_labels(sel.take(rule.k_t, "I(T;Y)"), codes, alpha)
            out["renyi", "I(T;Y)"] = sel.scatter(
                sel.take(h_t, "I(T;Y)") + _label_entropy(codes, alpha) - h_ty, "I(T;Y)")
    for name, grams, eps, fallback in (("nhsic", rule, ridge, False),
                                       ("nhsic_paper", paper, PAPER_RIDGE, True)):
        if name not in estimators or grams is None:
            continue
        r_x, r_t, r_y = _nhsic_resolvents(grams, codes, sel, eps, fallback)
        if has_xt:
            out[name, "I(X;T)"] = sel.scatter(
                _nhsic_from_resolvents(r_x, sel.take(r_t, "I(X;T)")), "I(X;T)")
        if has_ty:
            out[name, "I(T;Y)"] = sel.scatter(
                _nhsic_from_resolvents(sel.take(r_t, "I(T;Y)"), r_y), "I(T;Y)")
    return out


def _standard_errors(p: _Prepared, sel: _Selection, samples: list[np.ndarray],
                     factor: float, estimators: Sequence[str], alpha: float, ridge: float,
                     workers: int) -> dict[tuple[str, str], list[float]]:
    """Half-sample standard errors ``[L]`` per (estimator, quantity); empty without samples."""
    if not samples:
        return {}
    device = p.codes.device
    per_sample = _map(
        lambda rows: _half_sample_values(p, sel, torch.as_tensor(rows, device=device),
                                         estimators, alpha, ridge),
        samples, workers)
    return {key: (torch.stack([s[key] for s in per_sample]).std(0, unbiased=False)
                  * factor).tolist() for key in per_sample[0]}


def _spread(x: torch.Tensor, d2: torch.Tensor) -> list[tuple[float, float]]:
    """(median pairwise distance, RMS row norm) per batch item of ``x [..., n, d]``.

    ``d2`` (from the Gram computation) carries round-off of order 1e-8 × the row norms, far
    below the constancy threshold; items whose median is within 1e-3 × the RMS norm are
    recomputed from centred rows, so the decision and the reported distance are exact there.
    """
    xs = x.reshape(-1, *x.shape[-2:])
    med = _pair_distances(d2).median(dim=-1).values.reshape(-1)
    rms = (xs * xs).sum(-1).mean(-1).sqrt()
    for i in torch.nonzero(med <= 1e-3 * rms).flatten().tolist():
        centred = xs[i] - xs[i].mean(0, keepdim=True)
        med[i] = _pair_distances(_sq_distances(centred)).median()
    return list(zip(med.tolist(), rms.tolist(), strict=True))


def _is_constant(spread: tuple[float, float]) -> bool:
    med, rms = spread
    return rms == 0.0 or med <= _CONSTANT_RTOL * rms


def _constant_reason(what: str, spread: tuple[float, float], quantity: str, about: str) -> str:
    med, rms = spread
    return (f"constant representation: {what} is (almost) the same vector on most or all "
            f"statements (median pairwise distance {med:.1g} vs RMS norm {rms:.3g}), so "
            f"{quantity} measures nothing about {about}")


def _prepare(blocks: Data, x: Data, y: Data, seed: int, n_permutations: int, width_rule: str,
             paper: bool, device: torch.device) -> _Prepared:
    """Validate the grid's inputs and build the shared Grams, widths and permutations."""
    t = torch.as_tensor(np.asarray(blocks) if not isinstance(blocks, torch.Tensor) else blocks)
    t = t.detach().to(device, torch.float64)
    if t.ndim != 3:
        raise InformationError(
            f"blocks must be [n_layers, n, d]; got shape {tuple(t.shape)} (stack the layers)"
        )
    if not torch.isfinite(t).all():
        raise InformationError("blocks contain NaN or inf; check the checkpoint's activations")
    xx = as_matrix(x, "x").to(device)
    codes = label_codes(y, "y")
    n = t.shape[1]
    check_same_n(n, xx.shape[0], "information_grid (blocks vs x)")
    check_same_n(n, codes.numel(), "information_grid (blocks vs y)")
    if torch.unique(codes).numel() < 2:
        raise InformationError(
            "information_grid: the labels have a single class, so I(T;Y) is 0 by "
            "construction; sample statements from both classes"
        )
    codes = codes.to(device)
    d2_x, d2_t = _sq_distances(xx), _sq_distances(t)
    k_x, sigma_x = _gram_from_sq(xx, d2_x, width_rule)
    k_t, sigma_t = _gram_from_sq(t, d2_t, width_rule)
    rule = _Grams(k_x=k_x, k_t=k_t, k_y=None, sigma_x=float(sigma_x),
                  sigma_t=sigma_t.tolist())
    paper_grams = None
    if paper:
        # The reference's kernels: exp(−‖a − b‖² / (2 σ² d)), σ = 50; labels as a 0/1 column.
        y_col = codes.to(torch.float64)[:, None]
        pk_x, ps_x = _gram_from_sq(xx, d2_x, "paper_fixed")
        pk_t, ps_t = _gram_from_sq(t, d2_t, "paper_fixed")
        pk_y, _ = _gram_from_sq(y_col, _sq_distances(y_col), "paper_fixed")
        paper_grams = _Grams(k_x=pk_x, k_t=pk_t, k_y=pk_y, sigma_x=float(ps_x),
                             sigma_t=ps_t.tolist())
    return _Prepared(rule=rule, paper=paper_grams, codes=codes,
                     perms=_permutations(n, n_permutations, seed).to(device),
                     spread_x=_spread(xx, d2_x)[0], spread_t=_spread(t, d2_t))


def _device(device: str | torch.device | None) -> torch.device:
    dev = torch.device("cpu") if device is None else torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InformationError(f"device {device!r} requested but CUDA is not available here")
    return dev


def _undefined_reasons(p: _Prepared, layer_ids: list[int], x_is_layer: int | None
                       ) -> dict[tuple[int, str], str]:
    """Reasons, known before computing, keyed by (layer position, quantity)."""
    reasons: dict[tuple[int, str], str] = {}
    for li, layer in enumerate(layer_ids):
        if _is_constant(p.spread_x):
            reasons[li, "I(X;T)"] = _constant_reason("X", p.spread_x, "I(X;T)", "the input")
        elif x_is_layer is not None and layer == x_is_layer:
            reasons[li, "I(X;T)"] = (
                "T is X itself (X is this block's output), so I(X;T) only restates how "
                "spread out X is and says nothing about what the layer keeps of its input"
            )
        if _is_constant(p.spread_t[li]):
            what = f"T (layer {layer})"
            for quantity in _QUANTITIES:
                reasons.setdefault((li, quantity),
                                   _constant_reason(what, p.spread_t[li], quantity, "this layer"))
    return reasons


def _estimate(layer: int, name: str, quantity: str, unit: str, params: dict[str, Any],
              v: float, m: float, sd: float, se: float, reason: str | None) -> InfoEstimate:
    """Assemble one row, applying the post-hoc undefined rules (non-finite, no null spread)."""
    if reason is None and not np.isfinite(v):
        reason = ("the estimate is not a finite number (a numerical failure such as a singular "
                  "kernel matrix), so it cannot be reported")
    if reason is None and not (np.isfinite(sd) and sd > _NULL_RTOL * abs(m)):
        reason = ("the permutation null has no spread, so the estimate cannot be compared "
                  "with chance")
    if reason is not None:
        return InfoEstimate(layer=layer, estimator=name, quantity=quantity, value=_NAN,
                            null_mean=_NAN, null_std=_NAN, unit=unit, params=params,
                            status="undefined", reason=reason, corrected=_NAN, z=_NAN, se=_NAN,
                            corrected_lo=_NAN, corrected_hi=_NAN)
    corrected = v - m
    return InfoEstimate(layer=layer, estimator=name, quantity=quantity, value=v, null_mean=m,
                        null_std=sd, unit=unit, params=params, status="ok", reason=None,
                        corrected=corrected, z=corrected / sd, se=se,
                        corrected_lo=corrected - _Z_95 * se, corrected_hi=corrected + _Z_95 * se)


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
    estimators: Sequence[str] = ESTIMATORS,
    workers: int | None = None,
    x_is_layer: int | None = None,
    groups: Sequence[Any] | np.ndarray | None = None,
    n_resamples: int = 20,
    device: str | torch.device | None = None,
) -> list[InfoEstimate]:
    """Estimate I(X;T) and I(T;Y) for every layer of one checkpoint, with nulls and errors.

    Gram matrices are built once per variable and shared by the estimators, the quantities,
    all permutations and all half-samples; Rényi spectra are batched over layers; nHSIC
    permutations only re-index R. Nulls: rows of T are shuffled for I(X;T), labels for
    I(T;Y), with the permutations of :func:`permutation_null` for the same seed (so each null
    equals ``permutation_null(estimator, x, t)`` / ``(t, y)``).

    Estimators: ``"renyi"`` (matrix Rényi MI, bits, ``width_rule`` widths, delta label
    kernel), ``"nhsic"`` (normalised HSIC score, ``width_rule`` widths, ``ridge``, delta label
    kernel) and ``"nhsic_paper"``: exactly the reference code's ``hsic_normalized_cca`` (Ma
    et al.'s HSIC bottleneck, used by Qian et al. 2024): Gaussian kernels
    exp(−‖a − b‖² / (2 σ² d)) with σ = 50 for a variable of width d (width 50·√d), labels
    as a numeric column of their codes (0/1 for two classes, sorted order) with the same
    kernel (d = 1), ε = 1e-5 (:data:`PAPER_RIDGE`), R = K_c (K_c + ε n I)⁻¹ with
    K_c = K H and value Σ (R_x ∘ R_yᵀ) = tr(R_x R_y), computed in float64 through the
    symmetric form (same trace) by Cholesky, falling back to a general inverse as the
    reference does. Its fixed width makes it track the activations' scale.

    Uncertainty: ``se`` is the delete-d jackknife standard error with d = half the groups:
    ``n_resamples`` seeded half-samples without replacement of the groups (all rows of a
    group together; each row its own group without ``groups``), each estimator's *value*
    (not its null) recomputed on the half-sample by indexing rows and columns of the
    full-sample Gram matrices — the kernel widths stay the full sample's, and nHSIC's ridge
    term uses the half-sample's size — and ``se`` = the standard deviation (ddof 0) of the
    half-sample values times √(r/d) (r kept, d left out; exactly 1 for an even number of
    groups). ``corrected_lo``/``corrected_hi`` = corrected ∓ 1.959964 · se.

    Undefined rows (``status == "undefined"``, every number NaN, ``reason`` in words):
    (1) a constant X or T — its rows' median pairwise Euclidean distance is ≤ 1e-6 × their
    root-mean-square norm, or that norm is 0 — makes every estimate involving it undefined;
    (2) with ``x_is_layer`` the I(X;T) rows of that layer (T is X itself); (3) a
    non-finite value; (4) a permutation null without spread (std not finite or ≤ 1e-12 ×
    |null mean|, i.e. 0 up to round-off). Rows of (1) and (2) are not computed.

    Cost at n = 256, 6 layers, 20 permutations (CPU seconds measured by
    ``bench/bench_information.py`` on a heavily shared 2-core machine, d = 128 and 576):
    renyi + nhsic without half-samples ≈ 0.9–1.1 s, about three quarters in the 6 × 21
    n × n joint spectra of the Rényi I(X;T) null; ``"nhsic_paper"`` adds ≈ 11 %; the 20
    half-samples add 40–65 % (≈ 0.55 s: per half, 13 Rényi spectra and two batches of 8
    Cholesky resolvents at n/2), so the default grid costs ≈ 1.6–1.7× the former default
    (renyi + nhsic, no errors). Cost grows as L · (P + R/8) · n³; ``workers`` split the
    spectra and the half-samples across cores.

    Args:
        blocks: Layer representations ``[L, n, d]`` (last-token residual stream per layer).
        x: The input representation ``[n, d_x]`` for the same rows — the pipeline passes
            the output of decoder block 0 at the same positions (the paper's "layer 0"; say
            so with ``x_is_layer``). It changes with the checkpoint (see the module
            docstring).
        y: Labels ``[n]``.
        seed: Seed of the permutations and (through an independent stream) the half-samples.
        n_permutations: Permutations per null (≥ 2).
        alpha: Rényi order.
        width_rule: Kernel width rule for renyi and nhsic, applied per variable (see
            :func:`kernel_width`).
        ridge: nHSIC regulariser ε (not used by ``"nhsic_paper"``, which uses 1e-5).
        layers: Layer indices to record for ``blocks``' rows (default 0..L-1).
        estimators: Subset of :data:`ESTIMATORS`.
        workers: Threads computing the Rényi spectra of different permutations and the
            half-samples in parallel (``None``: min(2, CPU count)). On the CPU torch uses
            one intra-op thread while the grid runs (restored afterwards): threads inside a
            256 × 256 eigensolver gain little and, on an oversubscribed machine, made it
            15–30× slower in our measurements. Results do not depend on ``workers``.
        x_is_layer: The layer id (as in ``layers``) whose block output X is, if any; its
            I(X;T) rows are undefined. No row is affected if no block has that id.
        groups: Group label per row ``[n]`` for the half-samples (rows of a group — e.g.
            all answers to one question — are kept or left out together).
        n_resamples: Half-samples for ``se`` (0: no resampling, ``se`` NaN; else ≥ 2).
        device: Where Grams, spectra, resolvents and permutations run (``None``: CPU), in
            float64; results come back as Python floats.

    Returns:
        One :class:`InfoEstimate` per (layer, estimator, quantity), layer-major.

    """
    _check_alpha(alpha)
    unknown = set(estimators) - set(ESTIMATORS)
    if unknown:
        raise InformationError(
            f"Unknown estimators {sorted(unknown)}; use any of {', '.join(map(repr, ESTIMATORS))}"
        )
    n_workers = _default_workers() if workers is None else int(workers)
    if n_workers < 1:
        raise InformationError(f"workers must be >= 1 or None; got {workers}")
    if n_resamples < 0 or n_resamples == 1:
        raise InformationError(f"n_resamples must be 0 (no resampling) or >= 2; got {n_resamples}")
    dev = _device(device)
    threads = single_intra_op_thread() if dev.type == "cpu" else contextlib.nullcontext()
    with threads:
        prep = _prepare(blocks, x, y, seed, n_permutations, width_rule,
                        "nhsic_paper" in estimators, dev)
        n_layers, n = prep.rule.k_t.shape[0], prep.rule.k_t.shape[1]
        layer_ids = list(range(n_layers)) if layers is None else [int(i) for i in layers]
        if len(layer_ids) != n_layers:
            raise InformationError(f"layers has {len(layer_ids)} entries for {n_layers} blocks")
        group_codes = _group_codes(n, groups, 4 if n_resamples else 1)
        n_groups = int(group_codes.max()) + 1
        samples = half_samples(n, n_resamples, seed, groups)
        kept = n_groups // 2
        factor = float(np.sqrt(kept / (n_groups - kept)))
        reasons = _undefined_reasons(prep, layer_ids, x_is_layer)
        computed = {q: torch.tensor([li for li in range(n_layers) if (li, q) not in reasons],
                                    dtype=torch.long, device=dev) for q in _QUANTITIES}
        sel = _Selection(n_layers=n_layers, xt=computed["I(X;T)"], ty=computed["I(T;Y)"])
        results: dict[str, dict[str, torch.Tensor]] = {}
        if "renyi" in estimators:
            results["renyi"] = _renyi_grid(prep, sel, alpha, n_workers)
        if "nhsic" in estimators:
            results["nhsic"] = _nhsic_grid(prep.rule, prep, sel, ridge, fallback=False)
        if prep.paper is not None:
            results["nhsic_paper"] = _nhsic_grid(prep.paper, prep, sel, PAPER_RIDGE,
                                                 fallback=True)
        ses = _standard_errors(prep, sel, samples, factor, list(results), alpha, ridge,
                               n_workers)
        series = {(name, q): _series(v) for name, by_q in results.items()
                  for q, v in by_q.items()}
    common = {"width_rule": width_rule, "n": n, "seed": seed, "n_permutations": n_permutations,
              "label_kernel": "delta", "sigma_x": prep.rule.sigma_x, "n_resamples": n_resamples,
              "resample_unit": "rows" if groups is None else "groups", "n_groups": n_groups,
              "x_is_layer": x_is_layer}
    described: dict[str, tuple[str, dict[str, Any]]] = {
        "renyi": ("bits", {"estimator": "matrix_renyi", "alpha": alpha}),
        "nhsic": ("score", {"estimator": "nhsic_nocco", "ridge": ridge}),
    }
    if prep.paper is not None:
        described["nhsic_paper"] = ("score", {
            "estimator": "nhsic_reference", "sigma": "50*sqrt(d)", "ridge": PAPER_RIDGE,
            "label_kernel": "gaussian on 0/1 labels, sigma 50", "width_rule": "paper_fixed",
            "sigma_x": prep.paper.sigma_x})
    nan_layers = [_NAN] * n_layers
    out: list[InfoEstimate] = []
    for name in results:
        unit, extra = described[name]
        grams = prep.paper if name == "nhsic_paper" and prep.paper is not None else prep.rule
        for quantity in _QUANTITIES:
            values, means, stds = series.get((name, quantity), (nan_layers,) * 3)
            se = ses.get((name, quantity), nan_layers)
            null_of = "rows of T" if quantity == "I(X;T)" else "labels"
            for li in range(n_layers):
                params = {**common, **extra, "sigma_t": grams.sigma_t[li], "permuted": null_of}
                out.append(_estimate(layer_ids[li], name, quantity, unit, params, values[li],
                                     means[li], stds[li], se[li], reasons.get((li, quantity))))
    out.sort(key=lambda e: (e.layer, e.estimator, e.quantity))
    return out
