"""Shannon-side baselines: the KSG k-NN mutual information, label entropy, usable information.

:func:`ksg_mutual_information` (Kraskov–Stögbauer–Grassberger, algorithm 1) is a
Shannon-consistent cross-check for low-dimensional continuous data, biased towards zero for
high MI or high dimension (O(n² d) brute force); :func:`usable_information_bits` is a probe's
predictive V-information H(Y) − test cross-entropy (Xu et al. 2020), a lower bound on I(T;Y)
only for a calibrated probe and negative when it overfits; it is free given the probe's loss.
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np
import torch

from trustdyn.information.kernels import (
    Data,
    InformationError,
    as_matrix,
    check_same_n,
    is_labels,
    label_codes,
)
from trustdyn.information.renyi import _label_entropy

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
    if is_labels(a) or is_labels(b):
        raise InformationError("ksg_mutual_information needs continuous data, not labels")
    xa, xb = as_matrix(a, "a"), as_matrix(b, "b")
    n = xa.shape[0]
    check_same_n(n, xb.shape[0], "ksg_mutual_information")
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
    return _label_entropy(label_codes(labels), alpha=1.0)


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
