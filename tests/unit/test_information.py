"""Known-answer, invariance, null and turn-detection tests for trustdyn.information."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trustdyn.information import (
    InformationError,
    gaussian_gram,
    half_samples,
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
    assert len(grid) == 3 * 3 * 2  # layers x (renyi, nhsic, nhsic_paper) x quantities
    assert all(e.status == "ok" and e.reason is None for e in grid)
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
    assert [e.layer for e in first] == [3] * 6 + [7] * 6
    for e, f in zip(first, again, strict=True):
        assert (e.layer, e.estimator, e.quantity) == (f.layer, f.estimator, f.quantity)
        assert e.value == pytest.approx(f.value, abs=1e-9)
        assert e.null_std == pytest.approx(f.null_std, abs=1e-9)
        assert e.se == pytest.approx(f.se, abs=1e-9)
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
    assert [(e.value, e.null_mean, e.null_std, e.se) for e in serial] == [
        (e.value, e.null_mean, e.null_std, e.se) for e in parallel]
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
    with pytest.raises(InformationError, match="n_resamples"):
        information_grid(blocks, x, y, n_resamples=1)
    with pytest.raises(InformationError, match="groups must be 1-D"):
        information_grid(blocks, x, y, groups=np.arange(10))
    with pytest.raises(InformationError, match="at least 4 groups"):
        information_grid(blocks, x, y, groups=np.arange(64) % 3)
    if not torch.cuda.is_available():
        with pytest.raises(InformationError, match="CUDA is not available"):
            information_grid(blocks, x, y, device="cuda")


# --- undefined estimates, half-sample errors, the paper's estimator ---------------------------

NUMBERS = ("value", "null_mean", "null_std", "corrected", "z", "se", "corrected_lo",
           "corrected_hi")


def rows_by_key(grid: list) -> dict:
    return {(e.layer, e.estimator, e.quantity): e for e in grid}


def assert_undefined(e, reason: str) -> None:
    assert e.status == "undefined", (e.layer, e.estimator, e.quantity)
    assert e.reason is not None and reason in e.reason, e.reason
    assert all(math.isnan(getattr(e, name)) for name in NUMBERS), e


def assert_same_numbers(e, f) -> None:
    assert e.status == f.status == "ok" and e.reason is None
    for name in NUMBERS:
        assert getattr(e, name) == pytest.approx(getattr(f, name), rel=1e-9, abs=1e-12), name


def test_half_sample_errors_of_estimators_sharing_grams_equal_each_alone() -> None:
    """Rényi and nHSIC share each half-sample's Gram subsets; neither may disturb the other."""
    blocks, x, y = grid_inputs()
    together = rows_by_key(information_grid(blocks, x, y, seed=1, n_permutations=3,
                                            n_resamples=4))
    for name in ("renyi", "nhsic", "nhsic_paper"):
        for e in information_grid(blocks, x, y, seed=1, n_permutations=3, n_resamples=4,
                                  estimators=[name]):
            assert e.se == together[e.layer, e.estimator, e.quantity].se


def test_ok_rows_carry_corrected_z_and_interval() -> None:
    blocks, x, y = grid_inputs()
    grid = information_grid(blocks, x, y, seed=1, n_permutations=5, n_resamples=6)
    assert {e.estimator for e in grid} == {"renyi", "nhsic", "nhsic_paper"}
    for e in grid:
        assert e.status == "ok" and e.reason is None
        assert e.corrected == e.value - e.null_mean
        assert e.z == e.corrected / e.null_std
        assert e.se > 0
        assert e.corrected_lo == e.corrected - 1.959964 * e.se
        assert e.corrected_hi == e.corrected + 1.959964 * e.se
        assert e.corrected_lo < e.corrected < e.corrected_hi
        assert e.params["n_resamples"] == 6 and e.params["resample_unit"] == "rows"
    none = information_grid(blocks, x, y, seed=1, n_permutations=5, n_resamples=0)
    for e, f in zip(grid, none, strict=True):
        assert (e.value, e.null_mean, e.null_std) == (f.value, f.null_mean, f.null_std)
        assert f.status == "ok" and math.isnan(f.se) and math.isnan(f.corrected_hi)
    same = information_grid(blocks, x, y, seed=1, n_permutations=5, n_resamples=6,
                            device="cpu")
    assert [(e.value, e.null_std, e.se) for e in same] == [
        (e.value, e.null_std, e.se) for e in grid]


@pytest.mark.parametrize("offset", [0.0, 12.0])
def test_constant_x_makes_every_ixt_undefined_but_not_ity(offset: float) -> None:
    blocks, x, y = grid_inputs()
    base = rows_by_key(information_grid(blocks, x, y, n_permutations=4, n_resamples=4))
    gen = torch.Generator().manual_seed(0)
    # The same vector on every statement, up to 1e-9 noise (or exactly zero).
    flat = offset * torch.ones_like(x, dtype=torch.float64) + (
        1e-9 * torch.randn(x.shape, generator=gen, dtype=torch.float64) if offset else 0.0)
    grid = information_grid(blocks, flat, y, n_permutations=4, n_resamples=4)
    assert len(grid) == 18
    for e in grid:
        if e.quantity == "I(X;T)":
            assert_undefined(e, "constant representation: X is (almost) the same vector")
            assert "so I(X;T) measures nothing about the input" in e.reason
        else:
            assert_same_numbers(e, base[(e.layer, e.estimator, e.quantity)])


def test_a_constant_layer_is_undefined_for_that_layer_only() -> None:
    blocks, x, y = grid_inputs()
    blocks = blocks.double()
    base = rows_by_key(information_grid(blocks, x, y, n_permutations=4, n_resamples=4))
    flat = blocks.clone()
    row = torch.linspace(-1, 1, 8, dtype=torch.float64)
    flat[1] = row  # every statement the same vector
    grid = information_grid(flat, x, y, n_permutations=4, n_resamples=4)
    for e in grid:
        if e.layer == 1:
            assert_undefined(e, "constant representation: T (layer 1)")
            assert f"(median pairwise distance 0 vs RMS norm {float(row.norm()):.3g})" in e.reason
            assert f"so {e.quantity} measures nothing about this layer" in e.reason
        else:
            assert_same_numbers(e, base[(e.layer, e.estimator, e.quantity)])


def test_a_null_without_spread_is_undefined() -> None:
    # With the fixed width σ = 50·√d and rows 10⁴ apart, layer 1's Gram is exactly the
    # identity: every permutation gives the same value, so there is no chance variation.
    blocks, x, y = grid_inputs()
    far = blocks.double().clone()
    far[1] *= 1e4
    grid = information_grid(far, x, y, n_permutations=4, n_resamples=4,
                            width_rule="paper_fixed")
    for e in grid:
        if e.layer == 1:
            assert_undefined(e, "the permutation null has no spread, so the estimate cannot "
                                "be compared with chance")
        else:
            assert e.status == "ok" and e.null_std > 0


def test_x_is_layer_leaves_that_layers_ixt_undefined() -> None:
    blocks, _, y = grid_inputs()
    base = rows_by_key(information_grid(blocks, blocks[0], y, n_permutations=4, n_resamples=4))
    grid = information_grid(blocks, blocks[0], y, n_permutations=4, n_resamples=4,
                            x_is_layer=0)
    for e in grid:
        if e.layer == 0 and e.quantity == "I(X;T)":
            assert_undefined(e, "T is X itself (X is this block's output)")
        else:
            assert_same_numbers(e, base[(e.layer, e.estimator, e.quantity)])
            assert e.params["x_is_layer"] == 0
    # Layer ids come from ``layers``: x_is_layer=0 matches no block here.
    shifted = information_grid(blocks, blocks[0], y, n_permutations=4, n_resamples=4,
                               layers=[1, 2, 3], x_is_layer=0)
    assert all(e.status == "ok" for e in shifted)


def test_half_samples_keep_groups_together() -> None:
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 7, size=31)  # 31 groups of 1-6 rows, odd count
    labels = np.repeat([f"q{i}" for i in range(31)], sizes)
    rng.shuffle(labels)
    samples = half_samples(labels.size, 400, seed=3, groups=labels)
    assert len(samples) == 400
    counts = {g: 0 for g in np.unique(labels)}
    for rows in samples:
        assert rows.dtype == np.int64 and np.all(np.diff(rows) > 0)
        kept = set(labels[rows])
        assert len(kept) == 15  # floor(31 / 2) whole groups ...
        assert rows.size == int(np.isin(labels, list(kept)).sum())  # ... with all their rows
        for g in kept:
            counts[g] += 1
    assert all(abs(c / 400 - 15 / 31) < 0.1 for c in counts.values())
    again = half_samples(labels.size, 400, seed=3, groups=labels)
    assert all(np.array_equal(a, b) for a, b in zip(samples, again, strict=True))
    other = half_samples(labels.size, 400, seed=4, groups=labels)
    assert not all(np.array_equal(a, b) for a, b in zip(samples, other, strict=True))
    plain = half_samples(10, 5, seed=0)
    assert all(r.size == 5 and np.unique(r).size == 5 and r.max() < 10 for r in plain)
    assert half_samples(10, 0, seed=0) == []


def test_half_sample_stream_is_independent_of_the_permutations() -> None:
    blocks, x, y = grid_inputs(n_layers=2)
    few = information_grid(blocks, x, y, n_permutations=3, n_resamples=5)
    more = information_grid(blocks, x, y, n_permutations=8, n_resamples=5)
    assert [e.se for e in few] == [e.se for e in more]
    assert [e.null_mean for e in few] != [e.null_mean for e in more]


def test_grouped_half_samples_see_duplicates_as_one_statement() -> None:
    # 64 distinct statements, each repeated 4x. Every estimator is invariant to repeating
    # all rows equally (with fixed widths), so grouping the copies must reproduce the
    # 64-row answer exactly, value and se; treating copies as independent rows must not:
    # each half then still sees most statements, which understates the se.
    blocks, x, y = grid_inputs(n=64, n_layers=2, d=6, seed=4)
    blocks, x = 40 * blocks.double(), 40 * x.double()
    rep = np.repeat(np.arange(64), 4)
    kwargs = {"n_permutations": 3, "n_resamples": 20, "seed": 5, "width_rule": "paper_fixed"}
    base = information_grid(blocks, x, y, **kwargs)
    grouped = information_grid(blocks[:, rep], x[rep], y[rep], groups=rep, **kwargs)
    rows = information_grid(blocks[:, rep], x[rep], y[rep], **kwargs)
    for b, g, r in zip(base, grouped, rows, strict=True):
        assert (b.layer, b.estimator, b.quantity) == (g.layer, g.estimator, g.quantity)
        assert g.value == pytest.approx(b.value, rel=1e-7)
        assert g.se == pytest.approx(b.se, rel=1e-6)
        assert g.se > 0
        assert g.params["resample_unit"] == "groups" and g.params["n_groups"] == 64
        assert r.params["resample_unit"] == "rows" and r.params["n_groups"] == 256
        if (g.estimator, g.quantity) != ("nhsic_paper", "I(X;T)"):
            assert r.se < 0.8 * g.se, (g.estimator, g.quantity, r.se, g.se)
        # The reference's ε = 1e-5 makes its I(X;T) close to the number of distinct rows,
        # so with ungrouped copies it mostly tracks how many distinct statements a half
        # happened to draw: a different artefact, not a smaller se.


def reference_hsic_normalized_cca(x, y, sigma: float = 50.0) -> float:
    """Transcription of HSIC-bottleneck's hsic_normalized_cca (kernelmat, distmat), float64."""
    def distmat(a: torch.Tensor) -> torch.Tensor:
        r = torch.sum(a * a, 1).view([-1, 1])
        prod = torch.mm(a, torch.transpose(a, 0, 1))
        return torch.abs(r.expand_as(prod) - 2 * prod + torch.transpose(r, 0, 1).expand_as(prod))

    def kernelmat(a: torch.Tensor) -> torch.Tensor:
        m = int(a.size()[0])
        h = torch.eye(m, dtype=torch.float64) - (1.0 / m) * torch.ones([m, m], dtype=torch.float64)
        variance = 2.0 * sigma * sigma * a.size()[1]
        return torch.mm(torch.exp(-distmat(a) / variance), h)

    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(y), dtype=torch.float64)
    x, y = (x.view(-1, 1) if x.ndim == 1 else x), (y.view(-1, 1) if y.ndim == 1 else y)
    m = int(x.size()[0])
    kxc, kyc = kernelmat(x), kernelmat(y)
    epsilon = 1e-5
    k_i = torch.eye(m, dtype=torch.float64)
    rx = kxc.mm(torch.inverse(kxc + epsilon * m * k_i))
    ry = kyc.mm(torch.inverse(kyc + epsilon * m * k_i))
    return float(torch.sum(torch.mul(rx, ry.t())))


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_nhsic_paper_is_the_reference_hsic_normalized_cca(scale: float) -> None:
    blocks, x, y = grid_inputs(n=72, n_layers=2, seed=11)
    blocks, x = scale * blocks.double(), scale * x.double()
    grid = information_grid(blocks, x, y, seed=3, n_permutations=4, n_resamples=0,
                            estimators=["nhsic_paper"])
    assert len(grid) == 4
    for e in grid:
        t = blocks[e.layer]
        pair = (x, t) if e.quantity == "I(X;T)" else (t, y.astype(np.float64))
        assert e.value == pytest.approx(reference_hsic_normalized_cca(*pair), rel=1e-7)
        mean, std = permutation_null(reference_hsic_normalized_cca, *pair, n_permutations=4,
                                     seed=3)
        assert (e.null_mean, e.null_std) == pytest.approx((mean, std), rel=1e-6)
        assert e.unit == "score" and e.status == "ok"
        assert {"estimator": "nhsic_reference", "sigma": "50*sqrt(d)", "ridge": 1e-5,
                "label_kernel": "gaussian on 0/1 labels, sigma 50"}.items() <= e.params.items()
        assert e.params["sigma_t"] == pytest.approx(50 * math.sqrt(8))


def test_reference_resolvent_falls_back_to_a_general_inverse() -> None:
    # A non-PSD "Gram" whose centred form has eigenvalues near −1: Cholesky of G + εnI
    # fails, the reference's explicit inverse does not.
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(12, 12, generator=gen, dtype=torch.float64)
    k = -(a @ a.T) / 12
    with pytest.raises(InformationError, match="Cholesky failed"):
        resolvent(k, 1e-5)
    r = resolvent(torch.stack([torch.eye(12, dtype=torch.float64), k]), 1e-5,
                  solve_fallback=True)
    h = torch.eye(12, dtype=torch.float64) - 1.0 / 12
    k_c = k @ h
    expected = h @ k_c @ torch.linalg.inv(k_c + 1e-5 * 12 * torch.eye(12, dtype=torch.float64))
    assert torch.allclose(r[1], expected, atol=1e-8)
    assert torch.allclose(r[0], resolvent(torch.eye(12, dtype=torch.float64), 1e-5))


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
