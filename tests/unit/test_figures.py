"""Figure builders, and the page tables they draw: each figure draws exactly the numbers of
the frame it is given, and leaves out what is not defined."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trustdyn import findings, stats, verdicts
from trustdyn.dashboard import figures, steering_figures, tables
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


def test_heatmap_defaults_to_balanced_accuracy_with_its_interval(grid: pd.DataFrame) -> None:
    assert next(iter(tables.PROBE_METRICS)) == "balanced_accuracy"
    fig = figures.probe_heatmap(grid)
    pre = fig.data[0]
    expected = grid[~grid["is_chat"]].pivot(index="layer", columns="checkpoint",
                                            values="balanced_accuracy")
    assert np.allclose(np.asarray(pre.z), expected.to_numpy())
    assert "Balanced accuracy" in fig.layout.title.text
    custom = np.asarray(pre.customdata)
    first = grid.iloc[0]
    assert custom[0, 0, 10] == pytest.approx(first["balanced_accuracy"])
    assert custom[0, 0, 11] == pytest.approx(1.96 * first["balanced_accuracy_se"], rel=1e-3)
    assert "balanced accuracy %{customdata[10]:.3f} ± %{customdata[11]:.3f}" in pre.hovertemplate


def test_heatmap_difference_metric_is_centred(grid: pd.DataFrame) -> None:
    fig = figures.probe_heatmap(grid, metric="accuracy_minus_control")
    axis = fig.layout.coloraxis
    assert axis.cmid == 0 and axis.cmin == -axis.cmax


def test_curves_have_bands_controls_and_a_chat_star(grid: pd.DataFrame) -> None:
    fig = figures.probe_curves(grid, layers=[0, 2], metric="accuracy")
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
    no_control = figures.probe_curves(grid, layers=[0], metric="accuracy", show_control=False)
    assert not [t for t in no_control.data if t.name and t.name.startswith("control")]


def test_curves_show_the_step_zero_level_per_layer(grid: pd.DataFrame) -> None:
    fig = figures.probe_curves(grid, layers=[0, 2])  # balanced accuracy by default
    for layer in (0, 2):
        rows = grid[(grid["layer"] == layer) & ~grid["is_chat"]]
        assert int(rows["step"].iloc[0]) == 0
        init = _by_name(fig, f"init, layer {layer}")
        assert init.line.dash == "dash"
        assert np.allclose(init.y, rows["balanced_accuracy"].iloc[0])
        assert "initialisation (step 0)" in init.hovertemplate
        assert np.allclose(_by_name(fig, f"layer {layer}").y, rows["balanced_accuracy"])
    # Balanced accuracy's interval comes from its standard error; it has no stored control.
    rows = grid[(grid["layer"] == 0) & ~grid["is_chat"]]
    band = next(t for t in fig.data if t.fill == "toself")
    assert np.allclose(band.y[: len(rows)],
                       rows["balanced_accuracy"] + tables.Z95 * rows["balanced_accuracy_se"])
    assert not [t for t in fig.data if t.name and t.name.startswith("control")]


def test_empty_inputs_give_a_message_not_an_error(grid: pd.DataFrame) -> None:
    for fig in (figures.probe_heatmap(grid.iloc[:0]),
                figures.probe_curves(grid, layers=[]),
                figures.info_plane_figure(pd.DataFrame(), pd.DataFrame(), estimator="renyi"),
                steering_figures.gain_scatter(pd.DataFrame(), stats.pearson([], []),
                                              metric="m")):
        assert not fig.data and fig.layout.annotations


def test_cosine_heatmap_is_fixed_to_minus_one_one(store: Store) -> None:
    matrix = tables.direction_cosines(store, "synthetic", "toxigen", 1)
    steps = store.checkpoints("synthetic")["step"]
    fig = figures.cosine_heatmap(matrix, list(steps), layer=1)
    assert (fig.data[0].zmin, fig.data[0].zmax) == (-1, 1)
    assert np.allclose(np.asarray(fig.data[0].z), matrix.to_numpy())


UNDEFINED = "T is X itself (X is this block's output)"


@pytest.fixture(scope="module")
def info(store: Store) -> pd.DataFrame:
    """truthfulqa's estimates with layer 0's I(X;T) undefined, as the pipeline stores it."""
    info = store.info_grid("synthetic", "truthfulqa")
    layer0 = ((info["layer"] == 0) & (info["quantity"] == "I(X;T)")).to_numpy()
    numbers = ["value", "null_mean", "null_std", "corrected", "z", "se", "corrected_lo",
               "corrected_hi"]
    info.loc[layer0, numbers] = np.nan
    info.loc[layer0, "status"] = "undefined"
    info.loc[layer0, "reason"] = UNDEFINED
    return info


@pytest.fixture(scope="module")
def turns(store: Store, grid: pd.DataFrame) -> pd.DataFrame:
    """Stored renyi turns, with layer 1 turning at step 22 and layer 2 a peak that does not."""
    turns = tables.turn_points(store, "synthetic", "truthfulqa", "renyi")
    turns["turn_step"] = turns["turn_step"].astype("Int64")
    turns.loc[turns["layer"] == 1, ["turn_step", "p_value", "distinguishable"]] = \
        [22, 0.001, True]
    turns.loc[turns["layer"] == 2, ["turn_step", "p_value", "distinguishable"]] = \
        [465, 0.4, False]
    return turns


def test_info_plane_table_is_null_corrected(info: pd.DataFrame, grid: pd.DataFrame) -> None:
    plane = tables.info_plane(info, grid, "renyi")
    assert list(plane.columns) == [
        "checkpoint", "step", "tokens", "is_chat", "ordinal", "layer", "ixt", "ixt_lo",
        "ixt_hi", "ixt_raw", "ity", "ity_lo", "ity_hi", "ity_raw", "x_unit", "y_unit",
        "status", "reason"]
    rows = info[(info["estimator"] == "renyi") & (info["quantity"] == "I(X;T)")]
    merged = plane.merge(rows, on=["checkpoint", "layer"])
    ok = merged["status_y"] == "ok"
    assert np.allclose(merged.loc[ok, "ixt"], merged.loc[ok, "corrected"])
    assert np.allclose(merged.loc[ok, "ixt_raw"], merged.loc[ok, "value"])
    assert not np.allclose(merged.loc[ok, "ixt"], merged.loc[ok, "value"])
    assert np.allclose(merged.loc[ok, "ixt_hi"], merged.loc[ok, "corrected_hi"])
    undefined = plane[plane["layer"] == 0]
    assert (undefined["status"] == "undefined").all() and undefined["ixt"].isna().all()
    assert undefined["ity"].notna().all()  # only I(X;T) is undefined at layer 0
    assert undefined["reason"].str.contains("I(X;T): T is X itself", regex=False).all()
    assert (plane.loc[plane["layer"] > 0, "status"] == "ok").all()
    notes = tables.undefined_notes(tables.undefined_estimates(info, "renyi"))
    assert notes == [f"layer 0: {UNDEFINED} (I(X;T) undefined at all 6 checkpoints)"]
    assert len(tables.undefined_estimates(info, "nhsic")) == 1
    usable = tables.info_plane(info, grid, "renyi", "usable")
    assert usable["ity_lo"].isna().all()
    assert np.allclose(usable["ity"], usable["ity_raw"])


def test_information_plane_draws_corrected_points_with_intervals(
        info: pd.DataFrame, grid: pd.DataFrame, turns: pd.DataFrame) -> None:
    plane = tables.info_plane(info, grid, "renyi")
    fig = figures.info_plane_figure(plane, turns, estimator="renyi")
    names = [t.name for t in fig.data]
    assert "layer 0" not in names  # every layer-0 point is undefined: skipped, not drawn
    line = _by_name(fig, "layer 1")
    rows = plane[(plane["layer"] == 1) & ~plane["is_chat"]]
    assert np.allclose(line.x, rows["ixt"]) and np.allclose(line.y, rows["ity"])
    assert not np.allclose(line.x, rows["ixt_raw"])
    assert line.error_x.visible and line.error_y.visible
    assert np.allclose(line.error_x.array, rows["ixt_hi"] - rows["ixt"])
    assert np.allclose(line.error_y.arrayminus, rows["ity"] - rows["ity_lo"])
    # Only the distinguishable turn is marked, at its corrected point.
    assert "turn, layer 2" not in names
    marker = _by_name(fig, "turn, layer 1")
    point = rows[rows["step"] == 22].iloc[0]
    assert (marker.x[0], marker.y[0]) == (pytest.approx(point["ixt"]),
                                          pytest.approx(point["ity"]))
    # Zero lines (the permutation-null mean) replace the grey null bands.
    assert sorted(s.type for s in fig.layout.shapes) == ["line", "line"]
    assert {(s.x0, s.x1) for s in fig.layout.shapes if s.xref == "x"} == {(0, 0)}
    assert {(s.y0, s.y1) for s in fig.layout.shapes if s.yref == "y"} == {(0, 0)}
    labels = [a.text for a in fig.layout.annotations]
    assert labels.count("permutation-null mean") == 2
    assert "− permutation-null mean [bits]" in fig.layout.xaxis.title.text
    assert "matrix Rényi entropy (bits)" in fig.layout.title.text
    nhsic = figures.info_plane_figure(tables.info_plane(info, grid, "nhsic"), turns.iloc[:0],
                                      estimator="nhsic")
    assert "score, not bits" in nhsic.layout.yaxis.title.text
    usable = figures.info_plane_figure(tables.info_plane(info, grid, "renyi", "usable"), turns,
                                       estimator="renyi", ity_source="usable")
    assert len(usable.layout.shapes) == 1  # usable information has no null to correct by
    assert usable.layout.yaxis.title.text == "I(T;Y) [bits]"
    assert not _by_name(usable, "layer 1").error_y.visible


def test_information_against_step_has_bands_and_skips_undefined(
        info: pd.DataFrame, grid: pd.DataFrame, turns: pd.DataFrame) -> None:
    plane = tables.info_plane(info, grid, "renyi")
    fig = figures.info_vs_step_figure(plane, turns, layers=[0, 1, 2], scale="linear")
    lines = [t for t in fig.data if t.name == "layer 0"]
    assert len(lines) == 1 and lines[0].yaxis == "y2"  # only I(T;Y): I(X;T) is undefined
    top = next(t for t in fig.data if t.name == "layer 1" and t.yaxis == "y")
    rows = plane[(plane["layer"] == 1) & ~plane["is_chat"]]
    assert np.allclose(top.y, rows["ixt"])
    band = next(t for t in fig.data if t.name == "layer 1 95% interval" and t.yaxis == "y")
    assert np.allclose(band.y[: len(rows)], rows["ixt_hi"])
    assert np.allclose(band.y[len(rows):], rows["ixt_lo"][::-1])
    zero = [s for s in fig.layout.shapes if s.y0 == 0 and s.y1 == 0]
    assert len(zero) == 2  # one null-mean line per quantity
    turns_drawn = [s for s in fig.layout.shapes if s.line.dash == "dot"]
    assert [s.x0 for s in turns_drawn] == [22]  # only the distinguishable turn


def test_steering_bars_show_intervals_and_the_baseline(store: Store) -> None:
    evals = store.steering_eval_table("synthetic")
    table = tables.steering_table(evals, store.checkpoints("synthetic"), "chat",
                                     "toxigen")
    fig = steering_figures.steering_bars(table, metric="loglik_gap", target="chat",
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
    fig = steering_figures.sweep_figure(sweep, metric="mc1", guard=1.33, baseline=0.4)
    metric_traces = [t for t in fig.data if t.showlegend is not False]
    symbols = [s for t in metric_traces for s in t.marker.symbol]
    assert symbols.count("circle-open") == int((~sweep["within_guard"]).sum())
    assert any(s.y0 == pytest.approx(1.33) for s in fig.layout.shapes)


def test_gain_scatter_reports_r_and_fits_a_line(store: Store, grid: pd.DataFrame) -> None:
    evals = store.steering_eval_table("synthetic")
    pairs, corr = findings.gain_vs_probe(evals, grid, "chat", "truthfulqa")
    partial = findings.norm_controlled(pairs)
    fig = steering_figures.gain_scatter(pairs, corr, metric="mc1", partial=partial)
    assert f"Pearson r = {corr.r:.2f}" in fig.layout.title.text
    assert f"partial r = {partial.r:.2f}" in fig.layout.title.text
    line = _by_name(fig, "least-squares line")
    slope = (line.y[-1] - line.y[0]) / (line.x[-1] - line.x[0])
    assert slope == pytest.approx(np.polyfit(pairs["probe_accuracy"], pairs["gain"], 1)[0])
    assert np.allclose(np.asarray(fig.data[0].customdata[:, 2], float), pairs["applied_norm"])
    few = steering_figures.gain_scatter(pairs.iloc[:3], corr, metric="mc1",
                                        partial=findings.norm_controlled(pairs.iloc[:3]))
    assert "partial r undefined (n = 3" in few.layout.title.text
    assert "partial" not in steering_figures.gain_scatter(pairs, corr, metric="mc1"
                                                          ).layout.title.text


BLOCKED_REASON = "12 dev settings; 12 over the perplexity guard 1.33"
DEGENERATE_REASON = "the reference is degenerate: every answer is the same"


def _blocked_table(store: Store) -> tuple[pd.DataFrame, str, str]:
    """truthfulqa's test table as the pipeline writes two failures.

    The second source has no admissible setting (one ``gain`` row: no value, no layer, guard
    failed; no other test row); the third source's gain over the random direction is
    undefined. Returns the table and the two sources' labels.
    """
    table = tables.steering_table(store.steering_eval_table("synthetic"),
                                  store.checkpoints("synthetic"), "chat", "truthfulqa")
    gains = table[table["metric"] == "gain"]
    blocked, degenerate = gains["source"].iloc[1], gains["source"].iloc[2]
    table = table[(table["source"] != blocked) | (table["metric"] == "gain")].copy()
    row = table["source"] == blocked
    table.loc[row, ["value", "ci_lo", "ci_hi", "mde", "applied_norm", "norm_ratio"]] = np.nan
    table.loc[row, ["layer", "alpha", "status", "reason", "guard_passed"]] = [
        -1, 0.0, "no admissible setting", BLOCKED_REASON, False]
    versus = (table["source"] == degenerate) & (table["metric"] == "gain_vs_random")
    table.loc[versus, ["value", "ci_lo", "ci_hi", "mde", "p_value"]] = np.nan
    table.loc[versus, ["status", "reason"]] = ["undefined", DEGENERATE_REASON]
    labels = dict(zip(table["source"], table["label"], strict=False))
    return table.reset_index(drop=True), labels[blocked], labels[degenerate]


def test_steering_bars_leave_undefined_gains_out_not_at_zero(store: Store) -> None:
    table, label, _ = _blocked_table(store)
    fig = steering_figures.steering_bars(table, metric="gain", target="chat",
                                         higher_is_better=True)
    rows = table[table["metric"] == "gain"]
    y = np.asarray(fig.data[0].y, dtype=float)
    drawn = (rows["label"] != label).to_numpy()
    assert np.isnan(y[~drawn]).all()  # absent, not zero
    assert np.allclose(y[drawn], rows.loc[drawn, "value"])
    assert list(fig.data[0].x) == list(rows["label"])  # the slot stays, empty
    absent = [a for a in fig.layout.annotations if a.text == "n/a"]
    assert [a.x for a in absent] == [label]
    assert absent[0].hovertext == f"not drawn: no admissible setting: {BLOCKED_REASON}"
    assert "n/a: not defined, not drawn" in fig.layout.title.text
    assert tables.not_drawn(table, "gain") == \
        [f"{label}: no admissible setting: {BLOCKED_REASON}"]
    complete = steering_figures.steering_bars(table, metric="mc1", target="chat",
                                              higher_is_better=True)
    assert not [a for a in complete.layout.annotations if a.text == "n/a"]
    assert "n/a" not in complete.layout.title.text


def test_steering_sources_show_reasons_instead_of_numbers(store: Store) -> None:
    table, blocked, degenerate = _blocked_table(store)
    sources = tables.steering_sources(table, n_sources=5, n_datasets=5)
    assert {"layer", "alpha", "applied_norm", "norm_ratio", "gain", "gain_lo", "gain_hi",
            "gain_mde", "vs_random", "vs_random_lo", "vs_random_hi", "vs_random_p",
            "vs_random_mde", "guard_passed", "helps"} <= set(sources.columns)
    chat = sources.set_index("source").loc["chat"]
    versus = table[(table["source"] == "chat") & (table["metric"] == "gain_vs_random")].iloc[0]
    assert (chat["vs_random"], chat["vs_random_p"], chat["vs_random_mde"]) == \
        (versus["value"], versus["p_value"], versus["mde"])
    assert chat["applied_norm"] == versus["applied_norm"]
    view = tables.steering_sources_view(sources).set_index("vector")
    assert view.loc["chat's own (chat)", "applied norm"] == f"{versus['applied_norm']:.3g}"
    row = view.loc[blocked]
    assert row["gain over unsteered [95%]"] == f"no admissible setting: {BLOCKED_REASON}"
    assert row["gain over same-norm random [95%]"] == "no admissible setting"
    numbers = ["layer", "α", "applied norm", "norm ratio", "MDE", "p (one-sided)",
               "MDE vs random"]
    assert (row[numbers] == "—").all() and not row["helps"]
    assert row["perplexity guard"] == "no dev setting within it"
    row = view.loc[degenerate]
    assert row["gain over same-norm random [95%]"] == f"undefined: {DEGENERATE_REASON}"
    assert (row["p (one-sided)"], row["MDE vs random"]) == ("—", "—")
    assert row["gain over unsteered [95%]"].startswith(("+", "-")) and not row["helps"]
    wide = tables.wide_table(table, "mc1").set_index("vector")
    assert wide.loc[blocked, "gain"] == f"no admissible setting: {BLOCKED_REASON}"
    assert pd.isna(wide.loc[blocked, "layer"]) and wide.loc[blocked, "mc1"] == "—"
    assert not wide.astype(str).apply(lambda c: c.str.contains("nan")).any().any()
    assert tables.scaling_note(table.assign(scaling="target")).startswith(
        "Scaling “target”: α counts the chat model's own projection σ")


def _expected_helps(table: pd.DataFrame, source: str, role: str,
                    family: tuple[int, int]) -> bool:
    """helps_verdict on a source's gain_vs_random row, as findings.steering_details calls it
    (the chat model's own vector is a family of one)."""
    row = table[(table["source"] == source) & (table["metric"] == "gain_vs_random")]
    if row.empty:
        return False
    p, guard = row["p_value"].iloc[0], row["guard_passed"].iloc[0]
    n_sources, n_datasets = family
    return verdicts.helps_verdict(None if pd.isna(p) else float(p), bool(guard),
                                  n_sources=n_sources if role == "pretraining" else 1,
                                  n_datasets=n_datasets)


def test_helps_column_is_the_verdict(store: Store) -> None:
    evals = store.steering_eval_table("synthetic")
    details = tables.steering_details(store, "synthetic")
    blocked, _, _ = _blocked_table(store)
    for row in details.itertuples():
        family = tables.helps_family(details, "chat", str(row.dataset))
        assert family == (row.pretraining_sources, len(store.datasets()))
        assert verdicts.helps_level(*family) == pytest.approx(row.level)
        table = tables.steering_table(evals, store.checkpoints("synthetic"), "chat",
                                      str(row.dataset))
        for case in (table, blocked) if row.dataset == "truthfulqa" else (table,):
            sources = tables.steering_sources(case, *family)
            steered = sources[sources["source"] != "random"]
            assert steered["helps"].tolist() == [
                _expected_helps(case, s, r, family)
                for s, r in zip(steered["source"], steered["role"], strict=True)]
            assert sources.loc[sources["source"] == "random", "helps"].isna().all()
            view = tables.steering_sources_view(sources)
            assert view["helps"].tolist() == sources["helps"].tolist()
        # On the stored rows the column adds up to steering_details' counts.
        sources = tables.steering_sources(table, *family)
        assert int(sources.loc[sources["role"] == "pretraining", "helps"].sum()) == row.helping
        assert bool(sources.loc[sources["role"] == "chat", "helps"].any()) == row.chat_helps


def test_loss_curve_and_best_layer(store: Store, grid: pd.DataFrame, tmp_path: Path) -> None:
    ckpts = store.checkpoints("synthetic")
    fig = figures.loss_curve(ckpts)
    assert np.allclose(_by_name(fig, "training loss").y,
                       ckpts.loc[~ckpts["is_chat"], "train_loss"])
    best = tables.best_layers(grid)
    pre = best[~best["is_chat"]]
    fig = figures.best_layer_figure(best, n_layers=3)
    assert list(_by_name(fig, "which layer").y) == list(pre["best_layer"])
    assert np.allclose(_by_name(fig, "best layer").y, pre["balanced_accuracy"])
    init = _by_name(fig, "initialisation (step 0), same layer")
    assert init.line.dash == "dash"
    first = grid[grid["ordinal"] == 0].set_index("layer")["balanced_accuracy"]
    assert np.allclose(init.y, first.loc[pre["best_layer"]].to_numpy())
    assert np.allclose(pre["gain_over_init"], pre["balanced_accuracy"] - pre["init_bacc"])
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
