"""Matrix-based Rényi α-entropy and mutual information, in bits.

H_α(A) = log2(Σ_i λ_i^α) / (1 − α) with λ the eigenvalues of the trace-normalised Gram
matrix (Giraldo, Rao & Príncipe 2015; Yu et al. 2019/2020); the joint entropy uses the
Hadamard product of the two Gram matrices, I(A;B) = H(A) + H(B) − H(A,B), and α = 1.01 is
close to the von Neumann (Shannon) limit. It is not Shannon MI: values depend on the kernel
width, are bounded by log2 n and are positively biased under independence (hence the
permutation null). Cost: O(n³) per eigendecomposition; with the delta label kernel the joint
spectrum splits into per-class blocks (Σ_c n_c³ instead of n³).
"""

from __future__ import annotations

import math

import torch

from trustdyn.information.kernels import (
    DEFAULT_WIDTH_RULE,
    Data,
    InformationError,
    _gram,
    _permute_gram,
    check_same_n,
    is_labels,
    label_codes,
)

DEFAULT_ALPHA = 1.01
"""Rényi order: close to 1 so the matrix entropy approximates the von Neumann (Shannon) one."""


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
    a_lab, b_lab = is_labels(a), is_labels(b)
    check_same_n(len(a), len(b), "renyi_mutual_information")
    if a_lab and b_lab:
        ca, cb = label_codes(a), label_codes(b)
        pair = label_codes((ca * (int(cb.max()) + 1) + cb).numpy())
        return _label_entropy(ca, alpha) + _label_entropy(cb, alpha) - _label_entropy(pair, alpha)
    if a_lab or b_lab:
        labels, other, sigma = (a, b, sigma_b) if a_lab else (b, a, sigma_a)
        codes = label_codes(labels)
        k, _ = _gram(other, sigma, width_rule, "data")
        h_joint = float(_joint_entropy_with_labels(k, codes, alpha))
        h_other = float(_entropy_from_spectrum(torch.linalg.eigvalsh(k), alpha))
        return h_other + _label_entropy(codes, alpha) - h_joint
    ka, _ = _gram(a, sigma_a, width_rule, "a")
    kb, _ = _gram(b, sigma_b, width_rule, "b")
    spectra = torch.linalg.eigvalsh(torch.stack([ka, kb, ka * kb]))
    h = _entropy_from_spectrum(spectra, alpha)
    return float(h[0] + h[1] - h[2])
