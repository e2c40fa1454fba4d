"""The probe grid of one activation set: fit every layer and its shuffled-label control, score.

:func:`fit_probe_grid` returns a :class:`ProbeGrid` of test metrics with item-bootstrap
intervals, the usable information and the probe directions in raw activation space.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trustdyn.probes.metrics import (
    accuracy,
    auroc,
    balanced_accuracy,
    bootstrap_counts,
    bootstrap_intervals,
    cross_entropy_bits,
    label_entropy_bits,
)
from trustdyn.probes.solver import (
    ESTIMATOR,
    SOLVER,
    STANDARDISATION,
    fit_logistic_batched,
    raw_directions,
    standardise,
)
from trustdyn.stats import CI_LEVEL
from trustdyn.timing import timed


@dataclass(frozen=True)
class ProbeGrid:
    """Probe results for every layer of one activation set (numpy arrays, layer-major).

    Attributes:
        accuracy: ``[L]`` test accuracy of the probe per layer.
        accuracy_ci: ``[L, 2]`` bootstrap 95% percentile interval of the accuracy.
        accuracy_se: ``[L]`` bootstrap standard error of the accuracy.
        balanced_accuracy: ``[L]`` mean of the per-class test accuracies (0.5 for any
            probe that ignores its input, whatever the class balance).
        balanced_accuracy_se: ``[L]`` its bootstrap standard error.
        auroc: ``[L]`` test AUROC.
        auroc_ci: ``[L, 2]`` bootstrap 95% percentile interval of the AUROC.
        control_accuracy: ``[L]`` test accuracy of the probe fitted on shuffled labels
            (NaN when the control was not run).
        control_auroc: ``[L]`` test AUROC of that control probe (NaN when not run).
        test_ce_bits: ``[L]`` mean test cross-entropy of the probe in bits.
        directions: ``[L, d]`` unit-norm probe weights in raw activation space.
        n_iter: ``[L]`` L-BFGS iterations used for the real-label probe.
        converged: ``[L]`` whether that probe met the gradient tolerance.
        n_train: Training rows.
        n_test: Test rows.
        n_test_groups: Independent units the bootstrap resampled (groups, else rows).
        test_label_entropy_bits: ``H(Y)`` of the test labels in bits.
        params: Provenance: estimator, C, solver, max_iter, tol, seed, n_bootstrap,
            standardisation, control.

    """

    accuracy: np.ndarray
    accuracy_ci: np.ndarray
    accuracy_se: np.ndarray
    balanced_accuracy: np.ndarray
    balanced_accuracy_se: np.ndarray
    auroc: np.ndarray
    auroc_ci: np.ndarray
    control_accuracy: np.ndarray
    control_auroc: np.ndarray
    test_ce_bits: np.ndarray
    directions: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    n_train: int
    n_test: int
    n_test_groups: int
    test_label_entropy_bits: float
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        """Number of layers probed."""
        return int(self.accuracy.shape[0])

    def to_rows(self) -> list[dict[str, Any]]:
        """Return one flat dict of scalars per layer (directions are left out: too big)."""
        return [
            {
                "layer": layer,
                "accuracy": float(self.accuracy[layer]),
                "accuracy_lo": float(self.accuracy_ci[layer, 0]),
                "accuracy_hi": float(self.accuracy_ci[layer, 1]),
                "accuracy_se": float(self.accuracy_se[layer]),
                "balanced_accuracy": float(self.balanced_accuracy[layer]),
                "balanced_accuracy_se": float(self.balanced_accuracy_se[layer]),
                "auroc": float(self.auroc[layer]),
                "auroc_lo": float(self.auroc_ci[layer, 0]),
                "auroc_hi": float(self.auroc_ci[layer, 1]),
                "control_accuracy": float(self.control_accuracy[layer]),
                "control_auroc": float(self.control_auroc[layer]),
                "test_ce_bits": float(self.test_ce_bits[layer]),
                "usable_info_bits": float(self.test_label_entropy_bits
                                          - self.test_ce_bits[layer]),
                "n_iter": int(self.n_iter[layer]),
                "converged": bool(self.converged[layer]),
                "n_train": self.n_train,
                "n_test": self.n_test,
                "n_test_groups": self.n_test_groups,
            }
            for layer in range(self.n_layers)
        ]

def fit_probe_grid(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    *,
    C: float = 1.0,  # noqa: N803 (scikit-learn's name)
    seed: int = 0,
    n_bootstrap: int = 1000,
    test_groups: np.ndarray | None = None,
    control: bool = True,
    max_iter: int = 200,
    tol: float = 1e-4,
) -> ProbeGrid:
    """Fit an L2 logistic-regression probe on every layer at once and score it.

    Args:
        x_train: ``[L, n, d]`` training activations (any float dtype; used as float32).
        y_train: ``[n]`` binary labels (0/1 or bool); both classes must occur.
        x_test: ``[L, m, d]`` test activations.
        y_test: ``[m]`` binary test labels.
        C: Inverse regularisation strength, as in scikit-learn.
        seed: Seeds the control's label permutation and the bootstrap resamples.
        n_bootstrap: Bootstrap replicates for the 95% intervals (0: intervals are NaN).
        test_groups: ``[m]`` group key of each test row (rows of a group are not
            independent); the bootstrap then resamples whole groups.
        control: Also fit a probe on permuted training labels (same features, same seed).
        max_iter: L-BFGS iteration cap per problem. sklearn's default is 100; ours
            counts iterations the same way but is set higher so the probe converges.
        tol: Stop when max |gradient| of the mean-scaled objective ≤ ``tol`` (sklearn's
            rule and default).

    Returns:
        A :class:`ProbeGrid`.

    Raises:
        ValueError: on mismatched shapes, non-binary or single-class labels, non-finite
            activations or invalid hyper-parameters.

    """
    _validate_inputs(x_train, y_train, x_test, y_test, C=C, n_bootstrap=n_bootstrap,
                     max_iter=max_iter)
    if test_groups is not None and len(test_groups) != x_test.shape[1]:
        raise ValueError(f"test_groups has {len(test_groups)} entries for "
                         f"{x_test.shape[1]} test rows")
    # The fit runs where the activations are (a GPU makes it much faster); scoring and
    # bootstrap need only the [L, 2, m] test logits and run on the CPU.
    y_tr = _as_binary(y_train).to(x_train.device)
    y_te = _as_binary(y_test).cpu()
    xs_train, xs_test, scale = standardise(x_train, x_test.to(x_train.device))
    perm_rng, boot_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    columns = [y_tr]
    if control:
        columns.append(y_tr[torch.from_numpy(perm_rng.permutation(len(y_tr))).to(y_tr.device)])
    with timed("probe/fits"):
        fit = fit_logistic_batched(xs_train, torch.stack(columns), C=C, max_iter=max_iter,
                                   tol=tol)
    logits = (torch.bmm(fit.weights, xs_test.transpose(1, 2))
              + fit.bias[..., None]).cpu()  # [L, K, m]
    real = logits[:, 0]  # [L, m]
    with timed("probe/bootstrap"):
        counts, n_units = bootstrap_counts(len(y_te), n_bootstrap, boot_rng, test_groups)
        boot = bootstrap_intervals(real, y_te, counts)
    nan_layers = np.full(real.shape[0], np.nan)
    return ProbeGrid(
        accuracy=_np(accuracy(real, y_te)),
        accuracy_ci=boot.accuracy_ci,
        accuracy_se=boot.accuracy_se,
        balanced_accuracy=_np(balanced_accuracy(real, y_te)),
        balanced_accuracy_se=boot.balanced_accuracy_se,
        auroc=_np(auroc(real, y_te)),
        auroc_ci=boot.auroc_ci,
        control_accuracy=_np(accuracy(logits[:, 1], y_te)) if control else nan_layers,
        control_auroc=_np(auroc(logits[:, 1], y_te)) if control else nan_layers.copy(),
        test_ce_bits=_np(cross_entropy_bits(real, y_te)),
        directions=_np(raw_directions(fit.weights[:, 0], scale)),
        n_iter=fit.n_iter[:, 0].cpu().numpy(),
        converged=fit.converged[:, 0].cpu().numpy(),
        n_train=len(y_tr),
        n_test=len(y_te),
        n_test_groups=n_units,
        test_label_entropy_bits=label_entropy_bits(y_te),
        params={
            "estimator": ESTIMATOR, "penalty": "l2", "C": C, "solver": SOLVER,
            "max_iter": max_iter, "tol": tol, "seed": seed, "n_bootstrap": n_bootstrap,
            "ci_level": CI_LEVEL, "standardisation": STANDARDISATION,
            "bootstrap_unit": "test row" if test_groups is None else "test group",
            "control": "shuffled training labels" if control else None,
        },
    )

def _validate_inputs(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                     y_test: torch.Tensor, *, C: float, n_bootstrap: int,  # noqa: N803
                     max_iter: int) -> None:
    """Raise a ValueError that names the first problem with the probe inputs."""
    if x_train.ndim != 3 or x_test.ndim != 3:
        raise ValueError(f"x_train and x_test must be [L, n, d]; got {tuple(x_train.shape)} "
                         f"and {tuple(x_test.shape)}")
    if x_train.shape[0] != x_test.shape[0] or x_train.shape[2] != x_test.shape[2]:
        raise ValueError(f"x_train {tuple(x_train.shape)} and x_test {tuple(x_test.shape)} "
                         "must share the layer count and hidden size")
    if y_train.shape != (x_train.shape[1],) or y_test.shape != (x_test.shape[1],):
        raise ValueError(f"labels must be 1-D with one entry per row: y_train "
                         f"{tuple(y_train.shape)} vs {x_train.shape[1]} rows, y_test "
                         f"{tuple(y_test.shape)} vs {x_test.shape[1]} rows")
    for name, y in (("y_train", y_train), ("y_test", y_test)):
        values = set(torch.unique(y).tolist())
        if not values <= {0, 1}:
            raise ValueError(f"{name} must be binary 0/1; found values {sorted(values)}")
    if len(set(torch.unique(y_train).tolist())) < 2:
        raise ValueError("y_train holds a single class; a probe needs both classes to fit")
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or infinite activations")
    if not C > 0:
        raise ValueError(f"C must be positive, got {C}")
    if n_bootstrap < 0 or max_iter < 1:
        raise ValueError(f"need n_bootstrap >= 0 and max_iter >= 1; got {n_bootstrap}, "
                         f"{max_iter}")

def _as_binary(y: torch.Tensor) -> torch.Tensor:
    """Return labels as a float32 0/1 tensor."""
    return y.to(torch.float32)

def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()
