"""Plotly figures of the steering results: the test table as bars, dev sweeps, probe vs gain.

Tidy frames from :mod:`trustdyn.dashboard.tables` in, figures out (no Streamlit, no SQL).
A value that is not defined (a source without an admissible setting, a degenerate
setting's metric) is drawn as absent and labelled "n/a" with its reason on hover, never as
zero, so no bar or point suggests a number the study did not measure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from trustdyn.dashboard.figures import (
    BASELINE_COLOUR,
    CHAT_COLOUR,
    RANDOM_COLOUR,
    empty_figure,
    layer_colours,
    log_colorbar,
    styled,
)
from trustdyn.dashboard.tables import status_text
from trustdyn.schema import BASELINE_SOURCE, CONTRASTIVE_SOURCE, RANDOM_SOURCE
from trustdyn.stats import Correlation

CONTRASTIVE_COLOUR = "#7570b3"
"""The contrastive (CAA) source's bars: apart from the chat's own vector and the checkpoints."""


def _source_colour(source: str, target: str, step_rank: float) -> str:
    if source == BASELINE_SOURCE:
        return BASELINE_COLOUR
    if source == RANDOM_SOURCE:
        return RANDOM_COLOUR
    if source == CONTRASTIVE_SOURCE:
        return CONTRASTIVE_COLOUR
    if source == target:
        return CHAT_COLOUR
    return str(sample_colorscale("Blues", [0.35 + 0.65 * step_rank])[0])


def _mark_absent(fig: go.Figure, rows: pd.DataFrame) -> None:
    """Label each source whose value is not drawn "n/a" at the foot of its slot (hover: why)."""
    for label, status, reason in zip(rows["label"], rows["status"], rows["reason"],
                                     strict=True):
        fig.add_annotation(x=label, xref="x", y=0, yref="paper", yanchor="bottom",
                           text="n/a", showarrow=False, font={"color": BASELINE_COLOUR},
                           hovertext=f"not drawn: {status_text(status, reason)}")


def steering_bars(table: pd.DataFrame, *, metric: str, target: str,
                  higher_is_better: bool | None) -> go.Figure:
    """Return one metric of the steering table as bars with 95% intervals.

    A row whose status is not ``ok`` (or whose value is NULL) has no bar: its slot reads
    "n/a", with the status and reason on hover.

    Args:
        table: :func:`trustdyn.dashboard.tables.steering_table` rows.
        metric: Which metric to draw.
        target: The chat model's checkpoint name (its own vector is coloured apart).
        higher_is_better: Orientation of the metric, for the title.

    """
    rows = table[table["metric"] == metric]
    if rows.empty:
        return empty_figure(f"No test-split rows for {metric}.")
    drawn = (rows["status"] == "ok") & rows["value"].notna()
    value = rows["value"].where(drawn)
    ranks = np.linspace(0, 1, max(len(rows), 2))
    colours = [_source_colour(s, target, float(r))
               for s, r in zip(rows["source"], ranks, strict=False)]
    fig = go.Figure(go.Bar(
        x=rows["label"], y=value, marker={"color": colours},
        error_y={"type": "data", "symmetric": False,
                 "array": (rows["ci_hi"] - value).fillna(0),
                 "arrayminus": (value - rows["ci_lo"]).fillna(0)},
        customdata=np.stack([rows["layer"], rows["alpha"], rows["applied_norm"],
                             rows["steer_direction"]], axis=-1),
        hovertemplate="%{x}<br>" + metric + " %{y:.3f}<br>layer %{customdata[0]}, "
        "α %{customdata[1]}, applied norm %{customdata[2]:.3g}<br>%{customdata[3]}"
        "<extra></extra>"))
    if not drawn.all():
        _mark_absent(fig, rows[~drawn])
    base = rows[(rows["source"] == BASELINE_SOURCE) & drawn]
    if len(base):
        fig.add_hline(y=float(base["value"].iloc[0]), line={"dash": "dash",
                                                            "color": BASELINE_COLOUR},
                      annotation_text="unsteered", annotation_position="top left")
    orientation = ("higher is better" if higher_is_better else "lower is better"
                   if higher_is_better is False else "no preferred direction")
    fig.update_yaxes(title={"text": metric})
    absent = "" if drawn.all() else "; n/a: not defined, not drawn"
    return styled(fig, f"{metric} on the test split ({orientation}); bars: 95% interval"
                  + absent)


def sweep_figure(sweep: pd.DataFrame, *, metric: str, guard: float,
                 baseline: float | None) -> go.Figure:
    """Return the dev-split α/layer sweep: the metric (left) and perplexity ratio (right).

    Open markers are candidates whose perplexity exceeds the guard (not selectable); an
    undefined value (a degenerate setting) leaves a gap.
    """
    if sweep.empty:
        return empty_figure("No dev-split sweep stored for this source.")
    layers = sorted(int(v) for v in sweep["layer"].unique())
    colours = layer_colours(layers, max(layers) + 1)
    fig = make_subplots(rows=1, cols=2, subplot_titles=[f"{metric} (dev)",
                                                        "perplexity / unsteered (dev)"])
    for layer in layers:
        rows = sweep[sweep["layer"] == layer]
        symbols = ["circle" if ok else "circle-open" for ok in rows["within_guard"]]
        common = {"mode": "lines+markers", "legendgroup": f"layer {layer}",
                  "line": {"color": colours[layer]}}
        fig.add_trace(go.Scatter(x=rows["alpha"].abs(), y=rows["value"], name=f"layer {layer}",
                                 marker={"symbol": symbols, "size": 9},
                                 hovertemplate=f"layer {layer}, |α| %{{x}}: %{{y:.3f}}"
                                 "<extra></extra>", **common), row=1, col=1)
        fig.add_trace(go.Scatter(x=rows["alpha"].abs(), y=rows["ppl_ratio"], showlegend=False,
                                 marker={"symbol": symbols, "size": 9},
                                 hovertemplate=f"layer {layer}, |α| %{{x}}: ×%{{y:.3f}}"
                                 "<extra></extra>", **common), row=1, col=2)
    if baseline is not None:
        fig.add_hline(y=baseline, row=1, col=1, line={"dash": "dash", "color": BASELINE_COLOUR},
                      annotation_text="unsteered")
    fig.add_hline(y=guard, row=1, col=2, line={"dash": "dash", "color": "#d62728"},
                  annotation_text=f"guard ×{guard:g}")
    fig.update_xaxes(title={"text": "strength |α| (units of σ: see the scaling note)"})
    return styled(fig, "Dev-split sweep (open markers: over the perplexity guard)")


def correlation_text(corr: Correlation) -> str:
    """Return ``r = … [lo, hi], n = …`` of a correlation, or why it is undefined."""
    if np.isnan(corr.r):
        return f"r undefined (n = {corr.n}: too few points or no spread)"
    interval = "" if np.isnan(corr.lo) else f" [{corr.lo:.2f}, {corr.hi:.2f}]"
    return f"r = {corr.r:.2f}{interval}, n = {corr.n}"


def gain_scatter(pairs: pd.DataFrame, corr: Correlation, *, metric: str,
                 partial: Correlation | None = None) -> go.Figure:
    """Return probe accuracy vs steering gain per pre-training checkpoint, with Pearson r.

    Only sources with a defined test gain are drawn (``findings.gain_vs_probe`` leaves the
    others out). ``partial``, when given, is the same correlation with the log applied norm
    held fixed (``findings.norm_controlled``) and joins the title.
    """
    if pairs.empty:
        return empty_figure("No pre-training vector has both a test gain and a probe result.")
    log_step = np.log10(1.0 + pairs["step"].to_numpy(dtype=float))
    fig = go.Figure(go.Scatter(
        x=pairs["probe_accuracy"], y=pairs["gain"], mode="markers+text",
        text=[f"{int(s):,}" for s in pairs["step"]], textposition="top center",
        marker={"size": 11, "color": log_step, "colorscale": "Plasma",
                "colorbar": {"title": {"text": "step"}, **log_colorbar(pairs["step"])}},
        error_y={"type": "data", "symmetric": False,
                 "array": (pairs["gain_hi"] - pairs["gain"]).fillna(0),
                 "arrayminus": (pairs["gain"] - pairs["gain_lo"]).fillna(0)},
        customdata=np.stack([pairs["checkpoint"], pairs["layer"], pairs["applied_norm"]],
                            axis=-1),
        hovertemplate="%{customdata[0]} (layer %{customdata[1]}, applied norm "
        "%{customdata[2]:.3g})<br>probe accuracy %{x:.3f}<br>gain %{y:.3f}<extra></extra>",
        name="checkpoints"))
    if len(pairs) >= 2 and np.ptp(pairs["probe_accuracy"].to_numpy(dtype=float)) > 0:
        slope, intercept = np.polyfit(pairs["probe_accuracy"], pairs["gain"], 1)
        xs = np.linspace(pairs["probe_accuracy"].min(), pairs["probe_accuracy"].max(), 20)
        fig.add_trace(go.Scatter(x=xs, y=slope * xs + intercept, mode="lines",
                                 name="least-squares line", line={"dash": "dash",
                                                                  "color": "#999999"}))
    fig.add_hline(y=0, line={"color": BASELINE_COLOUR, "width": 1})
    title = f"Probe accuracy vs steering gain: Pearson {correlation_text(corr)}"
    if partial is not None:
        title += f"<br>with the applied norm held fixed: partial {correlation_text(partial)}"
    fig.update_xaxes(title={"text": "probe accuracy at the vector's layer (test)"})
    fig.update_yaxes(title={"text": f"steering gain in {metric} (test, + = better)"})
    return styled(fig, title)
