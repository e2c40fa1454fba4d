"""Input checks, kernel widths and Gram matrices shared by the information estimators.

Every estimator works on float64 Gram matrices: a Gaussian kernel whose width comes from a
documented, scale-equivariant rule applied identically at every checkpoint
(:func:`kernel_width`, default ``"median"``; the paper's fixed width only for sensitivity
reports, since the value then tracks the activations' overall scale, which changes during
training, more than the dependence) and a delta kernel for labels (:func:`label_gram`). The
module also validates inputs (finite ``[n, d]`` matrices, label codes, matching rows) and
draws the seeded row permutations every permutation null uses.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

WidthRule = Literal["median", "scott", "paper_fixed"]
WIDTH_RULES: tuple[str, ...] = ("median", "scott", "paper_fixed")
DEFAULT_WIDTH_RULE: WidthRule = "median"
"""Median pairwise distance: parameter-free and scale-equivariant (see :func:`kernel_width`)."""
_PAPER_SIGMA = 50.0
_SCOTT_GAMMA = 1.0

Data = torch.Tensor | np.ndarray


class InformationError(ValueError):
    """A user-facing problem with the inputs of an information estimate."""


# ---------------------------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------------------------


def is_labels(v: Data) -> bool:
    """Tell whether ``v`` is class labels: a 1-D integer/bool/string/object array."""
    if isinstance(v, torch.Tensor):
        return v.ndim == 1 and not (v.is_floating_point() or v.is_complex())
    return np.asarray(v).ndim == 1 and np.asarray(v).dtype.kind in "biuOUS"


def as_matrix(v: Data, name: str) -> torch.Tensor:
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


def label_codes(y: Data, name: str = "labels") -> torch.Tensor:
    """Return labels as contiguous integer codes ``[n]`` (0..c-1), in sorted label order."""
    arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if arr.ndim != 1:
        raise InformationError(f"{name} must be 1-D [n]; got shape {arr.shape}")
    _, codes = np.unique(arr, return_inverse=True)
    return torch.as_tensor(codes.reshape(-1), dtype=torch.long)


def check_same_n(n_a: int, n_b: int, what: str) -> None:
    """Raise unless the two variables have the same number of rows, at least 4."""
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


def _pair_distances(d2: torch.Tensor) -> torch.Tensor:
    """Distances ``[..., n(n-1)/2]`` of the distinct pairs, from squared distances."""
    n = d2.shape[-1]
    iu = torch.triu_indices(n, n, offset=1, device=d2.device)
    return d2[..., iu[0], iu[1]].sqrt()


def _median_width(d2: torch.Tensor) -> torch.Tensor:
    """Median off-diagonal distance per batch item ``[...]`` from squared distances."""
    dist = _pair_distances(d2)
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
        return torch.full(x.shape[:-2], _PAPER_SIGMA * math.sqrt(d), dtype=torch.float64,
                          device=x.device)
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
    return float(_widths(as_matrix(x, "x"), rule))


def gaussian_gram(x: Data, sigma: float) -> torch.Tensor:
    """Return the Gaussian Gram matrix exp(−‖x_i − x_j‖² / (2σ²)), ``[n, n]`` float64.

    Args:
        x: Samples ``[n, d]`` (or ``[n]``).
        sigma: Kernel width (> 0), e.g. from :func:`kernel_width`.

    """
    if not sigma > 0:
        raise InformationError(f"kernel width must be positive; got {sigma}")
    return torch.exp(-_sq_distances(as_matrix(x, "x")) / (2.0 * sigma * sigma))


def _batched_gram(x: torch.Tensor, rule: str, sigma: float | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian Grams ``[..., n, n]`` and widths ``[...]`` of ``x [..., n, d]``."""
    return _gram_from_sq(x, _sq_distances(x), rule, sigma)


def _gram_from_sq(x: torch.Tensor, d2: torch.Tensor, rule: str, sigma: float | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_batched_gram` from already computed squared distances ``d2 [..., n, n]``."""
    widths = (torch.full(x.shape[:-2], float(sigma), dtype=torch.float64, device=x.device)
              if sigma is not None else _widths(x, rule, d2))
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
    codes = label_codes(labels)
    return (codes[:, None] == codes[None, :]).to(torch.float64)


def _gram(v: Data, sigma: float | None, rule: str, name: str) -> tuple[torch.Tensor, float | None]:
    """Gram ``[n, n]`` of a variable: delta kernel for labels, Gaussian otherwise."""
    if is_labels(v):
        return label_gram(v), None
    gram, width = _batched_gram(as_matrix(v, name), rule, sigma)
    return gram, float(width)
