"""The calibrated verdicts: exact behaviour on constructed curves, and error rates."""

from __future__ import annotations

import numpy as np
import pytest

from trustdyn.stats import partial_pearson, pearson
from trustdyn.testing.planted import (
    DEFAULT_LAYERS,
    NULL_FAMILIES,
    Plan,
    SteeringPlan,
    error_rates,
    helps_rates,
)
from trustdyn.verdicts import (
    dataset_alpha,
    helps_level,
    helps_verdict,
    onset_index,
    separability_verdict,
    turn_verdict,
)


def test_onset_needs_a_lasting_majority_and_is_not_made_by_the_last_checkpoint():
    assert onset_index(np.array([0, 0, 0, 1, 1, 1, 1, 1], bool)) == 3
    assert onset_index(np.array([0, 0, 0, 0, 0, 0, 0, 1], bool)) is None
    assert onset_index(np.array([0, 0, 0, 0, 0, 0, 1, 1], bool)) is None  # fewer than 3
    # One late failure does not move the onset; a success at the start does not make it.
    assert onset_index(np.array([1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1], bool)) == 3
    assert onset_index(np.zeros(5, bool)) is None


def test_separability_against_chance_and_against_initialisation():
    m, n_layers = 10, 4
    se = np.full((m, n_layers), 0.02)
    value = np.full((m, n_layers), 0.5)
    value[:, 1] = 0.7  # separable from the start, never more: not emergence
    verdict = separability_verdict(value, se, alpha=0.05)
    assert verdict.at_init and verdict.first_separable == 0
    assert not verdict.emerges and not verdict.above_init.any()
    assert (verdict.best_layer == 1).all()
    value[4:, 2] = 0.8  # layer 2 rises from checkpoint 4 on
    verdict = separability_verdict(value, se, alpha=0.05)
    assert verdict.emerges and verdict.onset == 4
    # A first checkpoint below chance (noise) is not the reference: chance is.
    low = np.full((m, 1), 0.5)
    low[0] = 0.35
    assert not separability_verdict(low, np.full((m, 1), 0.02)).above_init.any()
    # Bonferroni: the same margin passes with 1 layer and fails with 32.
    z = (0.5 + 0.02 * 2.2 - 0.5) / 0.02
    assert z > 1.645
    one = separability_verdict(np.full((3, 1), 0.544), np.full((3, 1), 0.02))
    many = separability_verdict(np.full((3, 32), 0.544), np.full((3, 32), 0.02))
    assert one.separates.all() and not many.separates.any()


def tent(m: int, peak: int, height: float) -> np.ndarray:
    return height * np.concatenate([np.linspace(0, 1, peak + 1),
                                    np.linspace(1, 0, m - peak)[1:]])


def test_a_rise_then_fall_turns_at_its_peak_and_monotone_or_recovering_curves_do_not():
    rng = np.random.default_rng(0)
    m = 20
    curves = np.stack([
        tent(m, 7, 20.0) + rng.normal(0, 1, m),  # a clear turn
        np.linspace(0, 10, m) + rng.normal(0, 1, m),  # monotone rise
        np.linspace(10, 0, m) + rng.normal(0, 1, m),  # monotone fall
        np.r_[np.linspace(0, 5, 8), np.full(4, 2.0), np.linspace(5, 10, 8)],  # dip, recovery
    ], axis=1)
    result = turn_verdict(curves, seed=0)
    turns = result.turns(0.05)
    assert turns.tolist() == [True, False, False, False]
    assert abs(int(result.turn_index[0]) - 7) <= 1
    assert result.p_value[0] <= 0.01


def test_i_t_y_falling_after_the_peak_vetoes_the_turn():
    m = 20
    ixt = tent(m, 7, 20.0)[:, None] + np.random.default_rng(1).normal(0, 1, (m, 1))
    rising = np.linspace(0, 1, m)[:, None]
    falling = np.r_[np.linspace(0, 1, 8), np.linspace(1, 0, 12)][:, None]
    se = np.full((m, 1), 0.01)
    assert turn_verdict(ixt, rising, se).turns(0.05).all()
    vetoed = turn_verdict(ixt, falling, se)
    assert vetoed.ity_falls.all() and not vetoed.turns(0.05).any()


def test_undefined_or_flat_curves_are_not_tested():
    m = 12
    curves = np.stack([np.full(m, np.nan), np.ones(m), tent(m, 4, 5.0)], axis=1)
    result = turn_verdict(curves)
    assert np.isnan(result.statistic[:2]).all() and np.isnan(result.p_value[:2]).all()
    assert (result.turn_index[:2] == -1).all() and np.isfinite(result.p_value[2])
    short = turn_verdict(np.ones((5, 2)))
    assert np.isnan(short.p_value).all()


def test_dataset_alpha_shares_the_level():
    assert dataset_alpha(5) == pytest.approx(0.01) and dataset_alpha(0) == 0.05


@pytest.mark.parametrize("kind", ["separation", "turn"])
def test_error_rates_stay_within_bounds_on_a_small_seed_set(kind, tmp_path):
    # The calibration of bench/bench_verdicts.py on fewer studies: every null family with
    # the default study's layers, the two hardest with 32, and the planted effect with both.
    plans = [Plan(family, DEFAULT_LAYERS) for family in NULL_FAMILIES]
    plans += [Plan(family, 32) for family in ("random_walk", "ar0.95")]
    effect = 0.15 if kind == "separation" else 15.0
    plans += [Plan("white", n, effect=effect) for n in (DEFAULT_LAYERS, 32)]
    rates = error_rates(str(tmp_path / "rates.duckdb"), kind, plans, n_studies=8, seed=1)
    null, planted = rates[rates["effect"] == 0], rates[rates["effect"] > 0]
    assert (null["per_dataset"] <= 0.05).all(), rates
    assert (planted["per_dataset"] >= 0.8).all(), rates


def test_helps_needs_the_family_wise_level_and_the_guard():
    level = helps_level(n_sources=8, n_datasets=5)
    assert level == pytest.approx(0.05 / 5 / 8)
    assert helps_verdict(level, True, n_sources=8, n_datasets=5)
    assert not helps_verdict(level * 1.01, True, n_sources=8, n_datasets=5)
    assert not helps_verdict(0.0, False, n_sources=8, n_datasets=5)  # over the guard
    assert not helps_verdict(None, True, n_sources=8, n_datasets=5)  # no admissible setting
    assert not helps_verdict(float("nan"), True, n_sources=8, n_datasets=5)


def test_helps_is_quiet_without_effect_and_finds_a_large_one():
    # The level is 0.05 per study; python -m bench verdicts measures it on 160 studies.
    null = helps_rates(SteeringPlan(n_datasets=5, n_bootstrap=200), n_studies=6, seed=1)
    assert null["per_dataset"] <= 2 / 30
    planted = helps_rates(SteeringPlan(effect=0.3, n_bootstrap=200), n_studies=2, seed=2)
    assert planted["per_dataset"] >= 0.8


def test_partial_correlation_removes_a_shared_driver():
    rng = np.random.default_rng(0)
    norm = rng.normal(size=300)
    accuracy, gain = norm + rng.normal(size=300), norm + rng.normal(size=300)
    assert pearson(accuracy, gain).r > 0.4
    partial = partial_pearson(accuracy, gain, norm)
    assert abs(partial.r) < 0.15 and partial.lo < 0 < partial.hi and partial.n == 300
    assert np.isnan(partial_pearson([1, 2, 3], [3, 2, 1], [0, 1, 2]).r)  # too few triples
