"""Known-answer, invariance, null and turn-detection tests for trustdyn.information."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trustdyn.information import (
    InformationError,
    detect_turns,
    gaussian_gram,
    hsic_sensitivity,
    information_grid,
    kernel_width,
    ksg_mutual_information,
    label_entropy_bits,
    label_gram,
    normalised_hsic,
    permutation_null,
    renyi_entropy,
    renyi_mutual_information,
    usable_information_bits,
)
from trustdyn.information.hsic import _resolvent as resolvent

FAST = settings(max_examples=12, deadline=None)


@pytest.fixture(autouse=True)
def single_thread():
    """Small dense linear algebra: one thread avoids oversubscription on shared runners."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gaussian_pair(rho: float, d: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs with per-dimension correlation rho: I = -d/2 log2(1 - rho^2) bits."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=gen, dtype=torch.float64)
    noise = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return a, rho * a + math.sqrt(1.0 - rho**2) * noise


def planted(strength: float, n: int = 256, d: int = 16, seed: int = 0
            ) -> tuple[torch.Tensor, np.ndarray]:
    """Representation with a label signal of the given strength along one direction."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    u = torch.randn(d, generator=gen, dtype=torch.float64)
    t = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return t + strength * (2 * y[:, None] - 1) * u / u.norm(), y.numpy()


def true_mi_bits(rho: float, d: int = 1) -> float:
    return -0.5 * d * math.log2(1.0 - rho**2)


# --- kernels and entropies with exact answers ------------------------------------------------


def test_renyi_entropy_known_spectra() -> None:
    n = 16
    assert renyi_entropy(torch.eye(n)) == pytest.approx(math.log2(n), abs=1e-12)
    assert renyi_entropy(torch.ones(n, n)) == pytest.approx(0.0, abs=1e-9)
    balanced = np.repeat([0, 1, 2, 3], 4)
    for alpha in (1.0, 1.01, 2.0):
        # Uniform spectra have Rényi entropy log2(c) for every alpha.
        assert renyi_entropy(label_gram(balanced), alpha) == pytest.approx(2.0, abs=1e-9)
    assert label_entropy_bits(np.array([0, 0, 0, 1])) == pytest.approx(
        -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))


def test_gaussian_gram_and_widths() -> None:
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    k = gaussian_gram(x, sigma=2.0)
    assert torch.allclose(k.diagonal(), torch.ones(4, dtype=torch.float64))
    assert k[0, 3].item() == pytest.approx(math.exp(-9 / 8))
    # Pairwise distances 1,1,1,2,2,3: torch's median takes the lower middle value.
    assert kernel_width(x, "median") == pytest.approx(1.0)
    assert kernel_width(x, "scott") == pytest.approx(math.sqrt(1.25) * 4 ** (-1 / 5))
    assert kernel_width(torch.zeros(5, 3), "median") == 1.0  # constant data: safe fallback
    assert kernel_width(torch.zeros(5, 9), "paper_fixed") == pytest.approx(150.0)
    with pytest.raises(InformationError, match="Unknown width rule"):
        kernel_width(x, "silly")
    with pytest.raises(InformationError, match="positive"):
        gaussian_gram(x, sigma=0.0)


def test_label_joint_block_path_equals_dense_hadamard() -> None:
    t, y = planted(1.0, n=64, d=5)
    sigma = kernel_width(t)
    kt, ky = gaussian_gram(t, sigma), label_gram(y)
    dense = renyi_entropy(kt) + renyi_entropy(ky) - renyi_entropy(kt * ky)
    assert renyi_mutual_information(t, y) == pytest.approx(dense, abs=1e-10)
    assert renyi_mutual_information(y, t) == pytest.approx(dense, abs=1e-10)


def test_renyi_of_two_label_vectors_is_exact() -> None:
    y = np.array([0, 0, 1, 1] * 8)
    assert renyi_mutual_information(y, y, alpha=1.0) == pytest.approx(1.0, abs=1e-12)
    z = np.array([0, 1] * 16)  # independent of y by construction (balanced cross-tab)
    assert renyi_mutual_information(y, z, alpha=1.0) == pytest.approx(0.0, abs=1e-12)


# --- known answers: Gaussians, planted labels -------------------------------------------------


@pytest.mark.parametrize("estimator", [renyi_mutual_information, normalised_hsic])
def test_estimators_rank_gaussian_correlations(estimator: Callable[..., float]) -> None:
    rhos = (0.0, 0.3, 0.6, 0.9, 0.99)
    values = [estimator(*gaussian_pair(rho, d=2, n=256, seed=1)) for rho in rhos]
    assert all(b > a for a, b in itertools.pairwise(values)), values


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_ksg_matches_closed_form_for_1d_gaussians(rho: float) -> None:
    a, b = gaussian_pair(rho, d=1, n=1000, seed=2)
    assert ksg_mutual_information(a, b, k=3) == pytest.approx(true_mi_bits(rho), abs=0.1)


def test_ksg_rejects_labels_and_duplicates() -> None:
    with pytest.raises(InformationError, match="continuous"):
        ksg_mutual_information(np.array([0, 1, 0, 1]), torch.randn(4))
    with pytest.raises(InformationError, match="duplicated"):
        ksg_mutual_information(torch.zeros(10, 1), torch.zeros(10, 1))


@pytest.mark.parametrize("estimator", [renyi_mutual_information, normalised_hsic])
def test_planted_label_signal_gives_monotone_response(estimator: Callable[..., float]
                                                      ) -> None:
    values = [estimator(*planted(s)) for s in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(b > a for a, b in itertools.pairwise(values)), values


# --- nHSIC against the reference formula and its documented behaviour -------------------------


def reference_nhsic(kx: torch.Tensor, ky: torch.Tensor, eps: float) -> float:
    """The HSIC-bottleneck form: one-sided centring K H and explicit inverses."""
    n = kx.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    eye = torch.eye(n, dtype=torch.float64)
    rx = kx @ h @ torch.linalg.inv(kx @ h + eps * n * eye)
    ry = ky @ h @ torch.linalg.inv(ky @ h + eps * n * eye)
    return float(torch.sum(rx * ry.T))


@pytest.mark.parametrize("ridge", [1e-3, 1e-2, 1e-1])
def test_nhsic_equals_reference_formula(ridge: float) -> None:
    a, b = gaussian_pair(0.7, d=3, n=96, seed=3)
    sa, sb = kernel_width(a), kernel_width(b)
    expected = reference_nhsic(gaussian_gram(a, sa), gaussian_gram(b, sb), ridge)
    assert normalised_hsic(a, b, ridge=ridge) == pytest.approx(expected, rel=1e-8)
    t, y = planted(1.0, n=96)
    expected = reference_nhsic(gaussian_gram(t, kernel_width(t)), label_gram(y), ridge)
    assert normalised_hsic(t, y, ridge=ridge) == pytest.approx(expected, rel=1e-8)


def test_nhsic_permutation_mean_matches_closed_form() -> None:
    a, b = gaussian_pair(0.8, d=2, n=64, seed=4)
    r = resolvent(torch.stack([gaussian_gram(a, kernel_width(a)),
                               gaussian_gram(b, kernel_width(b))]), 1e-2)
    expected = float(r[0].trace() * r[1].trace()) / (64 - 1)
    mean, std = permutation_null(normalised_hsic, a, b, n_permutations=200, seed=0)
    assert mean == pytest.approx(expected, abs=4 * std / math.sqrt(200))


def test_tiny_ridge_saturates_nhsic_in_high_dimension() -> None:
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(128, 64, generator=gen, dtype=torch.float64)
    b = torch.randn(128, 64, generator=gen, dtype=torch.float64)
    assert normalised_hsic(a, b, ridge=1e-5) > 0.9 * 127  # independent, yet ≈ n - 1
    assert normalised_hsic(a, b) < 0.05 * 127


def test_hsic_sensitivity_relative_widths_are_scale_free_absolute_are_not() -> None:
    a, b = gaussian_pair(0.8, d=4, n=128, seed=6)
    rel = hsic_sensitivity(a, b, [0.5, 1.0, 2.0])
    assert rel[1].value == pytest.approx(normalised_hsic(a, b), rel=1e-12)
    assert rel[1].sigma_x == pytest.approx(kernel_width(a))
    assert len({round(r.value, 6) for r in rel}) == 3  # the width matters
    rel_scaled = hsic_sensitivity(10 * a, 10 * b, [0.5, 1.0, 2.0])
    for r, s in zip(rel, rel_scaled, strict=True):
        assert s.value == pytest.approx(r.value, rel=1e-8)
    fixed = hsic_sensitivity(a, b, [5.0], absolute=True)[0].value
    fixed_scaled = hsic_sensitivity(10 * a, 10 * b, [5.0], absolute=True)[0].value
    assert abs(fixed - fixed_scaled) > 0.1  # a fixed width tracks the data's scale
    labels = hsic_sensitivity(*planted(1.0, n=64), [1.0])[0]
    assert labels.sigma_y is None


# --- invariances (hypothesis) -----------------------------------------------------------------


def random_data(seed: int, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=gen, dtype=torch.float64)
    b = torch.tanh(a @ torch.randn(d, d, generator=gen, dtype=torch.float64)) + 0.3 * torch.randn(
        n, d, generator=gen, dtype=torch.float64)
    y = (a[:, 0] + torch.randn(n, generator=gen, dtype=torch.float64) > 0).long().numpy()
    y[:2] = [0, 1]  # both classes present
    return a, b, y


ESTIMATORS: list[Callable[..., float]] = [renyi_mutual_information, normalised_hsic]


@FAST
@given(seed=st.integers(0, 2**16), n=st.integers(8, 48), d=st.integers(1, 6))
def test_joint_row_permutation_leaves_values_unchanged(seed: int, n: int, d: int) -> None:
    a, b, y = random_data(seed, n, d)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    for est in ESTIMATORS:
        assert est(a[perm], b[perm]) == pytest.approx(est(a, b), abs=1e-9)
        assert est(b[perm], y[perm.numpy()]) == pytest.approx(est(b, y), abs=1e-9)
    assert ksg_mutual_information(a[perm], b[perm]) == pytest.approx(
        ksg_mutual_information(a, b), abs=1e-9)


@FAST
@given(seed=st.integers(0, 2**16), n=st.integers(8, 48), d=st.integers(1, 6),
       scale_a=st.floats(1e-2, 1e2), scale_b=st.floats(1e-2, 1e2),
       rule=st.sampled_from(["median", "scott"]))
def test_rescaling_with_width_rule_leaves_values_unchanged(
        seed: int, n: int, d: int, scale_a: float, scale_b: float, rule: str) -> None:
    a, b, y = random_data(seed, n, d)
    for est in ESTIMATORS:
        base = est(a, b, width_rule=rule)
        assert est(scale_a * a, scale_b * b, width_rule=rule) == pytest.approx(base, abs=1e-8)
        base_y = est(b, y, width_rule=rule)
        assert est(scale_b * b, y, width_rule=rule) == pytest.approx(base_y, abs=1e-8)


# --- permutation nulls ------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_independent_data_lies_within_the_null(estimator: Callable[..., float]) -> None:
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(128, 8, generator=gen, dtype=torch.float64)
    b = torch.randn(128, 8, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (128,), generator=gen).numpy()
    for first, second in ((a, b), (a, y)):
        mean, std = permutation_null(estimator, first, second, n_permutations=30, seed=1)
        assert std > 0
        assert abs(estimator(first, second) - mean) < 3 * std


def test_dependent_data_lies_far_outside_the_null() -> None:
    t, y = planted(2.0, n=128)
    for estimator in ESTIMATORS:
        mean, std = permutation_null(estimator, t, y, n_permutations=10, seed=0)
        assert estimator(t, y) > mean + 10 * std


def test_permutation_null_is_seeded() -> None:
    a, b = gaussian_pair(0.5, d=2, n=32, seed=8)
    first = permutation_null(normalised_hsic, a, b, n_permutations=5, seed=3)
    assert permutation_null(normalised_hsic, a, b, n_permutations=5, seed=3) == first
    assert permutation_null(normalised_hsic, a, b, n_permutations=5, seed=4) != first
    with pytest.raises(InformationError, match="at least 2"):
        permutation_null(normalised_hsic, a, b, n_permutations=1)


# --- the per-checkpoint grid ------------------------------------------------------------------


def grid_inputs(n: int = 64, n_layers: int = 3, d: int = 8, seed: int = 9
                ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    y = (x[:, 0] > 0).long().numpy()
    layers = [torch.tanh(x @ torch.randn(d, d, generator=gen) * (i + 1) / math.sqrt(d))
              for i in range(n_layers)]
    return torch.stack(layers), x, y


def test_grid_matches_standalone_estimators_and_nulls() -> None:
    blocks, x, y = grid_inputs()
    grid = information_grid(blocks, x, y, seed=2, n_permutations=6)
    assert len(grid) == 3 * 2 * 2
    by_key = {(e.layer, e.estimator, e.quantity): e for e in grid}
    standalone: dict[str, Callable[..., float]] = {
        "renyi": renyi_mutual_information, "nhsic": normalised_hsic}
    for layer in range(3):
        t = blocks[layer]
        for name, est in standalone.items():
            for quantity, (first, second) in {"I(X;T)": (x, t), "I(T;Y)": (t, y)}.items():
                e = by_key[(layer, name, quantity)]
                assert e.value == pytest.approx(est(first, second), abs=1e-9)
                mean, std = permutation_null(est, first, second, n_permutations=6, seed=2)
                assert (e.null_mean, e.null_std) == pytest.approx((mean, std), abs=1e-9)
                assert e.unit == ("bits" if name == "renyi" else "score")
                assert {"estimator", "width_rule", "n", "seed", "n_permutations",
                        "sigma_x", "sigma_t"} <= e.params.keys()
                assert e.params["n"] == 64 and e.params["seed"] == 2
    assert by_key[(0, "renyi", "I(X;T)")].params["alpha"] == 1.01
    assert by_key[(0, "nhsic", "I(X;T)")].params["ridge"] == 1e-2


def test_grid_is_deterministic_and_labels_layers() -> None:
    blocks, x, y = grid_inputs(n_layers=2)
    first = information_grid(blocks, x, y, seed=0, n_permutations=4, layers=[3, 7])
    again = information_grid(blocks.double().numpy(), x.numpy(), y, seed=0, n_permutations=4,
                             layers=[3, 7])
    assert [e.layer for e in first] == [3, 3, 3, 3, 7, 7, 7, 7]
    for e, f in zip(first, again, strict=True):
        assert (e.layer, e.estimator, e.quantity) == (f.layer, f.estimator, f.quantity)
        assert e.value == pytest.approx(f.value, abs=1e-9)
        assert e.null_std == pytest.approx(f.null_std, abs=1e-9)
    other = information_grid(blocks, x, y, seed=1, n_permutations=4, layers=[3, 7])
    assert [e.null_mean for e in other] != [e.null_mean for e in first]
    only = information_grid(blocks, x, y, n_permutations=3, estimators=["nhsic"])
    assert {e.estimator for e in only} == {"nhsic"}


def test_grid_results_do_not_depend_on_workers_and_threads_are_restored() -> None:
    blocks, x, y = grid_inputs(n_layers=2)
    torch.set_num_threads(2)  # the autouse fixture restores the original afterwards
    serial = information_grid(blocks, x, y, n_permutations=5, workers=1)
    assert torch.get_num_threads() == 2
    parallel = information_grid(blocks, x, y, n_permutations=5, workers=3)
    assert [(e.value, e.null_mean, e.null_std) for e in serial] == [
        (e.value, e.null_mean, e.null_std) for e in parallel]
    with pytest.raises(InformationError, match="workers"):
        information_grid(blocks, x, y, workers=0)


@pytest.mark.parametrize(("change", "match"), [
    (lambda b, x, y: (b[:, :-1], x, y), "rows"),
    (lambda b, x, y: (b, x, y[:-1]), "rows"),
    (lambda b, x, y: (b[0], x, y), r"\[n_layers, n, d\]"),
    (lambda b, x, y: (b, x, np.zeros_like(y)), "single class"),
    (lambda b, x, y: (b * float("nan"), x, y), "NaN"),
])
def test_grid_rejects_bad_inputs(change, match: str) -> None:
    with pytest.raises(InformationError, match=match):
        information_grid(*change(*grid_inputs()), n_permutations=2)


def test_grid_rejects_bad_settings() -> None:
    blocks, x, y = grid_inputs()
    with pytest.raises(InformationError, match="Unknown estimators"):
        information_grid(blocks, x, y, estimators=["mine"])
    with pytest.raises(InformationError, match="layers"):
        information_grid(blocks, x, y, layers=[0])
    with pytest.raises(InformationError, match="alpha"):
        information_grid(blocks, x, y, alpha=0.0)


# --- usable information -------------------------------------------------------------------------


def test_usable_information_bits() -> None:
    labels = np.array([0, 1] * 10)
    assert usable_information_bits(1.0, labels) == pytest.approx(0.0)
    assert usable_information_bits(0.0, labels) == pytest.approx(1.0)
    out = usable_information_bits(np.array([0.25, 1.5]), labels)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [0.75, -0.5])
    from_tensor = usable_information_bits(torch.tensor([0.5, 1.0]), labels)
    np.testing.assert_allclose(from_tensor, [0.5, 0.0])
    with pytest.raises(InformationError, match="non-negative"):
        usable_information_bits(-0.1, labels)


# --- turn detection ---------------------------------------------------------------------------


def curve_frame(values: np.ndarray, null_std: float, steps: np.ndarray | None = None,
                layer: int = 0, dataset: str = "d", estimator: str = "renyi") -> pd.DataFrame:
    steps = np.arange(len(values)) * 10 if steps is None else steps
    return pd.DataFrame({"step": steps, "layer": layer, "dataset": dataset,
                         "estimator": estimator, "value": values, "null_std": null_std})


def test_turn_found_at_the_peak_of_a_rise_then_fall() -> None:
    rng = np.random.default_rng(0)
    steps = np.array([0, 5, 10, 20, 40, 60, 80, 120, 160, 200, 300, 400])
    trend = np.array([1.0, 1.3, 1.6, 1.9, 2.2, 2.0, 1.8, 1.7, 1.6, 1.55, 1.5, 1.5])
    values = trend + rng.normal(0, 0.02, trend.size)
    out = detect_turns(curve_frame(values, 0.02, steps))
    row = out.iloc[0]
    assert row["turn_step"] == 40
    assert bool(row["distinguishable"])
    assert row["peak_value"] == pytest.approx(values[4])
    assert row["fall"] == pytest.approx(values[4] - values[5:].min())
    assert row["final_value"] == pytest.approx(values[-1])


def test_flat_noisy_curves_are_not_distinguishable() -> None:
    rng = np.random.default_rng(1)
    frames = [curve_frame(1.0 + rng.normal(0, 0.05, 25), 0.05, layer=i) for i in range(20)]
    out = detect_turns(pd.concat(frames))
    assert len(out) == 20
    assert not out["distinguishable"].any()


def test_noise_beyond_the_null_is_not_mistaken_for_a_turn() -> None:
    # The null std says 0.001, but the curve scatters by 0.05: the second-difference noise
    # estimate must catch it.
    rng = np.random.default_rng(2)
    frames = [curve_frame(1.0 + rng.normal(0, 0.05, 25), 0.001, layer=i) for i in range(20)]
    assert not detect_turns(pd.concat(frames))["distinguishable"].any()


def test_monotone_curves_have_no_turn() -> None:
    rising = detect_turns(curve_frame(np.linspace(1, 2, 10), 0.01)).iloc[0]
    assert np.isnan(rising["turn_step"]) and not rising["distinguishable"]
    assert rising["fall"] == 0.0
    falling = detect_turns(curve_frame(np.linspace(2, 1, 10), 0.01)).iloc[0]
    assert np.isnan(falling["turn_step"]) and not falling["distinguishable"]


def test_a_fall_that_recovers_is_not_sustained() -> None:
    values = np.array([1.0, 1.5, 2.0, 2.0, 1.4, 2.0, 2.1, 2.2, 2.3, 2.4])
    assert not detect_turns(curve_frame(values, 0.02)).iloc[0]["distinguishable"]


def test_detect_turns_groups_filters_and_validates() -> None:
    peak = np.array([1.0, 2.0, 3.0, 2.0, 1.0, 1.0])
    frame = pd.concat([
        curve_frame(peak, 0.01, dataset="a"),
        curve_frame(peak[::-1].copy(), 0.01, dataset="b", estimator="nhsic"),
    ])
    other = curve_frame(np.ones(6) * 9, 0.01, dataset="a").assign(quantity="I(T;Y)")
    frame = pd.concat([frame.assign(quantity="I(X;T)"), other])
    out = detect_turns(frame)
    assert list(out["dataset"]) == ["a", "b"]
    assert out.iloc[0]["turn_step"] == 20 and out.iloc[0]["peak_value"] == 3.0
    assert out.iloc[1]["turn_step"] == 30  # reversed: peak at index 3
    assert not detect_turns(curve_frame(peak[:2], 0.01)).iloc[0]["distinguishable"]
    assert detect_turns(frame.iloc[0:0]).empty
    with pytest.raises(ValueError, match="missing"):
        detect_turns(frame.drop(columns="null_std"))
    with pytest.raises(ValueError, match="repeated steps"):
        detect_turns(pd.concat([curve_frame(peak, 0.01), curve_frame(peak, 0.01)]))
