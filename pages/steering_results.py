"""Steering results: the paper's table, the dev-split sweeps, probe accuracy vs gain."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages import _common as common
from trustdyn import findings
from trustdyn.dashboard import figures, tables
from trustdyn.schema import BASELINE_SOURCE
from trustdyn.store import Store

_NOT_TASK_METRICS = {"gain", "ppl", "ppl_ratio", "corr_probe_gain", "judge_accuracy"}


def _task_metrics(evals: pd.DataFrame, dataset: str, primary: str | None) -> list[str]:
    names = sorted(set(evals.loc[evals["dataset"] == dataset, "metric"]) - _NOT_TASK_METRICS)
    first = [primary] if primary is not None and primary in names else []
    return first + [m for m in names if m != primary]


@common.fragment
def table_view(suite: str, target: str, dataset: str) -> None:
    """The reproduced table (test split) and one metric as bars."""
    evals = common.read(Store.steering_eval_table, suite)
    ckpts = common.read(Store.checkpoints, suite)
    table = tables.steering_table(evals, ckpts, target, dataset)
    if table.empty:
        st.info("No test-split rows for this dataset yet.")
        return
    primary = tables.primary_metric(evals, dataset)
    steered = table[table["source"] != BASELINE_SOURCE]
    if len(steered):
        st.markdown(f"Vectors are applied **{steered['steer_direction'].iloc[0]}**. Each "
                    "source's layer and strength were chosen on the dev split under the "
                    "perplexity guard, then scored once on the test split.")
    wide = tables.wide_table(table, primary)
    st.dataframe(wide, hide_index=True)
    st.download_button("Download table (CSV)", data=lambda: table.to_csv(index=False).encode(),
                       file_name=f"{suite}-{target}-{dataset}-steering-table.csv",
                       mime="text/csv", key="table_csv", on_click="ignore",
                       icon=":material/download:")
    failed = table[table["guard_passed"].eq(False).fillna(False).astype(bool)
                   & (table["metric"] == "gain")]
    if len(failed):
        st.warning("No candidate of " + ", ".join(failed["label"]) + " kept perplexity within "
                   "the guard; the least-perplexing one is shown.", icon=":material/warning:")
    metrics = sorted(set(table["metric"]))
    default = primary if primary in metrics else metrics[0]
    metric = st.selectbox("Metric to plot", metrics, index=metrics.index(default),
                          key="table_metric")
    direction = table.loc[table["metric"] == metric, "higher_is_better"].dropna()
    fig = figures.steering_bars(table, metric=metric, target=target,
                                higher_is_better=bool(direction.iloc[0]) if len(direction)
                                else None)
    common.figure(fig, table[table["metric"] == metric],
                  f"{suite}-{target}-{dataset}-{metric}", key="bars")


@common.fragment
def sweep_view(suite: str, target: str, dataset: str) -> None:
    """The α/layer sweep of one vector source on the dev split."""
    evals = common.read(Store.steering_eval_table, suite)
    ckpts = common.read(Store.checkpoints, suite)
    dev = evals[(evals["target"] == target) & (evals["dataset"] == dataset)
                & (evals["split"] == "dev")]
    sources = [s for s in tables.source_order(dev, ckpts) if s != BASELINE_SOURCE]
    if not sources:
        st.info("No dev-split sweep stored for this dataset.")
        return
    primary = tables.primary_metric(evals, dataset)
    metrics = _task_metrics(dev, dataset, primary)
    left, right = st.columns(2)
    source = left.selectbox("Vector source", sources, key="sweep_source",
                            index=max(len(sources) - 3, 0),
                            format_func=lambda s: tables.source_label(s, ckpts))
    metric = right.selectbox("Metric", metrics, key="sweep_metric")
    sweep = tables.sweep_frame(evals, target, dataset, source, metric)
    guard = tables.ppl_guard(dev)
    baseline = tables.baseline_value(evals, target, dataset, metric, "dev")
    common.figure(figures.sweep_figure(sweep, metric=metric, guard=guard, baseline=baseline),
                  sweep, f"{suite}-{target}-{dataset}-{source}-sweep", key="sweep")
    st.caption(f"Candidates above the perplexity guard (×{guard:g} the unsteered model's "
               "perplexity) cannot be selected. |α| is in units of the vector's σ (the "
               "standard deviation of the statements' projections).")


@common.fragment
def correlation_view(suite: str, target: str, dataset: str) -> None:
    """Probe accuracy at each checkpoint against the gain its vector gives the chat model."""
    evals = common.read(Store.steering_eval_table, suite)
    probes = common.read(Store.probe_grid, suite, dataset)
    pairs, corr = findings.gain_vs_probe(evals, probes, target, dataset)
    primary = tables.primary_metric(evals, dataset) or "the primary metric"
    common.figure(figures.gain_scatter(pairs, corr, metric=primary), pairs,
                  f"{suite}-{target}-{dataset}-probe-vs-gain", key="scatter")
    stored = evals[(evals["dataset"] == dataset) & (evals["target"] == target)
                   & (evals["metric"] == "corr_probe_gain")]
    if len(stored):
        row = stored.iloc[0]
        st.caption(f"Stored by the pipeline: r = {row['value']:.3f} [{row['ci_lo']:.3f}, "
                   f"{row['ci_hi']:.3f}] over {int(row['n'])} checkpoints (Fisher-z interval).")
    st.caption("Each point is a pre-training checkpoint: its probe's test accuracy at the "
               "layer chosen for its vector, and the test gain that vector gives the chat "
               "model (positive = more trustworthy).")


def main() -> None:
    """Draw the Steering results page."""
    st.title("Steering results")
    suite = common.require_study()
    evals = common.read(Store.steering_eval_table, suite)
    if evals.empty:
        st.info("No steering evaluation yet: it runs after every checkpoint's vectors exist.",
                icon=":material/hourglass_top:")
        return
    targets = sorted(evals["target"].unique())
    cards = common.read(tables.dataset_cards)
    left, right = st.columns(2)
    target = left.selectbox("Chat model (target)", targets, key="steer_target")
    datasets = [d for d in cards["dataset"] if d in set(evals["dataset"])]
    dataset = right.selectbox("Dataset", datasets, key="steer_dataset",
                              format_func=common.dataset_label(cards))
    tabs = st.tabs(["Table (test)", "Sweeps (dev)", "Probe accuracy vs gain"])
    with tabs[0]:
        table_view(suite, target, dataset)
    with tabs[1]:
        sweep_view(suite, target, dataset)
    with tabs[2]:
        correlation_view(suite, target, dataset)


common.run_page(main)
