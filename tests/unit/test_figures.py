"""Figure builders: each figure draws exactly the numbers of the frame it is given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trustdyn import findings, stats
from trustdyn.dashboard import figures, tables
from trustdyn.store import Store
from trustdyn.testing.synthetic import write_synthetic_study


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return write_synthetic_study(tmp_path_factory.mktemp("fig") / "s.duckdb", n_checkpoints=5,
                                 n_layers=3, hidden_size=8, seed=1)


@pytest.fixture(scope="module")
def grid(store: Store) -> pd.DataFrame:
    return store.probe_grid("synthetic", "truthfulqa")


def _by_name(fig, name: str):
    return next(t for t in fig.data if t.name == name)


def test_log_axis_keeps_step_zero_and_labels_real_values() -> None:
    positions = figures.axis_positions([0, 9, 99, 999], "log")
    assert np.allclose(positions, [0, 1, 2, 3])
    layout = figures.axis_layout([0, 5, 2000], "log", "step")
    assert layout["ticktext"] == ["0", "1", "10", "100", "1k"]
    assert np.allclose(layout["tickvals"], np.log10(1 + np.array([0, 1, 10, 100, 1000])))
    assert "tickvals" not in figures.axis_layout([0, 5], "linear", "step")
    assert np.array_equal(figures.axis_positions([0, 5], "linear"), [0, 5])


def test_export_config_sets_the_download_format() -> None:
    config = figures.export_config("name", "svg")
    assert config["toImageButtonOptions"] == {"format": "svg", "filename": "name", "scale": 2}


def test_heatmap_draws_the_pivoted_metric_with_chat_apart(grid: pd.DataFrame) -> None:
    fig = figures.probe_heatmap(grid, metric="auroc", x="tokens", scale="linear")
    pre, chat = fig.data
    expected = grid[~grid["is_chat"]].pivot(index="layer", columns="checkpoint",
                                            values="auroc")
    assert np.allclose(np.asarray(pre.z), expected.to_numpy())
    assert list(pre.x) == sorted(grid.loc[~grid["is_chat"], "tokens"].unique())
    assert list(chat.x) == ["chat"]
    assert np.allclose(np.asarray(chat.z)[:, 0], grid.loc[grid["is_chat"], "auroc"])
    # Hover carries accuracy, AUROC, intervals and the control for each cell.
    custom = np.asarray(pre.customdata)
    first = grid.iloc[0]
    assert custom[0, 0, 0] == first["step"]
    assert custom[0, 0, 8] == pytest.approx(first["control_accuracy"])
    assert "control" in pre.hovertemplate


def test_heatmap_difference_metric_is_centred(grid: pd.DataFrame) -> None:
    fig = figures.probe_heatmap(grid, metric="accuracy_minus_control")
    axis = fig.layout.coloraxis
    assert axis.cmid == 0 and axis.cmin == -axis.cmax


def test_curves_have_bands_controls_and_a_chat_star(grid: pd.DataFrame) -> None:
    fig = figures.probe_curves(grid, layers=[0, 2])
    line = _by_name(fig, "layer 2")
    rows = grid[(grid["layer"] == 2) & ~grid["is_chat"]]
    assert np.allclose(line.y, rows["accuracy"])
    bands = [t for t in fig.data if t.fill == "toself"]
    assert len(bands) == 2
    assert np.allclose(bands[1].y[: len(rows)], rows["accuracy_hi"])
    controls = [t for t in fig.data if t.name and t.name.startswith("control")]
    assert len(controls) == 2
    stars = [t for t in fig.data if t.marker and t.marker.symbol == "star"]
    assert len(stars) == 2 and stars[0].x[0] > max(line.x)
    no_control = figures.probe_curves(grid, layers=[0], show_control=False)
    assert not [t for t in no_control.data if t.name and t.name.startswith("control")]


def test_empty_inputs_give_a_message_not_an_error(grid: pd.DataFrame) -> None:
    for fig in (figures.probe_heatmap(grid.iloc[:0]),
                figures.probe_curves(grid, layers=[]),
                figures.info_plane_figure(pd.DataFrame(), pd.DataFrame(), estimator="renyi"),
                figures.gain_scatter(pd.DataFrame(), stats.pearson([], []), metric="m")):
        assert not fig.data and fig.layout.annotations


def test_cosine_heatmap_is_fixed_to_minus_one_one(store: Store) -> None:
    matrix = tables.direction_cosines(store, "synthetic", "toxigen", 1)
    steps = store.checkpoints("synthetic")["step"]
    fig = figures.cosine_heatmap(matrix, list(steps), layer=1)
    assert (fig.data[0].zmin, fig.data[0].zmax) == (-1, 1)
    assert np.allclose(np.asarray(fig.data[0].z), matrix.to_numpy())


def test_information_plane_marks_turns_and_nulls(store: Store, grid: pd.DataFrame) -> None:
    info = store.info_grid("synthetic", "truthfulqa")
    plane = tables.info_plane(info, grid, "renyi")
    turns = tables.turn_points(store, "synthetic", "truthfulqa", "renyi")
    fig = figures.info_plane_figure(plane, turns, estimator="renyi", layers=[1])
    turn_step = int(turns.loc[turns["layer"] == 1, "turn_step"].iloc[0])
    point = plane[(plane["layer"] == 1) & (plane["step"] == turn_step)].iloc[0]
    marker = _by_name(fig, "turn, layer 1")
    assert marker.x[0] == pytest.approx(point["ixt"]) and marker.y[0] == pytest.approx(
        point["ity"])
    assert len(fig.layout.shapes) == 2  # null bands along both axes
    top = (plane["ity_null_mean"] + 2 * plane["ity_null_std"]).max()
    along_y = next(s for s in fig.layout.shapes if s.yref == "y")
    assert (along_y.y0, along_y.y1) == (0, pytest.approx(top))
    assert "[bits]" in fig.layout.xaxis.title.text
    nhsic = figures.info_plane_figure(tables.info_plane(info, grid, "nhsic"), turns,
                                      estimator="nhsic")
    assert "not bits" in nhsic.layout.yaxis.title.text
    by_step = figures.info_vs_step_figure(plane, turns, layers=[0, 1])
    assert sum(1 for t in by_step.data if t.name == "layer 0") == 2  # both quantities


def test_steering_bars_show_intervals_and_the_baseline(store: Store) -> None:
    evals = store.steering_eval_table("synthetic")
    table = tables.steering_table(evals, store.checkpoints("synthetic"), "chat",
                                     "toxigen")
    fig = figures.steering_bars(table, metric="loglik_gap", target="chat",
                                higher_is_better=False)
    rows = table[table["metric"] == "loglik_gap"]
    assert np.allclose(fig.data[0].y, rows["value"])
    assert np.allclose(fig.data[0].error_y.array, rows["ci_hi"] - rows["value"])
    base = rows.loc[rows["source"] == "none", "value"].iloc[0]
    assert fig.layout.shapes[0].y0 == pytest.approx(base)
    assert "lower is better" in fig.layout.title.text


def test_sweep_marks_candidates_over_the_guard(store: Store) -> None:
    evals = store.steering_eval_table("synthetic")
    sweep = tables.sweep_frame(evals, "chat", "truthfulqa", "chat", "mc1")
    assert not sweep["within_guard"].all() and sweep["within_guard"].any()
    fig = figures.sweep_figure(sweep, metric="mc1", guard=1.33, baseline=0.4)
    metric_traces = [t for t in fig.data if t.showlegend is not False]
    symbols = [s for t in metric_traces for s in t.marker.symbol]
    assert symbols.count("circle-open") == int((~sweep["within_guard"]).sum())
    assert any(s.y0 == pytest.approx(1.33) for s in fig.layout.shapes)


def test_gain_scatter_reports_r_and_fits_a_line(store: Store, grid: pd.DataFrame) -> None:
    evals = store.steering_eval_table("synthetic")
    pairs, corr = findings.gain_vs_probe(evals, grid, "chat", "truthfulqa")
    fig = figures.gain_scatter(pairs, corr, metric="mc1")
    assert f"r = {corr.r:.2f}" in fig.layout.title.text
    line = _by_name(fig, "least-squares line")
    slope = (line.y[-1] - line.y[0]) / (line.x[-1] - line.x[0])
    assert slope == pytest.approx(np.polyfit(pairs["probe_accuracy"], pairs["gain"], 1)[0])


def test_loss_curve_and_best_layer(store: Store, grid: pd.DataFrame, tmp_path: Path) -> None:
    ckpts = store.checkpoints("synthetic")
    fig = figures.loss_curve(ckpts)
    assert np.allclose(_by_name(fig, "training loss").y,
                       ckpts.loc[~ckpts["is_chat"], "train_loss"])
    best = findings.best_layer_per_checkpoint(grid)
    fig = figures.best_layer_figure(best, n_layers=3)
    assert list(fig.data[0].y) == list(best.loc[~best["is_chat"], "best_layer"])
    assert _by_name(fig, "chat model").marker.symbol == "star"
    assert figures.loss_curve(ckpts.assign(train_loss=None, heldout_loss=None)).layout.annotations


def test_suite_comparison_shares_one_colour_scale(grid: pd.DataFrame) -> None:
    other = grid.assign(accuracy=grid["accuracy"] - 0.05)
    fig = figures.suite_comparison([grid, other], ["a", "b"])
    assert len(fig.data) == 2 and {t.coloraxis for t in fig.data} == {"coloraxis"}


def test_unknown_tokens_fall_back_to_steps(grid: pd.DataFrame) -> None:
    unknown = grid.assign(tokens=np.where(grid["step"] > 0, np.nan, 0.0))
    assert figures.usable_x(unknown, "tokens") == "step"
    assert figures.usable_x(grid, "tokens") == "tokens"
    fig = figures.probe_heatmap(unknown, x="tokens", scale="linear")
    assert list(fig.data[0].x) == sorted(grid.loc[~grid["is_chat"], "step"].unique())
    assert fig.layout.xaxis.title.text == "training step"
