"""Steering results: per-source verdicts, the paper's table, dev sweeps, probe accuracy vs gain."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages import _common as common
from trustdyn import findings
from trustdyn.dashboard import steering_figures, tables
from trustdyn.schema import BASELINE_SOURCE, CONTRASTIVE_SOURCE
from trustdyn.store import Store


def _task_metrics(evals: pd.DataFrame, dataset: str, primary: str | None) -> list[str]:
    names = sorted(set(evals.loc[evals["dataset"] == dataset, "metric"])
                   - tables.NON_TASK_METRICS)
    first = [primary] if primary is not None and primary in names else []
    return first + [m for m in names if m != primary]


def summary_view(details: pd.DataFrame, target: str, dataset: str) -> None:
    """The dataset's "helps" counts (``findings.steering_details``), all datasets below."""
    row = details[(details["target"] == target) & (details["dataset"] == dataset)]
    if row.empty:
        return
    r = row.iloc[0]
    chat = "helps" if bool(r["chat_helps"]) else "does not help"
    contrastive = ("" if pd.isna(r["contrastive_gain_vs_random"]) else
                   "; the contrastive vector (beyond the paper) "
                   + ("helps" if bool(r["contrastive_helps"]) else "does not help"))
    st.markdown(f"**{int(r['helping'])} of {int(r['pretraining_sources'])}** pre-training "
                f"vectors help on {dataset} (each tested at one-sided level "
                f"{float(r['level']):.2g}); the chat model's own vector {chat}{contrastive}.")
    with st.expander("Every dataset"):
        st.dataframe(tables.story_steering_table(details), hide_index=True)


def sources_view(table: pd.DataFrame, details: pd.DataFrame, name: str, target: str,
                 dataset: str) -> None:
    """Each steered source's setting, gains and verdict, with what the columns mean."""
    family = tables.helps_family(details, target, dataset)
    sources = tables.steering_sources(table, *family)
    st.dataframe(tables.steering_sources_view(sources), hide_index=True)
    st.caption(tables.scaling_note(table))
    st.caption("Gains are paired-bootstrap differences on the same test items, "
               "+ = more trustworthy, with 95% intervals. " + tables.HELPS_NOTE)
    if (sources["source"] == CONTRASTIVE_SOURCE).any():
        st.caption(tables.CONTRASTIVE_NOTE)
    st.download_button("Download per-source table (CSV)",
                       data=lambda: sources.to_csv(index=False).encode(),
                       file_name=f"{name}-sources.csv", mime="text/csv", key="sources_csv",
                       on_click="ignore", icon=":material/download:")
    blocked = sources[sources["layer"].isna()]  # no dev setting was admissible
    if len(blocked):
        st.warning("No admissible setting (so no gain, and it does not count as helping) for "
                   + "; ".join(f"{label}: {reason}" for label, reason in
                               zip(blocked["label"], blocked["gain_reason"], strict=True))
                   + ".", icon=":material/warning:")


def metrics_view(table: pd.DataFrame, primary: str | None, name: str) -> None:
    """Every test metric per source, as the paper's table."""
    with st.expander("Every metric (test split)"):
        st.dataframe(tables.wide_table(table, primary), hide_index=True)
        st.download_button("Download table (CSV)",
                           data=lambda: table.to_csv(index=False).encode(),
                           file_name=f"{name}-steering-table.csv", mime="text/csv",
                           key="table_csv", on_click="ignore", icon=":material/download:")


def bars_view(table: pd.DataFrame, primary: str | None, target: str, name: str) -> None:
    """One metric as bars; values that are not defined are named, not drawn."""
    metrics = sorted(set(table["metric"]))
    default = primary if primary in metrics else metrics[0]
    metric = st.selectbox("Metric to plot", metrics, index=metrics.index(default),
                          key="table_metric")
    direction = table.loc[table["metric"] == metric, "higher_is_better"].dropna()
    fig = steering_figures.steering_bars(
        table, metric=metric, target=target,
        higher_is_better=bool(direction.iloc[0]) if len(direction) else None)
    common.figure(fig, table[table["metric"] == metric], f"{name}-{metric}", key="bars")
    absent = tables.not_drawn(table, metric)
    if absent:
        st.caption("Not drawn (n/a), because not defined: " + "; ".join(absent) + ".")


@common.fragment
def table_view(suite: str, target: str, dataset: str) -> None:
    """The per-source verdicts, the reproduced table (test split) and one metric as bars."""
    evals = common.read(Store.steering_eval_table, suite)
    ckpts = common.read(Store.checkpoints, suite)
    details = common.read(tables.steering_details, suite)
    table = tables.steering_table(evals, ckpts, target, dataset)
    if table.empty:
        st.info("No test-split rows for this dataset yet.")
        return
    steered = table[table["source"] != BASELINE_SOURCE]
    if len(steered):
        st.markdown(f"Vectors are applied **{steered['steer_direction'].iloc[0]}**. Each "
                    "source's layer and strength were chosen on the dev split among the "
                    "settings within the perplexity guard, then scored once on the test "
                    "split; a source with no such setting has no number.")
    summary_view(details, target, dataset)
    name = f"{suite}-{target}-{dataset}"
    sources_view(table, details, name, target, dataset)
    primary = tables.primary_metric(evals, dataset)
    metrics_view(table, primary, name)
    bars_view(table, primary, target, name)


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
    # The last pre-training checkpoint's sweep first (the chat's own where there is none).
    pretraining = set(ckpts.loc[~ckpts["is_chat"].astype(bool), "checkpoint"])
    first = max((i for i, s in enumerate(sources) if s in pretraining), default=0)
    source = left.selectbox("Vector source", sources, key="sweep_source", index=first,
                            format_func=lambda s: tables.source_label(s, ckpts))
    metric = right.selectbox("Metric", metrics, key="sweep_metric")
    sweep = tables.sweep_frame(evals, target, dataset, source, metric)
    guard = tables.ppl_guard(dev)
    baseline = tables.baseline_value(evals, target, dataset, metric, "dev")
    common.figure(steering_figures.sweep_figure(sweep, metric=metric, guard=guard,
                                                baseline=baseline),
                  sweep, f"{suite}-{target}-{dataset}-{source}-sweep", key="sweep")
    st.caption(f"Candidates above the perplexity guard (×{guard:g} the unsteered model's "
               "perplexity) cannot be selected; a degenerate setting's undefined value "
               "leaves a gap. " + tables.scaling_note(dev))


@common.fragment
def correlation_view(suite: str, target: str, dataset: str) -> None:
    """Probe accuracy at each checkpoint against the gain its vector gives the chat model."""
    evals = common.read(Store.steering_eval_table, suite)
    probes = common.read(Store.probe_grid, suite, dataset)
    pairs, corr = findings.gain_vs_probe(evals, probes, target, dataset)
    partial = findings.norm_controlled(pairs)
    primary = tables.primary_metric(evals, dataset) or "the primary metric"
    common.figure(steering_figures.gain_scatter(pairs, corr, metric=primary, partial=partial),
                  pairs, f"{suite}-{target}-{dataset}-probe-vs-gain", key="scatter")
    for line in tables.stored_correlations(evals, target, dataset):
        st.caption(line)
    st.caption("Each point is a pre-training checkpoint: its probe's test accuracy at the "
               "layer chosen for its vector, and the test gain that vector gives the chat "
               "model (positive = more trustworthy). The partial r holds the log applied "
               "norm fixed: a vector added with a larger norm can help more for that reason "
               "alone.")
    table = tables.steering_table(evals, common.read(Store.checkpoints, suite), target,
                                  dataset)
    absent = tables.not_drawn(table[table["role"] == "pretraining"], "gain")
    if absent:
        st.caption("Not drawn, because their gain is not defined: " + "; ".join(absent) + ".")


def main() -> None:
    """Draw the Steering results page."""
    st.title("Steering results")
    suite = common.require_study()
    evals = common.read(Store.steering_eval_table, suite)
    unevaluated = common.read(tables.unevaluated_datasets, suite)
    if unevaluated:
        st.caption(f"Not evaluated here: {', '.join(unevaluated)}. The offline steering "
                   "evaluation has tasks for the builtin datasets only; the vectors of your "
                   "own datasets are in the study, and the Steering lab applies them.")
    if evals.empty:
        datasets = set(common.read(tables.suite_config, suite).get("datasets", []))
        if not unevaluated or not datasets <= set(unevaluated):
            st.info("No steering evaluation yet: it runs after every checkpoint's vectors "
                    "exist.", icon=":material/hourglass_top:")
        return
    targets = sorted(evals["target"].unique())
    cards = common.read(tables.dataset_cards)
    left, right = st.columns(2)
    target = common.linked(left.selectbox, "Chat model (target)", targets, param="target",
                           key="steer_target")
    evaluated = [d for d in cards["dataset"] if d in set(evals["dataset"])]
    dataset = common.linked(right.selectbox, "Dataset", evaluated, param="dataset",
                            key="steer_dataset", format_func=common.dataset_label(cards))
    tabs = common.view_tabs(["Table (test)", "Sweeps (dev)", "Probe accuracy vs gain"])
    with tabs[0]:
        table_view(suite, target, dataset)
    with tabs[1]:
        sweep_view(suite, target, dataset)
    with tabs[2]:
        correlation_view(suite, target, dataset)


common.run_page(main)
