"""Information plane: null-corrected I(X;T) against I(T;Y) across pre-training, per layer."""

from __future__ import annotations

import streamlit as st

from pages import _common as common
from trustdyn.dashboard import figures, tables
from trustdyn.store import Store

ITY_LABELS = {
    "estimator": "same estimator",
    "usable": "probe's usable information (bits)",
}
TURN_COLUMNS = ["layer", "estimator", "turn_step", "statistic", "p_value", "ity_falls",
                "distinguishable"]


def turn_rule(level: float | None) -> str:
    """Return the caption that says when a curve counts as turning."""
    at = f"{level:.3g}" if level is not None else "the dataset's level"
    return (f"A curve turns (distinguishable) when null-corrected I(X;T) rises and then "
            "falls for the rest of training by more than a random reordering of its own "
            f"step-to-step changes produces (p_value ≤ {at}, family-wise over this dataset's "
            "curves, every layer and estimator), and I(T;Y) does not fall after the peak "
            "(ity_falls false). turn_step is the candidate peak, shown for every curve; only "
            "distinguishable turns are marked on the figures.")


@common.fragment
def plane_view(suite: str, dataset: str) -> None:
    """The information plane and both quantities against training."""
    info = common.read(Store.info_grid, suite, dataset)
    estimators = tables.info_estimators(info)
    if not estimators:
        st.info("No information estimates for this dataset yet.")
        return
    estimator = common.linked(st.radio, "Estimator", estimators, param="estimator",
                              key="info_estimator", horizontal=True,
                              format_func=lambda e: tables.ESTIMATOR_LABELS.get(e, e))
    choice = st.radio("I(T;Y) from", list(ITY_LABELS), horizontal=True, key="info_ity",
                      format_func=ITY_LABELS.__getitem__)
    ity_source: tables.ItySource = "usable" if choice == "usable" else "estimator"
    probes = common.read(Store.probe_grid, suite, dataset)
    plane = tables.info_plane(info, probes, estimator, ity_source)
    layers = tables.layers_of(plane)
    chosen = st.multiselect("Layers", layers, default=layers, key="info_layers")
    turns = common.read(tables.turn_points, suite, dataset, estimator)
    st.caption("Every value is null-corrected: the estimate minus the mean of its "
               "permutation null (statements shuffled against labels or inputs), so 0 — the "
               "dashed line — is chance level. Bars and bands are 95% intervals (half-sample "
               "standard error over statements).")
    if estimator.startswith("nhsic"):
        st.caption("nHSIC is a normalised dependence score between 0 and the number of "
                   "shared kernel directions; it is not a mutual information in bits.")
    if ity_source == "usable":
        st.caption("Usable information = H(Y) − the probe's test cross-entropy, in bits (a "
                   "lower bound on I(T;Y) for linear read-outs); it has no permutation null "
                   "and no interval, so I(T;Y) is drawn uncorrected.")
    shown = plane[plane["layer"].isin(chosen)]
    common.figure(figures.info_plane_figure(plane, turns, estimator=estimator, layers=chosen,
                                            ity_source=ity_source),
                  shown, f"{suite}-{dataset}-plane-{estimator}", key="plane")
    undefined = tables.undefined_estimates(info, estimator)
    undefined = undefined[undefined["layer"].isin(chosen)]
    if len(undefined):
        st.caption("Not drawn, because undefined: "
                   + "; ".join(tables.undefined_notes(undefined)) + ".")
    x, scale = common.axis_controls("info")
    common.figure(figures.info_vs_step_figure(plane, turns, layers=chosen, x=x, scale=scale,
                                              ity_source=ity_source),
                  shown, f"{suite}-{dataset}-info-vs-step", key="info_step")
    st.subheader("Turn test")
    if turns.empty:
        st.caption("No turns tested yet: they are tested once every pre-training "
                   "checkpoint has its information estimates.")
        return
    st.dataframe(turns[TURN_COLUMNS], hide_index=True)
    levels = turns["level"].dropna()
    st.caption(turn_rule(float(levels.iloc[0]) if len(levels) else None))


def main() -> None:
    """Draw the Information plane page."""
    st.title("Information plane")
    suite = common.require_study()
    datasets = common.read(Store.datasets_with, suite, "info")
    if not datasets:
        st.info("No information estimates yet: the info stage has not finished a unit. "
                "This page fills in as the pipeline runs.", icon=":material/hourglass_top:")
        return
    cards = common.read(tables.dataset_cards)
    dataset = common.linked(st.selectbox, "Dataset", datasets, param="dataset",
                            key="info_dataset", format_func=common.dataset_label(cards))
    plane_view(suite, dataset)


common.run_page(main)
