"""Batched probes: agreement with scikit-learn, metric exactness, planted signals, seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, log_loss, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from trustdyn.paths import DATA_DIR
from trustdyn.probes import (
    auroc,
    balanced_accuracy,
    bootstrap_counts,
    bootstrap_intervals,
    compare_with_sklearn,
    cosine_matrix,
    fit_logistic_batched,
    fit_probe_grid,
    label_entropy_bits,
    solver,
    standardise,
    weighted_auroc,
)


def planted(n_layers: int = 3, n: int = 300, m: int = 200, d: int = 16, signal: float = 1.5,
            seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Gaussian activations; layer ℓ carries the label along a fixed direction with strength
    ``signal * ℓ / (L - 1)`` (layer 0: no signal), features on very different scales."""
    gen = torch.Generator().manual_seed(seed)
    y = (torch.rand(n + m, generator=gen) < 0.5).long()
    direction = torch.randn(d, generator=gen)
    direction /= direction.norm()
    scales = torch.logspace(-1, 2, d)
    x = torch.randn(n_layers, n + m, d, generator=gen)
    strength = signal * torch.linspace(0, 1, n_layers)[:, None, None]
    x = (x + strength * (2 * y[None, :, None] - 1) * direction) * scales + 3.0
    return x[:, :n], y[:n], x[:, n:], y[n:], direction, scales


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(7, 60)).astype(np.float32)  # many ties
    labels = rng.integers(0, 2, size=60)
    got = auroc(torch.from_numpy(scores), torch.from_numpy(labels)).numpy()
    want = [roc_auc_score(labels, row) for row in scores]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_weighted_auroc_equals_auroc_of_the_resampled_data_with_ties():
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 4, size=(3, 30)).astype(np.float32)
    labels = rng.integers(0, 2, size=30)
    draws = rng.integers(0, 30, size=(20, 30))
    counts = np.stack([np.bincount(d, minlength=30) for d in draws])
    got = weighted_auroc(torch.from_numpy(scores), torch.from_numpy(labels),
                         torch.from_numpy(counts)).numpy()
    for r in range(3):
        want = [roc_auc_score(labels[d], scores[r, d]) if len(set(labels[d])) == 2
                else np.nan for d in draws]
        np.testing.assert_allclose(got[r], want, atol=1e-12)


def test_auroc_is_nan_for_a_single_class():
    assert math.isnan(float(auroc(torch.randn(10), torch.ones(10))))


def test_bootstrap_intervals_match_a_reference_loop():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 40)).astype(np.float32)
    labels = (rng.random(40) < 0.5).astype(np.int64)
    logits[1] += 2 * labels
    resamples = rng.integers(0, 40, size=(50, 40))
    counts = torch.from_numpy(np.stack([np.bincount(r, minlength=40) for r in resamples]))
    boot = bootstrap_intervals(torch.from_numpy(logits), torch.from_numpy(labels), counts)
    for layer in range(2):
        accs = [np.mean((logits[layer, r] > 0) == labels[r]) for r in resamples]
        aucs = [roc_auc_score(labels[r], logits[layer, r]) for r in resamples]
        baccs = [balanced_accuracy_score(labels[r], logits[layer, r] > 0) for r in resamples]
        np.testing.assert_allclose(boot.accuracy_ci[layer], np.percentile(accs, [2.5, 97.5]))
        np.testing.assert_allclose(boot.accuracy_se[layer], np.std(accs))
        np.testing.assert_allclose(boot.balanced_accuracy_se[layer], np.std(baccs))
        np.testing.assert_allclose(boot.auroc_ci[layer], np.percentile(aucs, [2.5, 97.5]),
                                   atol=1e-12)


def test_balanced_accuracy_matches_sklearn_and_ignores_class_balance():
    rng = np.random.default_rng(4)
    labels = (rng.random(60) < 0.2).astype(np.int64)
    logits = rng.normal(size=(3, 60))
    got = balanced_accuracy(torch.from_numpy(logits), torch.from_numpy(labels)).numpy()
    want = [balanced_accuracy_score(labels, row > 0) for row in logits]
    np.testing.assert_allclose(got, want)
    # A constant answer scores 0.5 whatever the balance (accuracy would be 0.8).
    constant = torch.full((1, 60), 1.0)
    assert float(balanced_accuracy(-constant, torch.from_numpy(labels))) == 0.5


def test_group_bootstrap_draws_whole_groups():
    groups = np.repeat(np.arange(10), 4)  # 10 groups of 4 rows
    counts, units = bootstrap_counts(40, 200, np.random.default_rng(0), groups)
    assert units == 10 and counts.shape == (200, 40)
    by_group = counts.numpy().reshape(200, 10, 4)
    assert (by_group == by_group[:, :, :1]).all()  # a group's rows come together
    assert (by_group[:, :, 0].sum(axis=1) == 10).all()  # as many groups as there are


def test_grouped_intervals_are_wider_for_duplicated_rows():
    # Each test item appears 4 times: treating the copies as independent understates the
    # uncertainty; resampling the items (groups) does not.
    rng = np.random.default_rng(5)
    base = rng.normal(size=(1, 30))
    labels = torch.from_numpy(np.tile((rng.random(30) < 0.5).astype(np.int64), 4))
    logits = torch.from_numpy(np.tile(base + 0.5 * (labels[:30].numpy() - 0.5), 4))
    groups = np.tile(np.arange(30), 4)
    rows = bootstrap_intervals(logits, labels,
                               bootstrap_counts(120, 400, np.random.default_rng(1))[0])
    grouped = bootstrap_intervals(logits, labels,
                                  bootstrap_counts(120, 400, np.random.default_rng(1), groups)[0])
    assert grouped.accuracy_se[0] > 1.6 * rows.accuracy_se[0]
    assert grouped.balanced_accuracy_se[0] > 1.6 * rows.balanced_accuracy_se[0]


def test_solver_reaches_sklearns_optimum():
    x_train, y_train, *_ = planted(n_layers=2, d=12)
    xs, _, _ = standardise(x_train, x_train[:, :5])
    fit = fit_logistic_batched(xs, y_train[None].float(), C=0.5, tol=1e-6, max_iter=500)
    assert fit.converged.all()
    for layer in range(2):
        ref = LogisticRegression(C=0.5, tol=1e-8, max_iter=10_000).fit(xs[layer].numpy(),
                                                                       y_train.numpy())
        np.testing.assert_allclose(fit.weights[layer, 0].numpy(), ref.coef_[0], atol=2e-3)
        np.testing.assert_allclose(float(fit.bias[layer, 0]), ref.intercept_[0], atol=2e-3)


def test_batched_solve_equals_per_layer_solves():
    """Layers converge at different speeds (finished ones leave the working set) and each
    problem is solved independently of the others in the batch."""
    x_train, y_train, *_ = planted(n_layers=5, signal=3.0)
    xs, _, _ = standardise(x_train, x_train[:, :5])
    labels = torch.stack([y_train, y_train.flip(0)]).float()
    batched = fit_logistic_batched(xs, labels)
    assert len(set(batched.n_iter[:, 0].tolist())) > 1  # compaction actually happened
    for layer in range(5):
        alone = fit_logistic_batched(xs[layer:layer + 1].contiguous(), labels)
        torch.testing.assert_close(batched.weights[layer], alone.weights[0], atol=1e-4,
                                   rtol=1e-4)
        assert batched.n_iter[layer].tolist() == alone.n_iter[0].tolist()


def _two_loop_recomputing(grad: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor]]
                          ) -> torch.Tensor:
    """The two-loop recursion as first written: every pair's scalars recomputed per call."""
    q = grad.clone()
    rhos, alphas = [], []
    for s, y in reversed(pairs):
        sy = (s * y).sum(dim=-1, keepdim=True)
        rho = torch.where(sy > 0, 1.0 / sy.clamp_min(1e-30), torch.zeros_like(sy))
        alpha = rho * (s * q).sum(dim=-1, keepdim=True)
        q -= alpha * y
        rhos.append(rho)
        alphas.append(alpha)
    s, y = pairs[-1]
    sy, yy = (s * y).sum(dim=-1, keepdim=True), (y * y).sum(dim=-1, keepdim=True)
    q *= torch.where(sy > 0, sy / yy.clamp_min(1e-30), torch.ones_like(sy))
    for (s, y), rho, alpha in zip(pairs, reversed(rhos), reversed(alphas), strict=True):
        q += s * (alpha - rho * (y * q).sum(dim=-1, keepdim=True))
    return -q


def test_cached_pair_scalars_give_the_recomputed_direction_bit_for_bit():
    """Each pair's 1/sᵀy and scale are computed once; directions must not move by one bit,
    before and after the working set drops finished layers."""
    gen = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(6, 2, 17, generator=gen), torch.randn(6, 2, 17, generator=gen))
             for _ in range(7)]  # random pairs: some have sᵀy ≤ 0 and act as identity
    grad = torch.randn(6, 2, 17, generator=gen)
    history = [solver._Pair.of(s, y) for s, y in pairs]
    assert torch.equal(solver._lbfgs_direction(grad, history), _two_loop_recomputing(grad, pairs))
    rows = torch.tensor([0, 3, 5])
    kept = [(s[rows], y[rows]) for s, y in pairs]
    assert torch.equal(solver._lbfgs_direction(grad[rows], [p.take(rows) for p in history]),
                       _two_loop_recomputing(grad[rows], kept))


def test_planted_signal_metrics_and_control():
    x_train, y_train, x_test, y_test, direction, scales = planted(n_layers=3, signal=2.0)
    grid = fit_probe_grid(x_train, y_train, x_test, y_test, n_bootstrap=200)
    assert grid.accuracy[0] < 0.65 < 0.9 < grid.accuracy[2]  # no signal → chance; planted → high
    assert np.all(np.abs(grid.control_accuracy - 0.5) < 0.15)
    assert np.all(grid.auroc[1:] > grid.control_auroc[1:] + 0.2)
    lo, hi = grid.accuracy_ci.T
    assert np.all((lo <= grid.accuracy) & (grid.accuracy <= hi))
    assert np.all((grid.auroc_ci[:, 0] <= grid.auroc) & (grid.auroc <= grid.auroc_ci[:, 1]))
    assert grid.converged.all()
    # Planted in standardised-noise units along `direction` ⇒ raw weights ∝ direction / scales.
    expected = (direction / scales).numpy()
    assert abs(cosine_matrix(grid.directions[2:], expected[None])[0]) > 0.9
    np.testing.assert_allclose(np.linalg.norm(grid.directions, axis=1), 1.0, rtol=1e-5)


def test_cross_entropy_and_directions_match_sklearn():
    x_train, y_train, x_test, y_test, *_ = planted(n_layers=2, signal=1.0)
    grid = fit_probe_grid(x_train, y_train, x_test, y_test, n_bootstrap=0, control=False)
    for layer in range(2):
        pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(x_train[layer].numpy(),
                                                                         y_train.numpy())
        proba = pipe.predict_proba(x_test[layer].numpy())[:, 1]
        want_bits = log_loss(y_test.numpy(), proba) / math.log(2)
        assert grid.test_ce_bits[layer] == pytest.approx(want_bits, abs=2e-3)
        raw = pipe[-1].coef_[0] / pipe[0].scale_
        cosine = cosine_matrix(grid.directions[layer:layer + 1], raw[None])[0]
        assert cosine > 0.999
    assert grid.test_label_entropy_bits == pytest.approx(label_entropy_bits(y_test))


def test_compare_with_sklearn_on_planted_data():
    report = compare_with_sklearn(*planted(n_layers=3, signal=1.0)[:4])
    assert report["mean_abs_accuracy_diff_pp"] < 1.0
    assert report["mean_abs_auroc_diff"] < 0.01
    assert min(report["direction_cosine"]) > 0.99


def _probe_csv_texts(name: str, per_class: int) -> tuple[list[str], list[int]]:
    """Balanced statements from a vendored probe CSV, read with pandas directly."""
    pd = pytest.importorskip("pandas")
    path = DATA_DIR / "probe" / name
    if not path.exists():
        pytest.skip(f"{path} is not vendored yet")
    frame = pd.read_csv(path)
    frame = frame[frame["statement"].astype(str).str.len() > 0]
    parts = [frame[frame["label"] == c].head(per_class) for c in (0, 1)]
    rows = pd.concat(parts).sample(frac=1.0, random_state=0)
    return rows["statement"].astype(str).tolist(), rows["label"].astype(int).tolist()


@pytest.mark.parametrize("dataset", ["sst2.csv", "confaide.csv"])
def test_matches_sklearn_on_tiny_model_activations_of_real_text(dataset, tiny_llama,
                                                                  tiny_tokenizer):
    from trustdyn.activations import extract_activations

    texts, labels = _probe_csv_texts(dataset, per_class=150)
    acts = extract_activations(tiny_llama, tiny_tokenizer, texts, batch_size=64, max_length=64)
    y = torch.tensor(labels)
    split = 200
    report = compare_with_sklearn(acts.blocks[:, :split], y[:split], acts.blocks[:, split:],
                                  y[split:])
    assert report["mean_abs_accuracy_diff_pp"] < 1.0, report


def test_seeded_and_deterministic():
    data = planted(n_layers=2, signal=0.5)[:4]
    a = fit_probe_grid(*data, seed=3, n_bootstrap=100)
    b = fit_probe_grid(*data, seed=3, n_bootstrap=100)
    c = fit_probe_grid(*data, seed=4, n_bootstrap=100)
    for field in ("accuracy", "accuracy_ci", "auroc_ci", "control_accuracy", "directions"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_array_equal(a.accuracy, c.accuracy)  # the probe itself is seed-free
    assert not np.array_equal(a.accuracy_ci, c.accuracy_ci) or not np.array_equal(
        a.control_accuracy, c.control_accuracy)
    assert a.params["seed"] == 3 and a.params["C"] == 1.0 and a.params["n_bootstrap"] == 100


def test_optional_parts_and_rows():
    data = planted(n_layers=2)[:4]
    grid = fit_probe_grid(*data, n_bootstrap=0, control=False)
    assert np.isnan(grid.accuracy_ci).all() and np.isnan(grid.control_accuracy).all()
    rows = grid.to_rows()
    assert [r["layer"] for r in rows] == [0, 1]
    assert rows[1]["accuracy"] == grid.accuracy[1] and rows[0]["n_train"] == 300
    assert rows[0]["usable_info_bits"] == pytest.approx(
        grid.test_label_entropy_bits - grid.test_ce_bits[0])


def test_constant_features_do_not_break_standardisation():
    x_train, y_train, x_test, y_test, *_ = planted(n_layers=2)
    x_train[:, :, 0] = 7.0
    grid = fit_probe_grid(x_train, y_train, x_test, y_test, n_bootstrap=0)
    assert np.isfinite(grid.directions).all() and np.isfinite(grid.accuracy).all()


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda xt, yt, xs, ys: (xt, torch.zeros_like(yt), xs, ys), "single class"),
        (lambda xt, yt, xs, ys: (xt, yt * 2, xs, ys), "binary"),
        (lambda xt, yt, xs, ys: (xt, yt, xs[:1], ys), "layer count"),
        (lambda xt, yt, xs, ys: (xt, yt[:-1], xs, ys), "one entry per row"),
        (lambda xt, yt, xs, ys: (xt.index_fill(1, torch.tensor([0]), float("nan")), yt, xs, ys),
         "NaN"),
    ],
)
def test_bad_inputs_raise_clear_errors(mutate, match):
    with pytest.raises(ValueError, match=match):
        fit_probe_grid(*mutate(*planted(n_layers=2)[:4]), n_bootstrap=0)


def test_cosine_matrix():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [-1.0, -1.0], [1.0, 0.0]])
    got = cosine_matrix(a, b)
    np.testing.assert_allclose(got[:2], [1.0, -1.0])
    assert np.isnan(got[2])
    with pytest.raises(ValueError, match="one shape"):
        cosine_matrix(a, b[:2])


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), signal=st.floats(0.0, 3.0))
def test_swapping_labels_negates_directions_and_keeps_scores(seed: int, signal: float) -> None:
    # The L2 logistic objective is symmetric under y -> 1 - y, w -> -w, b -> -b.
    x_tr, y_tr, x_te, y_te, _, _ = planted(n_layers=2, n=120, m=80, d=6, signal=signal,
                                           seed=seed)
    grid = fit_probe_grid(x_tr, y_tr, x_te, y_te, seed=seed, n_bootstrap=50)
    flipped = fit_probe_grid(x_tr, 1 - y_tr, x_te, 1 - y_te, seed=seed, n_bootstrap=50)
    np.testing.assert_allclose(flipped.accuracy, grid.accuracy, atol=1e-9)
    np.testing.assert_allclose(flipped.auroc, grid.auroc, atol=1e-6)
    np.testing.assert_allclose(flipped.control_accuracy, grid.control_accuracy, atol=1e-9)
    np.testing.assert_allclose(flipped.directions, -grid.directions, atol=2e-3)
