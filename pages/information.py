"""Information plane: I(X;T) against I(T;Y) across pre-training, per layer."""

from __future__ import annotations

import streamlit as st

from pages import _common as common
from trustdyn.dashboard import figures, tables
from trustdyn.store import Store

ESTIMATOR_LABELS = {
    "renyi": "matrix Rényi entropy (bits)",
    "nhsic": "normalised HSIC (dependence score, not bits)",
}
ITY_LABELS = {
    "estimator": "same estimator",
    "usable": "probe's usable information (bits)",
}


@common.fragment
def plane_view(suite: str, dataset: str) -> None:
    """The information plane and both quantities against training."""
    info = common.read(Store.info_grid, suite, dataset)
    estimators = tables.info_estimators(info)
    if not estimators:
        st.info("No information estimates for this dataset yet.")
        return
    left, right = st.columns(2)
    estimator = left.radio("Estimator", estimators, horizontal=True, key="info_estimator",
                           format_func=lambda e: ESTIMATOR_LABELS.get(e, e))
    ity_source = right.radio("I(T;Y) from", list(ITY_LABELS), horizontal=True,
                             key="info_ity", format_func=ITY_LABELS.__getitem__)
    probes = common.read(Store.probe_grid, suite, dataset)
    plane = tables.info_plane(info, probes, estimator,
                                 "usable" if ity_source == "usable" else "estimator")
    layers = tables.layers_of(plane)
    chosen = st.multiselect("Layers", layers, default=layers, key="info_layers")
    turns = common.read(tables.turn_points, suite, dataset, estimator)
    if estimator == "nhsic":
        st.caption("nHSIC is a normalised dependence score between 0 and the number of "
                   "shared kernel directions; it is not a mutual information in bits.")
    if ity_source == "usable":
        st.caption("Usable information = H(Y) − the probe's test cross-entropy, in bits (a "
                   "lower bound on I(T;Y) for linear read-outs); it has no permutation null.")
    common.figure(figures.info_plane_figure(plane, turns, estimator=estimator, layers=chosen),
                  plane[plane["layer"].isin(chosen)], f"{suite}-{dataset}-plane-{estimator}",
                  key="plane")
    x, scale = common.axis_controls("info")
    common.figure(figures.info_vs_step_figure(plane, turns, layers=chosen, x=x, scale=scale),
                  plane[plane["layer"].isin(chosen)], f"{suite}-{dataset}-info-vs-step",
                  key="info_step")
    st.subheader("Detected turns")
    if turns.empty:
        st.caption("No turns stored yet: they are detected once every pre-training "
                   "checkpoint has its information estimates.")
    else:
        st.dataframe(turns, hide_index=True)
        st.caption("A turn is the step where I(X;T) peaks before falling; it is "
                   "'distinguishable' when the rise and the fall both exceed the estimator's "
                   "noise (permutation-null spread). Empty turn_step: no interior peak.")


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
    dataset = st.selectbox("Dataset", datasets, key="info_dataset",
                           format_func=common.dataset_label(cards))
    plane_view(suite, dataset)


common.run_page(main)
