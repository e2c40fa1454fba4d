"""Information quantities between a layer's representation T, its input X and the label Y.

Qian et al. (2024, §5) trace, across early pre-training, the mutual information between a
layer's representation T and the input X (it first rises — *fitting* — then falls —
*compression*) and between T and the label Y (it keeps rising). This module estimates
those quantities for one checkpoint from a few hundred sampled statements, with a
permutation null for every number, and (in :mod:`trustdyn.information_turns`, re-exported
here) locates the fitting → compression turn across checkpoints.

Estimators (all Gram/eigen work in float64):

``renyi`` — matrix-based Rényi α-entropy (Giraldo, Rao & Príncipe 2015; Yu et al. 2019/2020).
    H_α(A) = log2(Σ_i λ_i^α) / (1 − α), λ the eigenvalues of the Gram matrix normalised to
    trace 1; the joint entropy uses the Hadamard product of the two Gram matrices;
    I(A;B) = H(A) + H(B) − H(A,B), in **bits**. α = 1.01 (close to the von Neumann/Shannon
    limit, as Yu et al.).
    *Bias:* it is not Shannon MI. Values depend on the kernel width (a wider kernel gives
    lower entropies) and are bounded by log2 n (8 bits at n = 256). For a deterministic
    network T = f(X) on distinct inputs the true I(X;T) is H(X) (infinite for continuous X);
    the estimate instead measures how much of X's neighbourhood structure, at the kernel's
    scale, survives in T. It is positively biased under independence (the permutation null
    mean is > 0, larger for narrower kernels and smaller n), hence the stored null.
    *Cost:* O(n² d) per Gram and O(n³) per eigendecomposition (≈ 4 ms for a float64
    256 × 256 spectrum on one core). Per layer: one marginal spectrum, one n × n joint
    spectrum for I(X;T) and, with the delta label kernel, per-class block spectra (Σ_c n_c³,
    a quarter of n³ for two balanced classes) for I(T;Y); each permutation repeats the two
    joint spectra: ≈ 125 ms of CPU per layer with 20 permutations at n = 256.

``nhsic`` — normalised HSIC as in the HSIC-bottleneck code the paper used (Ma, Lewis &
    Kleijn 2019, ``hsic_normalized_cca``): the normalised cross-covariance operator
    estimate of Fukumizu et al. (2008), tr(R_A R_B) with R = G (G + ε n I)⁻¹ and
    G = H K H the centred Gram matrix. A **dependence score, not bits**: 0 for independence,
    at most min(rank R_A, rank R_B) — at most c − 1 against c labels — and roughly "the
    number of kernel principal directions the two variables share".
    *Bias:* positive under independence; the permutation mean is exactly
    tr(R_A) tr(R_B) / (n − 1). The ridge ε matters as much as the width: R is a soft
    projector onto the Gram eigen-directions above ε n, so a tiny ε (the reference code's
    1e-5) makes R ≈ I − 11ᵀ/n for any full-rank Gaussian Gram and the score saturates at
    ≈ n − 1 whatever the dependence; the reference code only escaped this through its huge
    fixed width (σ = 50, scaled by √d), which shrinks the Gram's spectrum until ε acts —
    which is also why its value moves with the activations' scale. We use a scale-free width
    rule and ε = 1e-2 (see :data:`DEFAULT_RIDGE`).
    *Cost:* one Cholesky inverse (≈ n³, ≈ 2–3 ms at n = 256) per variable; each
    permutation is O(n²) because permuting a variable's rows just permutes rows and
    columns of its R: ≈ 15–20 ms of CPU per layer with 20 permutations at n = 256.

``usable_information_bits`` — predictive V-information (Xu et al. 2020) of a probe:
    H(Y) − test cross-entropy in bits. A lower bound on I(T;Y) for the probe family only if
    the probe is calibrated; negative when it overfits. Cost: free given the probe's loss.

``ksg_mutual_information`` — Kraskov–Stögbauer–Grassberger k-NN estimator (algorithm 1),
    a Shannon-consistent cross-check for low-dimensional continuous data; biased towards
    zero for high MI or high dimension; O(n² d) brute force here.

Kernels and widths: Gaussian kernels with a width chosen by a documented, scale-equivariant
rule applied identically at every checkpoint (:func:`kernel_width`, default ``"median"``),
and a delta kernel for labels (:func:`label_gram`). Fixed widths (the paper's 50) are
available for sensitivity reports (:func:`hsic_sensitivity`) but not used by default: the
value then tracks the activations' overall scale, which changes during training, more than
the dependence.

X: :func:`information_grid` takes X from the caller — the pipeline passes the token-embedding
output at the same token positions as the blocks (the paper's "layer 0"). Caveat: the
embedding matrix is trained too, so X itself changes from checkpoint to checkpoint; I(X;T)
at two checkpoints compares each checkpoint's layers against its own input representation.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, overload

import numpy as np
import torch

from trustdyn.information_turns import detect_turns

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_RIDGE",
    "DEFAULT_WIDTH_RULE",
    "WIDTH_RULES",
    "InfoEstimate",
    "InformationError",
    "WidthSensitivity",
    "detect_turns",
    "gaussian_gram",
    "hsic_sensitivity",
    "information_grid",
    "kernel_width",
    "ksg_mutual_information",
    "label_entropy_bits",
    "label_gram",
    "normalised_hsic",
    "permutation_null",
    "renyi_entropy",
    "renyi_mutual_information",
    "usable_information_bits",
]

WidthRule = Literal["median", "scott", "paper_fixed"]
WIDTH_RULES: tuple[str, ...] = ("median", "scott", "paper_fixed")
DEFAULT_WIDTH_RULE: WidthRule = "median"
"""Median pairwise distance: parameter-free and scale-equivariant (see :func:`kernel_width`)."""
DEFAULT_ALPHA = 1.01
"""Rényi order: close to 1 so the matrix entropy approximates the von Neumann (Shannon) one."""
DEFAULT_RIDGE = 1e-2
"""nHSIC regulariser ε (R = G (G + ε n I)⁻¹).

With a median-width Gram (entries in [0, 1], mean eigenvalue of the centred Gram ≤ 1) the
cut-off ε n = 2.56 at n = 256 keeps roughly the leading ten kernel principal directions,
where the dependence lives; 1e-5 (reference code) saturates at ≈ n − 1 for any input.
"""
_PAPER_SIGMA = 50.0
_SCOTT_GAMMA = 1.0

Data = torch.Tensor | np.ndarray
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class InformationError(ValueError):
    """A user-facing problem with the inputs of an information estimate."""


# ---------------------------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------------------------


def _is_labels(v: Data) -> bool:
    """Tell whether ``v`` is class labels: a 1-D integer/bool/string/object array."""
    if isinstance(v, torch.Tensor):
        return v.ndim == 1 and not (v.is_floating_point() or v.is_complex())
    return np.asarray(v).ndim == 1 and np.asarray(v).dtype.kind in "biuOUS"


def _as_matrix(v: Data, name: str) -> torch.Tensor:
    """Return ``v`` as a finite float64 ``[n, d]`` tensor (1-D input becomes ``[n, 1]``)."""
    t = torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v)
    t = t.detach().to("cpu", torch.float64)
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2:
        raise InformationError(f"{name} must be [n, d] (or [n]); got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise InformationError(
            f"{name} contains NaN or inf; check the activations (e.g. a diverged checkpoint "
            "or a float16 overflow) before estimating information"
        )
    return t


def _label_codes(y: Data, name: str = "labels") -> torch.Tensor:
    """Return labels as contiguous integer codes ``[n]`` (0..c-1), in sorted label order."""
    arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if arr.ndim != 1:
        raise InformationError(f"{name} must be 1-D [n]; got shape {arr.shape}")
    _, codes = np.unique(arr, return_inverse=True)
    return torch.as_tensor(codes.reshape(-1), dtype=torch.long)


def _check_same_n(n_a: int, n_b: int, what: str) -> None:
    if n_a != n_b:
        raise InformationError(
            f"{what}: the two variables have {n_a} and {n_b} rows; pass the same samples "
            "(row i of each must describe the same statement)"
        )
    if n_a < 4:
        raise InformationError(f"{what}: need at least 4 samples, got {n_a}")


def _index_rows(v: Data, perm: torch.Tensor) -> Data:
    """Return ``v`` with rows reordered by ``perm`` (tensor or numpy, type preserved)."""
    if isinstance(v, torch.Tensor):
        return v[perm.to(v.device)]
    return np.asarray(v)[perm.numpy()]


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


def _permutations(n: int, n_permutations: int, seed: int) -> torch.Tensor:
    """Return ``[n_permutations, n]`` seeded row permutations (shared by all null code)."""
    if n_permutations < 2:
        raise InformationError(
            f"n_permutations must be at least 2 to estimate the null's spread; got "
            f"{n_permutations}"
        )
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=gen) for _ in range(n_permutations)])


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


def _sq_distances(x: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``[..., n, n]`` of ``x [..., n, d]``, exact zero diagonal."""
    sq = (x * x).sum(-1)
    d2 = (sq[..., :, None] + sq[..., None, :] - 2.0 * (x @ x.transpose(-1, -2))).clamp_min(0.0)
    d2.diagonal(dim1=-2, dim2=-1).zero_()
    return d2


def _median_width(d2: torch.Tensor) -> torch.Tensor:
    """Median off-diagonal distance per batch item ``[...]`` from squared distances."""
    n = d2.shape[-1]
    iu = torch.triu_indices(n, n, offset=1)
    dist = d2[..., iu[0], iu[1]].sqrt()
    med = dist.median(dim=-1).values
    # Fall back to the mean distance when most points coincide; a constant representation
    # (all distances 0) gets width 1, giving an all-ones Gram (zero entropy / dependence).
    mean = dist.mean(dim=-1)
    return torch.where(med > 0, med, torch.where(mean > 0, mean, torch.ones_like(mean)))


def _widths(x: torch.Tensor, rule: str, d2: torch.Tensor | None = None) -> torch.Tensor:
    """Kernel widths ``[...]`` for ``x [..., n, d]`` under ``rule`` (see :func:`kernel_width`)."""
    n, d = x.shape[-2], x.shape[-1]
    if rule == "median":
        return _median_width(_sq_distances(x) if d2 is None else d2)
    if rule == "scott":
        total_sd = x.var(dim=-2, unbiased=False).sum(-1).sqrt()
        width = _SCOTT_GAMMA * total_sd * n ** (-1.0 / (4 + d))
        return torch.where(width > 0, width, torch.ones_like(width))
    if rule == "paper_fixed":
        return torch.full(x.shape[:-2], _PAPER_SIGMA * math.sqrt(d), dtype=torch.float64)
    raise InformationError(f"Unknown width rule {rule!r}; choose one of {', '.join(WIDTH_RULES)}")


def kernel_width(x: Data, rule: str = DEFAULT_WIDTH_RULE) -> float:
    """Return the Gaussian kernel width σ for ``x [n, d]`` under a fixed, documented rule.

    The *rule* is what stays fixed across checkpoints; the number it yields follows the
    data. Rules:

    * ``"median"`` (default): the median pairwise Euclidean distance (the "median
      heuristic" of Gretton et al. for HSIC). Chosen because it has no free constant, it is
      scale-equivariant (multiplying the activations by c multiplies σ by c, so the Gram
      matrix and every estimate are unchanged — activation norms grow during pre-training
      and should not masquerade as information change), it tracks dimension (distances
      grow like √d), and it is robust to a few outlying statements. In high dimension
      distances concentrate around the median, so typical off-diagonal Gram entries are
      ≈ e^(-1/2): structure shows up as deviations from that level.
    * ``"scott"``: Scott/Silverman-style σ = γ · s · n^(−1/(4+d)) with γ = 1 and
      s = √(Σ_k Var x_k), i.e. Tapia & Estévez's (2020) dimension-normalised form of the
      rule Yu et al. use, on data standardised by one global scale (per-feature
      standardisation would need the transformed data, and would blow up near-constant
      features). Also scale-equivariant; in high d (n^(−1/(4+d)) → 1, distances
      concentrate at √2 s) it is ≈ γ · median / √2.
    * ``"paper_fixed"``: σ = 50 · √d, the reference code's fixed ``sigma=50`` with its
      ``2σ²d`` variance. Scale-*dependent*: for sensitivity reports only.

    Args:
        x: Samples ``[n, d]`` (or ``[n]``).
        rule: One of :data:`WIDTH_RULES`.

    Returns:
        The width σ > 0 (a degenerate, constant ``x`` gets σ = 1).

    """
    return float(_widths(_as_matrix(x, "x"), rule))


def gaussian_gram(x: Data, sigma: float) -> torch.Tensor:
    """Return the Gaussian Gram matrix exp(−‖x_i − x_j‖² / (2σ²)), ``[n, n]`` float64.

    Args:
        x: Samples ``[n, d]`` (or ``[n]``).
        sigma: Kernel width (> 0), e.g. from :func:`kernel_width`.

    """
    if not sigma > 0:
        raise InformationError(f"kernel width must be positive; got {sigma}")
    return torch.exp(-_sq_distances(_as_matrix(x, "x")) / (2.0 * sigma * sigma))


def _batched_gram(x: torch.Tensor, rule: str, sigma: float | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian Grams ``[..., n, n]`` and widths ``[...]`` of ``x [..., n, d]``."""
    d2 = _sq_distances(x)
    widths = (torch.full(x.shape[:-2], float(sigma), dtype=torch.float64) if sigma is not None
              else _widths(x, rule, d2))
    if not bool((widths > 0).all()):
        raise InformationError(f"kernel width must be positive; got {widths.tolist()}")
    return torch.exp(-d2 / (2.0 * widths[..., None, None] ** 2)), widths


def _permute_gram(k: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Return ``k[..., perm, :][..., :, perm]``: the Gram ``[..., n, n]`` after a row shuffle.

    ``index_select`` twice is ~2.5× faster than one advanced-indexing gather here.
    """
    return k.index_select(-2, perm).index_select(-1, perm)


def label_gram(labels: Data) -> torch.Tensor:
    """Return the delta (one-hot) kernel Gram 1[y_i = y_j], ``[n, n]`` float64.

    The delta kernel is the Gaussian kernel on one-hot codes in the zero-width limit: it
    treats classes as unordered and makes the label entropy exactly the Rényi entropy of
    the class proportions (1 bit for two balanced classes), the ceiling of I(T;Y).
    """
    codes = _label_codes(labels)
    return (codes[:, None] == codes[None, :]).to(torch.float64)


def _gram(v: Data, sigma: float | None, rule: str, name: str) -> tuple[torch.Tensor, float | None]:
    """Gram ``[n, n]`` of a variable: delta kernel for labels, Gaussian otherwise."""
    if _is_labels(v):
        return label_gram(v), None
    gram, width = _batched_gram(_as_matrix(v, name), rule, sigma)
    return gram, float(width)


# ---------------------------------------------------------------------------------------------
# Matrix-based Rényi α-entropy
# ---------------------------------------------------------------------------------------------


def _entropy_from_spectrum(eig: torch.Tensor, alpha: float) -> torch.Tensor:
    """Rényi α-entropy in bits ``[...]`` from (unnormalised) PSD eigenvalues ``[..., n]``.

    Eigenvalues are clipped at 0 (round-off) and renormalised to sum 1, i.e. the Gram is
    normalised to unit trace. α = 1 gives the von Neumann (Shannon) limit.
    """
    lam = eig.clamp_min(0.0)
    lam = lam / lam.sum(-1, keepdim=True)
    if alpha == 1.0:
        return -(torch.special.xlogy(lam, lam)).sum(-1) / math.log(2.0)
    return torch.log2((lam**alpha).sum(-1)) / (1.0 - alpha)


def _check_alpha(alpha: float) -> None:
    if not alpha > 0:
        raise InformationError(f"alpha must be positive (typically 1.01); got {alpha}")


def renyi_entropy(gram: torch.Tensor, alpha: float = DEFAULT_ALPHA) -> float:
    """Return the matrix-based Rényi α-entropy of a Gram matrix, in bits.

    S_α(A) = log2(Σ_i λ_i(A)^α) / (1 − α) with A = K / tr(K) (Giraldo et al. 2015). For n
    mutually far-apart points (K = I) it is log2 n; for identical points (K = 1) it is 0.

    Args:
        gram: Symmetric positive semi-definite Gram matrix ``[n, n]``.
        alpha: Order α > 0 (α = 1: von Neumann limit).

    """
    _check_alpha(alpha)
    k = torch.as_tensor(gram).to(torch.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise InformationError(f"gram must be square [n, n]; got shape {tuple(k.shape)}")
    return float(_entropy_from_spectrum(torch.linalg.eigvalsh(k), alpha))


def _label_entropy(codes: torch.Tensor, alpha: float) -> float:
    """Rényi entropy (bits) of the delta-kernel Gram: that of the class proportions."""
    counts = torch.bincount(codes).to(torch.float64)
    return float(_entropy_from_spectrum(counts[counts > 0], alpha))


def _class_index(codes: torch.Tensor) -> list[torch.Tensor]:
    """Row indices of each class present in ``codes``."""
    return [torch.nonzero(codes == c).flatten() for c in torch.unique(codes)]


def _joint_entropy_with_labels(gram: torch.Tensor, codes: torch.Tensor, alpha: float
                               ) -> torch.Tensor:
    """Joint entropy ``[...]`` of a Gram ``[..., n, n]`` with the delta label kernel.

    K ∘ K_Y is block-diagonal (after sorting by class) with the within-class blocks of K,
    so its spectrum is the union of the blocks' spectra: Σ_c n_c³ work instead of n³.
    """
    spectra = [torch.linalg.eigvalsh(_permute_gram(gram, idx)) for idx in _class_index(codes)]
    return _entropy_from_spectrum(torch.cat(spectra, dim=-1), alpha)


def renyi_mutual_information(
    a: Data,
    b: Data,
    *,
    alpha: float = DEFAULT_ALPHA,
    sigma_a: float | None = None,
    sigma_b: float | None = None,
    width_rule: str = DEFAULT_WIDTH_RULE,
) -> float:
    """Return the matrix-based Rényi α mutual information I(A;B) = S(A) + S(B) − S(A,B), bits.

    The joint entropy uses the unit-trace Hadamard product of the two Gram matrices (Yu et
    al. 2019). 1-D integer/bool/string inputs are labels (delta kernel, :func:`label_gram`);
    float inputs get a Gaussian kernel with width ``sigma_*`` or, if ``None``, the
    ``width_rule`` applied to that variable. See the module docstring for bias and cost.

    Args:
        a: First variable, ``[n, d_a]`` floats or ``[n]`` labels.
        b: Second variable, ``[n, d_b]`` floats or ``[n]`` labels.
        alpha: Rényi order (default 1.01).
        sigma_a: Kernel width for ``a`` (ignored for labels).
        sigma_b: Kernel width for ``b`` (ignored for labels).
        width_rule: Rule for widths left as ``None`` (see :func:`kernel_width`).

    """
    _check_alpha(alpha)
    a_lab, b_lab = _is_labels(a), _is_labels(b)
    _check_same_n(len(a), len(b), "renyi_mutual_information")
    if a_lab and b_lab:
        ca, cb = _label_codes(a), _label_codes(b)
        pair = _label_codes((ca * (int(cb.max()) + 1) + cb).numpy())
        return _label_entropy(ca, alpha) + _label_entropy(cb, alpha) - _label_entropy(pair, alpha)
    if a_lab or b_lab:
        labels, other, sigma = (a, b, sigma_b) if a_lab else (b, a, sigma_a)
        codes = _label_codes(labels)
        k, _ = _gram(other, sigma, width_rule, "data")
        h_joint = float(_joint_entropy_with_labels(k, codes, alpha))
        h_other = float(_entropy_from_spectrum(torch.linalg.eigvalsh(k), alpha))
        return h_other + _label_entropy(codes, alpha) - h_joint
    ka, _ = _gram(a, sigma_a, width_rule, "a")
    kb, _ = _gram(b, sigma_b, width_rule, "b")
    spectra = torch.linalg.eigvalsh(torch.stack([ka, kb, ka * kb]))
    h = _entropy_from_spectrum(spectra, alpha)
    return float(h[0] + h[1] - h[2])


# ---------------------------------------------------------------------------------------------
# Normalised HSIC (normalised cross-covariance operator, HSIC-bottleneck style)
# ---------------------------------------------------------------------------------------------


def _resolvent(gram: torch.Tensor, ridge: float) -> torch.Tensor:
    """R = G (G + ε n I)⁻¹ ``[..., n, n]`` with G = H K H the doubly centred Gram.

    Computed as I − ε n (G + ε n I)⁻¹ through a Cholesky factorisation (≈ 6× faster than an
    eigendecomposition at n = 256); G is PSD so G + ε n I is safely positive definite.
    R is symmetric, and doubly centred (its rows sum to zero), like G.
    """
    if not ridge > 0:
        raise InformationError(f"ridge must be positive (default {DEFAULT_RIDGE}); got {ridge}")
    n = gram.shape[-1]
    g = gram - gram.mean(-1, keepdim=True) - gram.mean(-2, keepdim=True)
    g = g + gram.mean((-2, -1), keepdim=True)
    g = 0.5 * (g + g.transpose(-1, -2))
    eye = torch.eye(n, dtype=torch.float64)
    shift = ridge * n
    chol, info = torch.linalg.cholesky_ex(g + shift * eye)
    if bool((info != 0).any()):
        raise InformationError(
            f"ridge {ridge} is too small for the Gram matrix's round-off (Cholesky failed); "
            f"use a larger ridge such as the default {DEFAULT_RIDGE}"
        )
    return eye - shift * torch.cholesky_inverse(chol)


def _nhsic_from_resolvents(ra: torch.Tensor, rb: torch.Tensor) -> torch.Tensor:
    """tr(R_A R_B) for symmetric R: the elementwise-product sum, broadcast over batches."""
    return (ra * rb).sum((-2, -1))


def normalised_hsic(
    x: Data,
    y: Data,
    *,
    sigma_x: float | None = None,
    sigma_y: float | None = None,
    width_rule: str = DEFAULT_WIDTH_RULE,
    ridge: float = DEFAULT_RIDGE,
) -> float:
    """Return the normalised HSIC tr(R_X R_Y) — a dependence **score**, not bits.

    The normalised cross-covariance estimate used by the HSIC bottleneck (Ma et al. 2019,
    ``hsic_normalized_cca``), which the paper's code used: R = G (G + ε n I)⁻¹ with G the
    centred Gram matrix. The reference code centres on one side only (R' from K H) and
    inverts explicitly; the value is identical, since H R' = R and R' H = R' give
    tr(R'_X R'_Y) = tr(R_X R_Y) (the tests check it against the reference form). The
    symmetric form allows a Cholesky inverse and cheap permutations. 0 under independence
    in the population; the finite-sample permutation mean
    is tr(R_X) tr(R_Y) / (n − 1). Bounded by min(rank R_X, rank R_Y) (c − 1 against c
    labels). Labels (1-D integer/bool/string) use the delta kernel.

    Args:
        x: First variable, ``[n, d_x]`` floats or ``[n]`` labels.
        y: Second variable, ``[n, d_y]`` floats or ``[n]`` labels.
        sigma_x: Gaussian width for ``x`` (``None``: ``width_rule``).
        sigma_y: Gaussian width for ``y`` (``None``: ``width_rule``).
        width_rule: See :func:`kernel_width`.
        ridge: Regulariser ε (see :data:`DEFAULT_RIDGE` for why not the reference's 1e-5).

    """
    _check_same_n(len(x), len(y), "normalised_hsic")
    kx, _ = _gram(x, sigma_x, width_rule, "x")
    ky, _ = _gram(y, sigma_y, width_rule, "y")
    r = _resolvent(torch.stack([kx, ky]), ridge)
    return float(_nhsic_from_resolvents(r[0], r[1]))


@dataclass(frozen=True)
class WidthSensitivity:
    """One point of a width-sensitivity report (see :func:`hsic_sensitivity`).

    Attributes:
        width: The width as requested (a factor of the rule's width, or an absolute σ).
        sigma_x: The Gaussian width used for x (``None`` for labels).
        sigma_y: The Gaussian width used for y (``None`` for labels).
        value: The normalised HSIC at these widths.

    """

    width: float
    sigma_x: float | None
    sigma_y: float | None
    value: float


def hsic_sensitivity(
    x: Data,
    y: Data,
    widths: Sequence[float],
    *,
    absolute: bool = False,
    width_rule: str = DEFAULT_WIDTH_RULE,
    ridge: float = DEFAULT_RIDGE,
) -> list[WidthSensitivity]:
    """Report how the normalised HSIC moves with the kernel width.

    Args:
        x: First variable, ``[n, d_x]`` floats or ``[n]`` labels.
        y: Second variable, ``[n, d_y]`` floats or ``[n]`` labels (labels keep the delta
            kernel: it has no width).
        widths: Width factors relative to ``width_rule``'s width of each variable (so the
            same call is meaningful at every checkpoint), or absolute σ if ``absolute``.
        absolute: Treat ``widths`` as absolute σ applied to both continuous variables.
        width_rule: Reference rule for relative factors.
        ridge: nHSIC regulariser ε.

    Returns:
        One :class:`WidthSensitivity` per width, in order (``dataclasses.asdict`` for JSON).

    """
    base_x = None if _is_labels(x) else (1.0 if absolute else kernel_width(x, width_rule))
    base_y = None if _is_labels(y) else (1.0 if absolute else kernel_width(y, width_rule))
    out: list[WidthSensitivity] = []
    for w in widths:
        sx = None if base_x is None else float(w) * base_x
        sy = None if base_y is None else float(w) * base_y
        value = normalised_hsic(x, y, sigma_x=sx, sigma_y=sy, width_rule=width_rule, ridge=ridge)
        out.append(WidthSensitivity(width=float(w), sigma_x=sx, sigma_y=sy, value=value))
    return out


# ---------------------------------------------------------------------------------------------
# KSG k-nearest-neighbour estimator (Shannon cross-check)
# ---------------------------------------------------------------------------------------------


def ksg_mutual_information(a: Data, b: Data, k: int = 3) -> float:
    """Return the Kraskov–Stögbauer–Grassberger (algorithm 1) estimate of I(A;B), in bits.

    I = ψ(k) + ψ(n) − ⟨ψ(n_a + 1) + ψ(n_b + 1)⟩ with max-norm neighbourhoods: ε_i is the
    distance to the k-th neighbour in the joint space and n_a(i), n_b(i) count points
    strictly closer than ε_i in each marginal. Shannon-consistent for continuous data; low
    bias at low dimension, biased towards zero for strong dependence or high dimension.
    Brute force: O(n² (d_a + d_b)) time and O(n²) memory (fine for n ≲ 3000).

    Args:
        a: ``[n, d_a]`` (or ``[n]``) continuous samples.
        b: ``[n, d_b]`` (or ``[n]``) continuous samples.
        k: Neighbours (3 is the usual bias/variance compromise).

    Raises:
        InformationError: on labels, k ≥ n, or duplicated rows (the estimator assumes
            continuous data; add tiny jitter to ties).

    """
    if _is_labels(a) or _is_labels(b):
        raise InformationError("ksg_mutual_information needs continuous data, not labels")
    xa, xb = _as_matrix(a, "a"), _as_matrix(b, "b")
    n = xa.shape[0]
    _check_same_n(n, xb.shape[0], "ksg_mutual_information")
    if not 1 <= k < n:
        raise InformationError(f"k must be in [1, n); got k={k}, n={n}")
    da = torch.cdist(xa, xa, p=math.inf)
    db = torch.cdist(xb, xb, p=math.inf)
    joint = torch.maximum(da, db)
    joint.fill_diagonal_(math.inf)
    eps = joint.kthvalue(k, dim=1).values  # [n]
    if bool((eps <= 0).any()):
        raise InformationError(
            "ksg_mutual_information: duplicated samples (zero k-NN distance); the estimator "
            "assumes continuous data — add tiny jitter or drop duplicates"
        )
    n_a = (da < eps[:, None]).sum(1) - 1  # minus the point itself
    n_b = (db < eps[:, None]).sum(1) - 1
    psi = torch.special.digamma
    nats = (psi(torch.tensor(float(k), dtype=torch.float64))
            + psi(torch.tensor(float(n), dtype=torch.float64))
            - (psi(n_a.to(torch.float64) + 1) + psi(n_b.to(torch.float64) + 1)).mean())
    return float(nats) / math.log(2.0)


# ---------------------------------------------------------------------------------------------
# Usable (V-)information from probes
# ---------------------------------------------------------------------------------------------


def label_entropy_bits(labels: Data) -> float:
    """Return the plug-in Shannon entropy of the empirical label distribution, in bits."""
    return _label_entropy(_label_codes(labels), alpha=1.0)


@overload
def usable_information_bits(test_ce_bits: float, labels: Data) -> float: ...
@overload
def usable_information_bits(test_ce_bits: Data, labels: Data) -> np.ndarray: ...
def usable_information_bits(test_ce_bits: float | Data, labels: Data) -> float | np.ndarray:
    """Return the predictive V-information H(Y) − CE of probes, in bits (Xu et al. 2020).

    H(Y) is the plug-in entropy of the *test* labels the cross-entropy was measured on, so
    a constant predictor of the test prior scores exactly 0. It lower-bounds I(T;Y) only
    for a calibrated probe; it is negative when the probe is worse than the prior
    (overfitting, miscalibration). The plug-in H(Y) is biased down by ≈ (c − 1)/(2 n ln 2).

    Args:
        test_ce_bits: Test cross-entropy in bits, a float or an array (e.g. ``[n_layers]``;
            anything ``np.asarray`` accepts, CPU tensors included).
        labels: Test labels ``[n_test]``.

    Returns:
        A float for a scalar input, else a float64 array of the input's shape.

    """
    ce = np.asarray(test_ce_bits, dtype=np.float64)
    if not np.all(np.isfinite(ce)) or np.any(ce < 0):
        raise InformationError(
            "test cross-entropies must be finite and non-negative bits; got "
            f"{ce.tolist()} (convert from nats by dividing by ln 2)"
        )
    usable = label_entropy_bits(labels) - ce
    if ce.ndim == 0 and not isinstance(test_ce_bits, np.ndarray):
        return float(usable)
    return usable


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
    xx = _as_matrix(x, "x")
    codes = _label_codes(y, "y")
    n = t.shape[1]
    _check_same_n(n, xx.shape[0], "information_grid (blocks vs x)")
    _check_same_n(n, codes.numel(), "information_grid (blocks vs y)")
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
