"""The reference the batched solver is checked against: scikit-learn's per-layer probe loop."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from trustdyn.probes.grid import fit_probe_grid
from trustdyn.probes.metrics import accuracy, auroc, cosine_matrix


def sklearn_probe_loop(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                       *, C: float = 1.0, seed: int = 0,  # noqa: N803
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Run the reference, ``make_pipeline(StandardScaler(), LogisticRegression(C=C))``, per layer.

    Args:
        x_train: ``[L, n, d]`` training activations.
        y_train: ``[n]`` 0/1 labels.
        x_test: ``[L, m, d]`` test activations.
        C: Inverse regularisation strength.
        seed: ``random_state`` (lbfgs does not use it; kept for symmetry).

    Returns:
        ``(test_scores [L, m], raw_directions [L, d])`` (unit-norm, raw space).

    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores, directions = [], []
    for layer in range(x_train.shape[0]):
        pipe = make_pipeline(StandardScaler(), LogisticRegression(C=C, random_state=seed))
        with warnings.catch_warnings():
            # sklearn's 100-iteration cap often warns on activations; the reference is
            # what the paper ran, warnings and all.
            warnings.simplefilter("ignore", ConvergenceWarning)
            pipe.fit(x_train[layer], y_train)
        scores.append(pipe.decision_function(x_test[layer]))
        raw = pipe[-1].coef_[0] / pipe[0].scale_
        directions.append(raw / np.linalg.norm(raw))
    return np.stack(scores), np.stack(directions)

def compare_with_sklearn(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                         y_test: torch.Tensor, *, C: float = 1.0,  # noqa: N803
                         ) -> dict[str, Any]:
    """Fit our batched probes and sklearn's reference per layer; report how they differ.

    Args:
        x_train: ``[L, n, d]`` training activations.
        y_train: ``[n]`` 0/1 labels.
        x_test: ``[L, m, d]`` test activations.
        y_test: ``[m]`` 0/1 labels.
        C: Inverse regularisation strength for both.

    Returns:
        A dict with per-layer ``ours_accuracy``, ``sklearn_accuracy``, ``ours_auroc``,
        ``sklearn_auroc`` (lists), ``mean_abs_accuracy_diff_pp``,
        ``max_abs_accuracy_diff_pp``, ``mean_abs_auroc_diff``, ``direction_cosine``
        (per layer, ours vs sklearn, raw space), and wall-clock ``ours_seconds`` /
        ``sklearn_seconds``.

    """
    start = time.perf_counter()
    grid = fit_probe_grid(x_train, y_train, x_test, y_test, C=C, n_bootstrap=0, control=False)
    ours_seconds = time.perf_counter() - start
    start = time.perf_counter()
    sk_scores, sk_dirs = sklearn_probe_loop(
        x_train.to(torch.float32).numpy(), y_train.numpy(), x_test.to(torch.float32).numpy(),
        C=C,
    )
    sklearn_seconds = time.perf_counter() - start
    sk_logits = torch.from_numpy(sk_scores)
    sk_acc = accuracy(sk_logits, y_test).numpy()
    sk_auc = auroc(sk_logits, y_test).numpy()
    acc_diff_pp = 100 * np.abs(grid.accuracy - sk_acc)
    return {
        "ours_accuracy": grid.accuracy.tolist(),
        "sklearn_accuracy": sk_acc.tolist(),
        "ours_auroc": grid.auroc.tolist(),
        "sklearn_auroc": sk_auc.tolist(),
        "mean_abs_accuracy_diff_pp": float(acc_diff_pp.mean()),
        "max_abs_accuracy_diff_pp": float(acc_diff_pp.max()),
        "mean_abs_auroc_diff": float(np.nanmean(np.abs(grid.auroc - sk_auc))),
        "direction_cosine": cosine_matrix(grid.directions, sk_dirs).tolist(),
        "ours_seconds": ours_seconds,
        "sklearn_seconds": sklearn_seconds,
        "n_layers": grid.n_layers,
        "n_train": grid.n_train,
        "n_test": grid.n_test,
    }
