"""The story: a guided walk through the paper's three findings on the loaded study.

Every sentence here is computed from the study file (``findings.story``); when the data
does not show a finding, the page says so.
"""

from __future__ import annotations

import streamlit as st

from pages import _common as common
from trustdyn import findings
from trustdyn.dashboard import figures, steering_figures, tables
from trustdyn.store import Store

VERDICT_ICONS = {
    "supported": ":material/check_circle:",
    "mixed": ":material/contrast:",
    "not supported": ":material/cancel:",
    "no data": ":material/hourglass_empty:",
}


def verdict(finding: findings.Finding, *, raw_details: bool = True) -> None:
    """Show a finding's heading, its verdict and its computed text."""
    st.header(finding.title)
    text = f"**In this study: {finding.verdict}.** {finding.text}"
    if finding.verdict == "supported":
        st.success(text, icon=VERDICT_ICONS[finding.verdict])
    elif finding.verdict in ("mixed", "no data"):
        st.info(text, icon=VERDICT_ICONS[finding.verdict])
    else:
        st.warning(text, icon=VERDICT_ICONS[finding.verdict])
    if raw_details and not finding.details.empty:
        with st.expander("The numbers behind this"):
            st.dataframe(finding.details, hide_index=True)


def probes_chapter(suite: str, finding: findings.Finding) -> None:
    """Finding 1: the separability table against step 0, and one dataset's figures."""
    st.markdown("A **linear probe** is a logistic regression that reads a concept (true vs "
                "false, toxic vs benign, …) from one layer's activations; its **balanced "
                "accuracy** on held-out statements is 0.5 at chance whatever the class "
                "balance.")
    st.markdown("A randomly initialised network already separates some concepts: its random "
                "features happen to follow surface cues such as sentence length or word "
                "choice. That separability is there at step 0, before any training, so it is "
                "not learnt. A dataset counts as **becoming separable during pre-training** "
                "only from the step after which most checkpoints beat the step-0 level at "
                "the same layer by more than their noise (family-wise error ≤ 5%).")
    verdict(finding, raw_details=False)
    if finding.details.empty:
        return
    st.dataframe(tables.story_probe_table(finding.details), hide_index=True)
    st.caption("Intervals are 95% (cluster bootstrap over test items). \"Checkpoints above "
               "init\" is the share of later checkpoints whose balanced accuracy beats the "
               "step-0 level at some layer; the gain over initialisation is measured at the "
               "last checkpoint's best layer.")
    with st.expander("The numbers behind this"):
        st.dataframe(finding.details, hide_index=True)
    details = finding.details.sort_values("onset", na_position="last")
    dataset = st.selectbox("Look at a dataset", list(details["dataset"]), key="story_probe_ds")
    grid = common.read(Store.probe_grid, suite, dataset)
    best = int(details.loc[details["dataset"] == dataset, "final_layer"].iloc[0])
    left, right = st.columns(2)
    with left:
        common.figure(figures.probe_heatmap(grid, metric="balanced_accuracy",
                                            title=f"{dataset}: balanced accuracy"), grid,
                      f"{suite}-{dataset}-story-heatmap", key="story_heat")
    with right:
        common.figure(figures.probe_curves(grid, layers=[best], metric="balanced_accuracy",
                                           title=f"{dataset}: layer {best} against its "
                                           "step-0 level (dashed)"),
                      grid[grid["layer"] == best], f"{suite}-{dataset}-story-curve",
                      key="story_curve")


def information_chapter(suite: str, finding: findings.Finding) -> None:
    """Finding 2: the turn test's table and the information plane of one dataset."""
    st.markdown("Mutual information between a layer's representation T and the input X, "
                "and between T and the label Y, traces what a layer keeps. The paper sees "
                "I(X;T) **rise** (fitting: the layer encodes more of its input) and then "
                "**fall** (compression: it discards what does not matter), while I(T;Y) "
                "keeps rising. Here every estimate is corrected by its permutation null "
                "(0 = chance), and a turn counts only if the rise and fall beat a random "
                "reordering of the curve's own changes and I(T;Y) does not fall.")
    verdict(finding, raw_details=False)
    if finding.details.empty:
        return
    st.dataframe(finding.details, hide_index=True)
    st.caption("Per dataset: curves tested (layers × estimators), how many turn, the smallest "
               "family-wise p-value, the median step of the turns and the layers that turn.")
    dataset = st.selectbox("Look at a dataset", sorted(finding.details["dataset"].unique()),
                           key="story_info_ds")
    info = common.read(Store.info_grid, suite, dataset)
    estimators = tables.info_estimators(info)
    if not estimators:
        return
    plane = tables.info_plane(info, common.read(Store.probe_grid, suite, dataset),
                              estimators[0])
    turns = common.read(tables.turn_points, suite, dataset, estimators[0])
    common.figure(figures.info_plane_figure(plane, turns, estimator=estimators[0]), plane,
                  f"{suite}-{dataset}-story-plane", key="story_plane")
    undefined = tables.undefined_estimates(info, estimators[0])
    if len(undefined):
        st.caption("Not drawn, because undefined: "
                   + "; ".join(tables.undefined_notes(undefined)) + ".")


def steering_chapter(suite: str, finding: findings.Finding) -> None:
    """Finding 3: the per-dataset "helps" table and one dataset's probe-accuracy/gain scatter."""
    st.markdown("A **steering vector** is the difference between the mean activations of "
                "the two classes at a layer. Added to the chat model's residual stream, it "
                "nudges answers toward one class. The question is whether vectors read from "
                "*pre-training* checkpoints do this for the finished chat model better than "
                "a random direction added with the same norm, and whether checkpoints whose "
                "probes are better also steer better.")
    verdict(finding, raw_details=False)
    if finding.details.empty:
        return
    st.dataframe(tables.story_steering_table(finding.details), hide_index=True)
    st.caption(tables.HELPS_NOTE + " The partial r holds the log applied norm fixed.")
    with st.expander("The numbers behind this"):
        st.dataframe(finding.details, hide_index=True)
    row = st.selectbox("Look at a dataset", list(finding.details["dataset"]),
                       key="story_steer_ds")
    target = str(finding.details.loc[finding.details["dataset"] == row, "target"].iloc[0])
    evals = common.read(Store.steering_eval_table, suite)
    pairs, corr = findings.gain_vs_probe(evals, common.read(Store.probe_grid, suite, row),
                                          target, row)
    metric = tables.primary_metric(evals, row) or "the primary metric"
    common.figure(steering_figures.gain_scatter(pairs, corr, metric=metric,
                                                partial=findings.norm_controlled(pairs)),
                  pairs, f"{suite}-{row}-story-gain", key="story_gain")


def main() -> None:
    """Draw the story page."""
    st.title("The story")
    suite = common.require_study()
    st.markdown("Three findings of Qian et al. (2024), *Towards Tracing Trustworthiness "
                "Dynamics*, checked on the study loaded here. Verdicts and numbers are "
                "computed from this file; a small or unfinished study may not show what "
                "the paper shows, and this page then says so.")
    suites = common.read(tables.suites)
    if bool(suites.loc[suites["suite"] == suite, "synthetic"].iloc[0]):
        st.warning("This is a SYNTHETIC study: its numbers were made up to exercise the "
                   "dashboard, so the verdicts below say nothing about real models.",
                   icon=":material/science:")
    story = common.read(findings.story, suite)
    probes_chapter(suite, story[0])
    st.divider()
    information_chapter(suite, story[1])
    st.divider()
    steering_chapter(suite, story[2])


common.run_page(main)
