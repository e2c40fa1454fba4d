"""Probes: how linearly decodable each concept is, per layer and checkpoint."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages import _common as common
from trustdyn import findings
from trustdyn.dashboard import figures, tables
from trustdyn.store import Store


@common.fragment
def heatmap_view(suite: str, dataset: str) -> None:
    """Layer × checkpoint heatmap with its metric and axis controls."""
    grid = common.read(Store.probe_grid, suite, dataset)
    metric = common.linked(st.selectbox, "Metric", list(tables.PROBE_METRICS), param="metric",
                           key="heat_metric", format_func=tables.PROBE_METRICS.__getitem__)
    x, scale = common.axis_controls("heat")
    fig = figures.probe_heatmap(grid, metric=metric, x=x, scale=scale,
                                title=f"{dataset}: {tables.PROBE_METRICS[metric]}")
    common.figure(fig, grid, f"{suite}-{dataset}-probe-{metric}", key="heat")
    st.caption("Balanced accuracy is the mean of the per-class accuracies (0.5 = chance "
               "whatever the class balance). Hover a cell for it ± 1.96 standard errors "
               "(cluster bootstrap over test items), accuracy and AUROC with their 95% "
               "intervals, and the shuffled-label control. The chat model is the narrow "
               "column on the right.")


def _default_layers(grid: pd.DataFrame) -> list[int]:
    best = findings.best_layer_per_checkpoint(grid[~grid["is_chat"].astype(bool)],
                                              "balanced_accuracy")
    layers = tables.layers_of(grid)
    picks = [int(best["best_layer"].iloc[-1])] if len(best) else []
    return sorted({*picks, layers[len(layers) // 2], layers[0]}) if layers else []


@common.fragment
def curves_view(suite: str, dataset: str) -> None:
    """The paper's view: accuracy against checkpoint for chosen layers."""
    grid = common.read(Store.probe_grid, suite, dataset)
    layers = tables.layers_of(grid)
    chosen = st.multiselect("Layers", layers, default=_default_layers(grid), key="curve_layers")
    left, right = st.columns(2)
    metric = left.radio("Metric", ["balanced_accuracy", "accuracy", "auroc"], horizontal=True,
                        key="curve_metric", format_func=tables.PROBE_METRICS.__getitem__)
    control = right.toggle("Show shuffled-label control", value=True, key="curve_control",
                           help="Stored for accuracy and AUROC.")
    x, scale = common.axis_controls("curve")
    fig = figures.probe_curves(grid, layers=chosen, metric=metric, x=x, scale=scale,
                               show_control=control)
    common.figure(fig, grid[grid["layer"].isin(chosen)], f"{suite}-{dataset}-curves",
                  key="curves")
    st.caption("Dashed: each layer's level at the first checkpoint (step 0 = "
               "initialisation). A random network already separates some concepts; only "
               "the distance above that line is what pre-training added.")


@common.fragment
def best_layer_view(suite: str, dataset: str) -> None:
    """Best layer per checkpoint, as a figure and a table."""
    grid = common.read(Store.probe_grid, suite, dataset)
    best = tables.best_layers(grid)
    x, scale = common.axis_controls("best")
    n_layers = len(tables.layers_of(grid))
    common.figure(figures.best_layer_figure(best, n_layers=n_layers, x=x, scale=scale), best,
                  f"{suite}-{dataset}-best-layer", key="best")
    st.caption("Best layer = highest balanced accuracy at that checkpoint. init_bacc is the "
               "first checkpoint's (step 0) balanced accuracy at the same layer; "
               "gain_over_init is what pre-training added there.")
    st.dataframe(best, hide_index=True)


@common.fragment
def directions_view(suite: str, dataset: str) -> None:
    """Cosines of probe directions across checkpoints, and with the steering vectors."""
    grid = common.read(Store.probe_grid, suite, dataset)
    layers = tables.layers_of(grid)
    if not layers:
        st.info("No probe directions yet.")
        return
    layer = common.linked(st.select_slider, "Layer", layers, param="layer", key="dir_layer",
                          default=_default_layers(grid)[-1])
    matrix = common.read(tables.direction_cosines, suite, dataset, layer)
    ckpts = common.read(Store.checkpoints, suite).set_index("checkpoint")
    steps = ckpts.reindex(matrix.index)["step"].fillna(-1).astype(int).tolist()
    common.figure(figures.cosine_heatmap(matrix, steps, layer=layer),
                  matrix.reset_index(names="checkpoint"), f"{suite}-{dataset}-cosines-{layer}",
                  key="cos")
    vectors = common.read(tables.probe_vector_cosines, suite, dataset, layer)
    if vectors.empty:
        st.caption("No steering vectors stored for this layer yet, so no comparison with them.")
        return
    _, scale = common.axis_controls("vcos", with_tokens=False)
    common.figure(figures.vector_cosine_figure(vectors, layer=layer, scale=scale), vectors,
                  f"{suite}-{dataset}-probe-vs-vectors-{layer}", key="vcos")
    st.caption("Cosines are signed: probes and vectors both point toward label 1. A probe "
               "direction (logistic regression) and a mean-difference vector need not "
               "coincide even when both separate the classes.")


@common.fragment
def compare_view(suite: str, dataset: str) -> None:
    """Two suites' heatmaps side by side, on one colour scale."""
    suites = common.read(tables.suites)
    others = [s for s in suites["suite"] if s != suite]
    if not others:
        st.info("This study file holds one suite; run the pipeline for another suite into "
                "the same file (`--db`) to compare them here.")
        return
    other = common.linked(st.selectbox, "Compare with", others, param="compare",
                          key="compare_suite")
    if dataset not in common.read(Store.datasets_with, other, "probe"):
        st.warning(f"Suite {other!r} has no probe results for {dataset!r}.")
        return
    metric = st.selectbox("Metric", list(tables.PROBE_METRICS), key="compare_metric",
                          format_func=tables.PROBE_METRICS.__getitem__)
    x, scale = common.axis_controls("compare")
    frames = [common.read(Store.probe_grid, s, dataset) for s in (suite, other)]
    fig = figures.suite_comparison(frames, [suite, other], metric=metric, x=x, scale=scale)
    data = pd.concat([f.assign(suite=s) for f, s in zip(frames, (suite, other), strict=True)])
    common.figure(fig, data, f"{dataset}-{suite}-vs-{other}", key="compare")


def main() -> None:
    """Draw the Probes page."""
    st.title("Probes")
    suite = common.require_study()
    datasets = common.read(Store.datasets_with, suite, "probe")
    if not datasets:
        st.info("No probe results yet: the probe stage has not finished a unit. This page "
                "fills in as the pipeline runs.", icon=":material/hourglass_top:")
        return
    cards = common.read(tables.dataset_cards)
    dataset = common.linked(st.selectbox, "Dataset", datasets, param="dataset",
                            key="probe_dataset", format_func=common.dataset_label(cards))
    tabs = common.view_tabs(["Heatmap", "By checkpoint", "Best layer", "Directions",
                             "Compare suites"])
    with tabs[0]:
        heatmap_view(suite, dataset)
    with tabs[1]:
        curves_view(suite, dataset)
    with tabs[2]:
        best_layer_view(suite, dataset)
    with tabs[3]:
        directions_view(suite, dataset)
    with tabs[4]:
        compare_view(suite, dataset)


common.run_page(main)
