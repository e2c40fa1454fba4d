"""Plotly figure builders for the dashboard: tidy frames in, figures out (no Streamlit, no SQL).

The pages export the same frame a figure draws as CSV, so a download always matches the
picture. Training position is drawn on a ``log10(1 + x)`` axis in "log" mode (step 0 stays
on it), and chat models apart from the pre-training axis, since their position is not a
training step. The shared pieces here (:func:`styled`, :func:`empty_figure`, colours) also
serve :mod:`~trustdyn.dashboard.steering_figures`, which draws the steering results.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

from trustdyn.dashboard.tables import ESTIMATOR_LABELS, PROBE_METRICS, Z95, ItySource

Scale = Literal["log", "linear"]
XAxis = Literal["step", "tokens"]
ExportFormat = Literal["png", "svg"]

CHAT_COLOUR = "#d95f02"
BASELINE_COLOUR = "#636363"
RANDOM_COLOUR = "#000000"
_HEIGHT = 460


# --------------------------------------------------------------------------- shared pieces


def export_config(filename: str, fmt: ExportFormat = "png") -> dict[str, Any]:
    """Return a plotly ``config`` whose camera button saves the figure as PNG or SVG."""
    return {
        "displaylogo": False,
        "toImageButtonOptions": {"format": fmt, "filename": filename, "scale": 2},
    }


def _si(value: float) -> str:
    """Return a short label for a power of ten: 1, 10, 100, 1k, ..., 1M, 1B, 1T."""
    for threshold, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= threshold:
            return f"{value / threshold:g}{suffix}"
    return f"{value:g}"


def axis_positions(values: Sequence[float] | np.ndarray, scale: Scale) -> np.ndarray:
    """Return plotting positions: ``log10(1 + v)`` in log mode, ``v`` in linear mode."""
    array = np.asarray(values, dtype=float)
    return np.log10(1.0 + np.maximum(array, 0.0)) if scale == "log" else array


def axis_layout(values: Sequence[float] | np.ndarray, scale: Scale, title: str
                ) -> dict[str, Any]:
    """Return x-axis settings (ticks at real values) for :func:`axis_positions` output."""
    array = np.asarray(values, dtype=float)
    array = array[np.isfinite(array)]
    if scale != "log" or not len(array):
        return {"title": {"text": title}}
    top = max(float(array.max()), 1.0)
    powers = [0.0] + [10.0 ** k for k in range(int(np.floor(np.log10(top))) + 1)]
    return {
        "title": {"text": f"{title} (log scale; 0 = initialisation)"},
        "tickvals": list(axis_positions(powers, "log")),
        "ticktext": [_si(v) if v else "0" for v in powers],
    }


def layer_colours(layers: Sequence[int], n_layers: int) -> dict[int, str]:
    """Return a colour per layer: qualitative for a few layers, viridis by depth otherwise."""
    if len(layers) <= len(qualitative.D3):
        return {layer: qualitative.D3[i] for i, layer in enumerate(layers)}
    positions = [layer / max(n_layers - 1, 1) for layer in layers]
    return dict(zip(layers, sample_colorscale("Viridis", positions), strict=True))


def styled(fig: go.Figure, title: str, **extra: Any) -> go.Figure:
    """Give a figure the dashboard's title, height, margins and legend below the plot."""
    fig.update_layout(title={"text": title}, height=extra.pop("height", _HEIGHT),
                      margin={"l": 60, "r": 20, "t": 60, "b": 50},
                      legend={"orientation": "h", "y": -0.2}, **extra)
    return fig


def empty_figure(message: str) -> go.Figure:
    """Return a blank figure that says why there is nothing to draw."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper",
                       yref="paper", font={"size": 15})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return styled(fig, "", height=220)


def usable_x(frame: pd.DataFrame, x: XAxis) -> XAxis:
    """Return ``x``, or ``"step"`` when some pre-training checkpoint's tokens are unknown."""
    if x != "tokens":
        return x
    pre, _ = _split_chat(frame) if "is_chat" in frame else (frame, frame)
    known = "tokens" in pre and pre["tokens"].notna().all() and len(pre) > 0
    return "tokens" if known else "step"


def _split_chat(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    chat = frame["is_chat"].astype(bool) if "is_chat" in frame else np.zeros(len(frame), bool)
    return frame[~chat], frame[chat]


# --------------------------------------------------------------------------- probes

_HOVER_COLUMNS = ("step", "tokens", "accuracy", "accuracy_lo", "accuracy_hi", "auroc",
                  "auroc_lo", "auroc_hi", "control_accuracy", "control_auroc",
                  "balanced_accuracy", "balanced_accuracy_half")
# Hover data stays numeric: plotly deep-copies object arrays, which is slow for 360 × 32.
_PROBE_HOVER = (
    "step %{customdata[0]:,} (%{customdata[1]:.3s} tokens)<br>layer %{y}<br>"
    "balanced accuracy %{customdata[10]:.3f} ± %{customdata[11]:.3f} (95%)<br>"
    "accuracy %{customdata[2]:.3f} [%{customdata[3]:.3f}, %{customdata[4]:.3f}]<br>"
    "AUROC %{customdata[5]:.3f} [%{customdata[6]:.3f}, %{customdata[7]:.3f}]<br>"
    "shuffled-label control: acc %{customdata[8]:.3f}, AUROC %{customdata[9]:.3f}"
    "<extra></extra>"
)


def _grid(frame: pd.DataFrame, columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Arrange probe rows as ``[n_layers, n_checkpoints, len(columns)]`` (NaN where missing).

    Checkpoints keep their order of first appearance (the frame's training order).

    Returns:
        ``(values, layers)``; ``layers`` are the sorted layer indices (the rows).

    """
    cols, _ = pd.factorize(frame["checkpoint"])
    layers = np.sort(frame["layer"].unique())
    rows = np.searchsorted(layers, frame["layer"].to_numpy())
    values = np.full((len(layers), int(cols.max()) + 1 if len(cols) else 0, len(columns)),
                     np.nan)
    values[rows, cols] = frame[list(columns)].to_numpy(dtype=float)
    return values, layers


def _heatmap(frame: pd.DataFrame, metric: str, x: Sequence[Any] | np.ndarray) -> go.Heatmap:
    """Return the heatmap trace of one metric with numeric hover data."""
    frame = frame.assign(balanced_accuracy_half=Z95 * frame["balanced_accuracy_se"])
    values, layers = _grid(frame, [metric, *_HOVER_COLUMNS])
    return go.Heatmap(z=values[..., 0], x=x, y=layers, customdata=values[..., 1:],
                      hovertemplate=_PROBE_HOVER, coloraxis="coloraxis")


def _colour_axis(metric: str, values: np.ndarray) -> dict[str, Any]:
    finite = values[np.isfinite(values)] if values.size else values
    if metric == "accuracy_minus_control":
        bound = float(np.abs(finite).max()) if finite.size else 0.5
        return {"colorscale": "RdBu", "cmid": 0.0, "cmin": -bound, "cmax": bound}
    if metric in ("balanced_accuracy", "accuracy", "auroc"):
        return {"colorscale": "Viridis", "cmin": 0.5, "cmax": max(float(finite.max()), 0.51)
                if finite.size else 1.0}
    return {"colorscale": "Viridis"}


def probe_heatmap(frame: pd.DataFrame, *, metric: str = "balanced_accuracy", x: XAxis = "step",
                  scale: Scale = "log", title: str = "") -> go.Figure:
    """Return the layer × checkpoint heatmap of a probe metric, chat model in its own column.

    Args:
        frame: ``dashboard.probe_grid`` rows of one dataset.
        metric: A column named in ``dashboard.PROBE_METRICS``.
        x: Position checkpoints by training ``step`` or ``tokens`` seen.
        scale: ``log`` (``log10(1 + x)``) or ``linear``.
        title: Figure title.

    """
    if frame.empty:
        return empty_figure("No probe results for this dataset yet.")
    x = usable_x(frame, x)
    pre, chat = _split_chat(frame)
    has_chat = not chat.empty
    fig = make_subplots(rows=1, cols=2 if has_chat else 1, shared_yaxes=True,
                        column_widths=[0.93, 0.07] if has_chat else [1.0],
                        horizontal_spacing=0.015)
    positions = pre.drop_duplicates("checkpoint")[x].to_numpy(dtype=float)
    fig.add_trace(_heatmap(pre, metric, axis_positions(positions, scale)), row=1, col=1)
    if has_chat:
        chat_names = ["chat" if i == 0 else f"chat {i + 1}"
                      for i in range(chat["checkpoint"].nunique())]
        fig.add_trace(_heatmap(chat, metric, chat_names), row=1, col=2)
    all_values = frame[metric].to_numpy(dtype=float)
    fig.update_xaxes(axis_layout(positions, scale, "training " + x), row=1, col=1)
    fig.update_yaxes(title={"text": "layer (decoder block output)"}, row=1, col=1,
                     **_layer_ticks(int(pre["layer"].max()) + 1))
    label = PROBE_METRICS.get(metric, metric)
    fig.update_layout(coloraxis={**_colour_axis(metric, np.asarray(all_values, float)),
                                 "colorbar": {"title": {"text": label, "side": "right"}}})
    return styled(fig, title or label)


def _layer_ticks(n_layers: int) -> dict[str, Any]:
    """Return integer y ticks for a layer axis (every layer up to 16, then thinned)."""
    return {"tickmode": "linear", "tick0": 0, "dtick": max(1, n_layers // 16)}


def _band(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, colour: str, name: str,
          group: str) -> go.Scatter:
    """Return a filled interval band trace (hover off)."""
    return go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([hi, lo[::-1]]),
                      mode="lines", fill="toself", fillcolor=colour, opacity=0.18,
                      line={"width": 0},
                      hoverinfo="skip", showlegend=False, name=name, legendgroup=group)


def _with_interval(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Return ``frame`` with ``{metric}_lo``/``_hi``: stored, or value ± Z95 · ``_se``."""
    if f"{metric}_lo" in frame or f"{metric}_se" not in frame:
        return frame
    half = Z95 * frame[f"{metric}_se"]
    return frame.assign(**{f"{metric}_lo": frame[metric] - half,
                           f"{metric}_hi": frame[metric] + half})


def _init_label(step: float) -> str:
    return "initialisation (step 0)" if step == 0 else f"first checkpoint (step {int(step):,})"


def probe_curves(frame: pd.DataFrame, *, layers: Sequence[int],
                 metric: str = "balanced_accuracy", x: XAxis = "step", scale: Scale = "log",
                 show_control: bool = True, title: str = "") -> go.Figure:
    """Return the paper's view: a probe metric against checkpoint for chosen layers.

    Each layer gets its 95% interval as a band, the first checkpoint's level (step 0 =
    initialisation: what a random network already has) as a dashed line, and, where stored,
    its shuffled-label control as a dotted line; the chat model is a star to the right.

    Args:
        frame: ``dashboard.probe_grid`` rows of one dataset.
        layers: Layers to draw.
        metric: ``balanced_accuracy`` (interval from its standard error), ``accuracy`` or
            ``auroc``.
        x: ``step`` or ``tokens``.
        scale: ``log`` or ``linear``.
        show_control: Draw the shuffled-label control (``accuracy`` and ``auroc`` have one).
        title: Figure title.

    """
    chosen = _with_interval(frame[frame["layer"].isin(list(layers))], metric)
    if chosen.empty:
        return empty_figure("Pick at least one layer with probe results.")
    x = usable_x(frame, x)
    pre, chat = _split_chat(chosen)
    colours = layer_colours(list(layers), int(frame["layer"].max()) + 1)
    fig = go.Figure()
    positions = axis_positions(pre[x].to_numpy(dtype=float), scale)
    chat_x = float(positions.max() + 0.06 * (np.ptp(positions) or 1.0)) if len(pre) else 0.0
    has_control = show_control and f"control_{metric}" in chosen
    for layer in layers:
        rows = pre[pre["layer"] == layer]
        if rows.empty:
            continue
        xs = axis_positions(rows[x].to_numpy(dtype=float), scale)
        colour, group = colours[layer], f"layer {layer}"
        fig.add_trace(_band(xs, rows[f"{metric}_lo"].to_numpy(), rows[f"{metric}_hi"].to_numpy(),
                            colour, f"{group} 95% interval", group))
        fig.add_trace(go.Scatter(
            x=xs, y=rows[metric], mode="lines+markers", name=group, legendgroup=group,
            line={"color": colour}, marker={"size": 5},
            customdata=np.stack([rows["checkpoint"], rows[x]], axis=-1),
            hovertemplate=f"{group}<br>%{{customdata[0]}} ({x} %{{customdata[1]:,}})<br>"
            f"{metric} %{{y:.3f}}<extra></extra>"))
        first = rows.iloc[0]
        level, label = float(first[metric]), _init_label(float(first["step"]))
        fig.add_trace(go.Scatter(
            x=[float(xs.min()), chat_x if len(chat) else float(xs.max())], y=[level, level],
            mode="lines", name=f"init, {group}", legendgroup=group, showlegend=False,
            line={"color": colour, "dash": "dash", "width": 1},
            hovertemplate=f"{group} at {label}: {level:.3f}<extra></extra>"))
        if has_control:
            fig.add_trace(go.Scatter(
                x=xs, y=rows[f"control_{metric}"], mode="lines", legendgroup=group,
                name=f"control, {group}", showlegend=False,
                line={"color": colour, "dash": "dot", "width": 1},
                hovertemplate=f"shuffled-label control, {group}: %{{y:.3f}}<extra></extra>"))
        own_chat = chat[chat["layer"] == layer]
        if len(own_chat):
            value = float(own_chat[metric].iloc[0])
            fig.add_trace(go.Scatter(
                x=[chat_x], y=[value], mode="markers", legendgroup=group, showlegend=False,
                name=f"chat, {group}",
                marker={"symbol": "star", "size": 13, "color": colour,
                        "line": {"color": CHAT_COLOUR, "width": 1.5}},
                error_y={"type": "data", "symmetric": False,
                         "array": [float(own_chat[f"{metric}_hi"].iloc[0]) - value],
                         "arrayminus": [value - float(own_chat[f"{metric}_lo"].iloc[0])]},
                hovertemplate=f"chat model, {group}: %{{y:.3f}}<extra></extra>"))
    if len(chat):
        fig.add_vline(x=chat_x, line={"color": CHAT_COLOUR, "dash": "dot", "width": 1},
                      annotation_text="chat", annotation_position="top")
    fig.add_hline(y=0.5, line={"color": BASELINE_COLOUR, "dash": "dash", "width": 1},
                  annotation_text="chance", annotation_position="bottom right")
    fig.update_xaxes(axis_layout(pre[x].to_numpy(dtype=float), scale, "training " + x))
    fig.update_yaxes(title={"text": PROBE_METRICS.get(metric, metric)})
    return styled(fig, title or f"{PROBE_METRICS.get(metric, metric)} by checkpoint "
                   "(bands: 95% interval; dashed: step-0 level"
                   + ("; dotted: shuffled-label control)" if has_control else ")"))


def best_layer_figure(best: pd.DataFrame, *, n_layers: int, x: XAxis = "step",
                      scale: Scale = "log") -> go.Figure:
    """Return the best layer per checkpoint and its balanced accuracy against step 0.

    Top: the best layer's balanced accuracy with its 95% interval, and dashed the first
    checkpoint's (step 0 = initialisation) balanced accuracy at that same layer, so the gap
    is what pre-training added. Bottom: which layer is best.

    Args:
        best: ``dashboard.best_layers`` rows.
        n_layers: Layers of the model (the bottom axis's range).
        x: ``step`` or ``tokens``.
        scale: ``log`` or ``linear``.

    """
    if best.empty:
        return empty_figure("No probe results yet.")
    x = usable_x(best, x)
    pre, chat = _split_chat(best)
    xs = axis_positions(pre[x].to_numpy(dtype=float), scale)
    chat_x = float(xs.max() + 0.06 * (np.ptp(xs) or 1.0)) if len(xs) else 0.0
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        row_heights=[0.6, 0.4])
    fig.add_trace(_band(xs, pre["bacc_lo"].to_numpy(float), pre["bacc_hi"].to_numpy(float),
                        qualitative.D3[0], "95% interval", "best"), row=1, col=1)
    fig.add_trace(go.Scatter(
        x=xs, y=pre["balanced_accuracy"], mode="lines+markers", name="best layer",
        legendgroup="best", line={"color": qualitative.D3[0]},
        customdata=np.stack([pre["checkpoint"], pre["best_layer"]], axis=-1),
        hovertemplate="%{customdata[0]}<br>best layer %{customdata[1]}<br>balanced accuracy "
        "%{y:.3f}<extra></extra>"), row=1, col=1)
    label = _init_label(float(pre["step"].iloc[0])) if len(pre) else "initialisation"
    fig.add_trace(go.Scatter(
        x=xs, y=pre["init_bacc"], mode="lines", name=f"{label}, same layer",
        line={"color": BASELINE_COLOUR, "dash": "dash", "shape": "hv"},
        customdata=pre["best_layer"],
        hovertemplate=f"{label} at layer %{{customdata}}: %{{y:.3f}}<extra></extra>"),
        row=1, col=1)
    fig.add_trace(go.Scatter(
        x=xs, y=pre["best_layer"], mode="lines+markers", name="which layer",
        line={"color": "#999999", "width": 1},
        marker={"size": 9, "color": pre["balanced_accuracy"], "colorscale": "Viridis",
                "colorbar": {"title": {"text": "balanced accuracy"}, "len": 0.4, "y": 0.2},
                "showscale": True},
        customdata=np.stack([pre["checkpoint"], pre["balanced_accuracy"]], axis=-1),
        hovertemplate="%{customdata[0]}<br>best layer %{y}<br>balanced accuracy "
        "%{customdata[1]:.3f}<extra></extra>"), row=2, col=1)
    if len(chat):
        fig.add_trace(go.Scatter(x=[chat_x], y=chat["balanced_accuracy"], mode="markers",
                                 name="chat model", legendgroup="chat",
                                 marker={"symbol": "star", "size": 14, "color": CHAT_COLOUR},
                                 hovertemplate="chat model: %{y:.3f}<extra></extra>"),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=[chat_x], y=chat["best_layer"], mode="markers+text",
                                 name="chat model, layer", legendgroup="chat",
                                 showlegend=False, text=["chat"], textposition="top center",
                                 marker={"symbol": "star", "size": 14, "color": CHAT_COLOUR}),
                      row=2, col=1)
    fig.update_xaxes(axis_layout(pre[x].to_numpy(dtype=float), scale, "training " + x),
                     row=2, col=1)
    fig.update_yaxes(title={"text": "balanced accuracy"}, row=1, col=1)
    fig.update_yaxes(title={"text": "best layer"}, range=[-0.5, n_layers - 0.5], row=2, col=1,
                     **_layer_ticks(n_layers))
    return styled(fig, "Best probe layer per checkpoint (dashed: step-0 level at that layer)",
                   height=560)


def suite_comparison(frames: Sequence[pd.DataFrame], names: Sequence[str], *,
                     metric: str = "balanced_accuracy", x: XAxis = "step", scale: Scale = "log"
                     ) -> go.Figure:
    """Return heatmaps of two (or more) suites side by side on a shared colour scale."""
    if any(usable_x(f, x) == "step" for f in frames):
        x = "step"
    fig = make_subplots(rows=1, cols=len(frames), subplot_titles=list(names),
                        horizontal_spacing=0.06)
    values = []
    for i, frame in enumerate(frames, start=1):
        pre, _ = _split_chat(frame)
        if pre.empty:
            continue
        positions = pre.drop_duplicates("checkpoint")[x].to_numpy(dtype=float)
        values.append(pre[metric].to_numpy(dtype=float))
        fig.add_trace(_heatmap(pre, metric, axis_positions(positions, scale)), row=1, col=i)
        fig.update_xaxes(axis_layout(positions, scale, "training " + x), row=1, col=i)
    fig.update_yaxes(title={"text": "layer"}, row=1, col=1)
    fig.update_yaxes(**_layer_ticks(max((int(f["layer"].max()) + 1 for f in frames
                                         if len(f)), default=1)))
    merged = np.concatenate(values) if values else np.zeros(0)
    fig.update_layout(coloraxis=_colour_axis(metric, merged))
    return styled(fig, f"{PROBE_METRICS.get(metric, metric)}: suites side by side")


def cosine_heatmap(matrix: pd.DataFrame, steps: Sequence[int], *, layer: int) -> go.Figure:
    """Return the checkpoint × checkpoint cosine matrix of probe directions at a layer."""
    if matrix.empty:
        return empty_figure("No probe directions stored for this layer.")
    labels = [f"{name} · {int(step):,}" for name, step in zip(matrix.index, steps, strict=True)]
    fig = go.Figure(go.Heatmap(
        z=matrix.to_numpy(), x=labels, y=labels, zmin=-1, zmax=1, zmid=0, colorscale="RdBu",
        colorbar={"title": {"text": "cosine"}},
        hovertemplate="%{y}<br>vs %{x}<br>cosine %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return styled(fig, f"Cosine between probe directions across checkpoints (layer {layer})",
                   height=520)


def vector_cosine_figure(frame: pd.DataFrame, *, layer: int, scale: Scale = "log"
                         ) -> go.Figure:
    """Return cosines of each checkpoint's probe direction with steering vectors."""
    if frame.empty:
        return empty_figure("No steering vectors stored for this layer yet.")
    pre, _ = _split_chat(frame)
    xs = axis_positions(pre["step"].to_numpy(dtype=float), scale)
    fig = go.Figure()
    series = (("own_vector", "its own mean-difference vector", qualitative.D3[0]),
              ("chat_vector", "the chat model's vector", CHAT_COLOUR),
              ("final_probe", "the last checkpoint's probe", qualitative.D3[2]))
    for column, name, colour in series:
        if pre[column].notna().any():
            fig.add_trace(go.Scatter(x=xs, y=pre[column], mode="lines+markers", name=name,
                                     line={"color": colour}, customdata=pre["checkpoint"],
                                     hovertemplate="%{customdata}: %{y:.3f}<extra>"
                                     + name + "</extra>"))
    fig.update_xaxes(axis_layout(pre["step"].to_numpy(dtype=float), scale, "training step"))
    fig.update_yaxes(title={"text": "cosine with the probe direction"}, range=[-1.05, 1.05])
    return styled(fig, f"Probe direction vs steering vectors (layer {layer})")


def loss_curve(ckpts: pd.DataFrame, *, x: XAxis = "step", scale: Scale = "log") -> go.Figure:
    """Return training and held-out loss against checkpoint."""
    pre, _ = _split_chat(ckpts)
    if pre.empty or not pre[["train_loss", "heldout_loss"]].notna().any().any():
        return empty_figure("No losses recorded for this suite's checkpoints.")
    x = usable_x(ckpts, x)
    xs = axis_positions(pre[x].to_numpy(dtype=float), scale)
    fig = go.Figure()
    for column, name, colour in (("train_loss", "training loss", qualitative.D3[0]),
                                 ("heldout_loss", "held-out loss", qualitative.D3[1])):
        if pre[column].notna().any():
            fig.add_trace(go.Scatter(x=xs, y=pre[column], mode="lines+markers", name=name,
                                     line={"color": colour}, customdata=pre["checkpoint"],
                                     hovertemplate="%{customdata}: %{y:.3f}<extra>"
                                     + name + "</extra>"))
    fig.update_xaxes(axis_layout(pre[x].to_numpy(dtype=float), scale, "training " + x))
    fig.update_yaxes(title={"text": "loss (nats / token)"})
    return styled(fig, "Loss curve", height=360)


# --------------------------------------------------------------------------- information


NULL_LABEL = "permutation-null mean"
"""Label of the zero line of null-corrected information: the chance level."""


def _quantity_label(name: str, unit: str, *, corrected: bool = True) -> str:
    what = f"{name} − permutation-null mean" if corrected else name
    return f"{what} [bits]" if unit == "bits" else f"{what} [score, not bits]"


def _unit(plane: pd.DataFrame, column: str) -> str:
    values = plane[column].dropna()
    return str(values.iloc[0]) if len(values) else ""


def _error(values: pd.Series, lo: pd.Series, hi: pd.Series, colour: str) -> dict[str, Any]:
    """Return an asymmetric plotly error-bar spec from an interval (hidden if unknown)."""
    upper = (hi - values).to_numpy(dtype=float)
    lower = (values - lo).to_numpy(dtype=float)
    known = bool(np.isfinite(upper).any())
    return {"type": "data", "symmetric": False, "visible": known,
            "array": np.nan_to_num(upper), "arrayminus": np.nan_to_num(lower),
            "color": colour, "thickness": 1, "width": 2}


def _distinguishable(turns: pd.DataFrame) -> pd.DataFrame:
    """Return the turns that count: tested, ``distinguishable`` and with a step."""
    if turns.empty or "distinguishable" not in turns:
        return turns.iloc[:0]
    marked = turns["distinguishable"].fillna(False).astype(bool) & turns["turn_step"].notna()
    return turns[marked]


def _estimator_label(estimator: str) -> str:
    return ESTIMATOR_LABELS.get(estimator, estimator)


def info_plane_figure(plane: pd.DataFrame, turns: pd.DataFrame, *, estimator: str,
                      layers: Sequence[int] | None = None,
                      ity_source: ItySource = "estimator") -> go.Figure:
    """Return the information plane: null-corrected I(X;T) vs I(T;Y), a trajectory per layer.

    Each point is estimate − permutation-null mean (0 = chance level, dashed lines) with its
    95% interval as error bars; points are coloured by training step (log), a
    distinguishable turn is an ``×``, the chat model a star. Undefined points are skipped
    (the page lists them with their reasons).

    Args:
        plane: ``dashboard.info_plane`` rows.
        turns: ``dashboard.turn_points`` rows of the same estimator.
        estimator: Estimator name (for the title).
        layers: Layers to draw (all by default).
        ity_source: ``usable`` when I(T;Y) is the probe's usable information (no null).

    """
    if plane.empty:
        return empty_figure("No information estimates for this dataset and estimator yet.")
    chosen = list(layers) if layers is not None else sorted(plane["layer"].unique())
    defined = plane[(plane["status"] == "ok") & plane["layer"].isin(chosen)]
    if defined.empty:
        return empty_figure("Every estimate of these layers is undefined (see below).")
    pre, chat = _split_chat(defined)
    colours = layer_colours(chosen, int(plane["layer"].max()) + 1)
    log_step = np.log10(1.0 + pre["step"].to_numpy(dtype=float))
    fig = go.Figure()
    zero = {"line": {"color": BASELINE_COLOUR, "dash": "dash", "width": 1},
            "annotation_text": NULL_LABEL}
    fig.add_vline(x=0, annotation_position="top left", **zero)
    if ity_source == "estimator":
        fig.add_hline(y=0, annotation_position="bottom right", **zero)
    marked = _distinguishable(turns)
    for layer in chosen:
        rows = pre[pre["layer"] == layer]
        if rows.empty:
            continue
        colour, group = colours[layer], f"layer {layer}"
        fig.add_trace(go.Scatter(
            x=rows["ixt"], y=rows["ity"], mode="lines+markers", name=group,
            legendgroup=group, line={"color": colour, "width": 1.5},
            marker={"size": 8, "color": log_step[(pre["layer"] == layer).to_numpy()],
                    "coloraxis": "coloraxis", "line": {"color": colour, "width": 1}},
            error_x=_error(rows["ixt"], rows["ixt_lo"], rows["ixt_hi"], colour),
            error_y=_error(rows["ity"], rows["ity_lo"], rows["ity_hi"], colour),
            customdata=np.stack([rows["checkpoint"], rows["step"], rows["ixt_raw"],
                                 rows["ity_raw"]], axis=-1),
            hovertemplate=f"{group}<br>%{{customdata[0]}} (step %{{customdata[1]:,}})"
            "<br>I(X;T) %{x:.3f} above null (raw %{customdata[2]:.3f})"
            "<br>I(T;Y) %{y:.3f}" + (" above null" if ity_source == "estimator" else "")
            + " (raw %{customdata[3]:.3f})<extra></extra>"))
        turn = marked[marked["layer"] == layer]
        if len(turn):
            step = int(turn["turn_step"].iloc[0])
            at = rows[rows["step"] == step]
            if len(at):
                fig.add_trace(go.Scatter(
                    x=at["ixt"], y=at["ity"], mode="markers", legendgroup=group,
                    name=f"turn, {group}", showlegend=False,
                    marker={"symbol": "x", "size": 15, "color": colour,
                            "line": {"width": 2, "color": "black"}},
                    hovertemplate=f"distinguishable turn, {group}: step {step:,} "
                    f"(p = {float(turn['p_value'].iloc[0]):.3g})<extra></extra>"))
        own_chat = chat[chat["layer"] == layer]
        if len(own_chat):
            fig.add_trace(go.Scatter(
                x=own_chat["ixt"], y=own_chat["ity"], mode="markers", showlegend=False,
                name=f"chat, {group}", legendgroup=group,
                marker={"symbol": "star", "size": 14, "color": colour,
                        "line": {"color": CHAT_COLOUR, "width": 1.5}},
                error_x=_error(own_chat["ixt"], own_chat["ixt_lo"], own_chat["ixt_hi"], colour),
                error_y=_error(own_chat["ity"], own_chat["ity_lo"], own_chat["ity_hi"], colour),
                hovertemplate=f"chat model, {group}<extra></extra>"))
    top = float(np.log10(1.0 + pre["step"].max())) if len(pre) else 1.0
    fig.update_layout(coloraxis={
        "colorscale": "Plasma", "cmin": 0.0, "cmax": max(top, 1e-6),
        "colorbar": {"title": {"text": "step"}, **log_colorbar(pre["step"])}})
    fig.update_xaxes(title={"text": _quantity_label("I(X;T)", _unit(plane, "x_unit"))})
    fig.update_yaxes(title={"text": _quantity_label("I(T;Y)", _unit(plane, "y_unit"),
                                                    corrected=ity_source == "estimator")})
    return styled(fig, f"Information plane, {_estimator_label(estimator)}: null-corrected, "
                   "bars 95% intervals, × a distinguishable turn", height=540)


def log_colorbar(steps: pd.Series) -> dict[str, Any]:
    """Return colour-bar ticks at real steps for colours on a ``log10(1 + step)`` scale."""
    layout = axis_layout(steps.to_numpy(dtype=float), "log", "")
    return {k: layout[k] for k in ("tickvals", "ticktext") if k in layout}


def info_vs_step_figure(plane: pd.DataFrame, turns: pd.DataFrame, *,
                        layers: Sequence[int] | None = None, x: XAxis = "step",
                        scale: Scale = "log", ity_source: ItySource = "estimator"
                        ) -> go.Figure:
    """Return null-corrected I(X;T) (top) and I(T;Y) (bottom) against training, per layer.

    Each line is estimate − permutation-null mean with its 95% interval as a shaded band;
    the dashed zero line is the null mean (chance level); dotted vertical lines mark
    distinguishable turns. Undefined estimates are skipped.
    """
    if plane.empty:
        return empty_figure("No information estimates for this dataset and estimator yet.")
    x = usable_x(plane, x)
    chosen = list(layers) if layers is not None else sorted(plane["layer"].unique())
    pre, _ = _split_chat(plane[plane["layer"].isin(chosen)])
    colours = layer_colours(chosen, int(plane["layer"].max()) + 1)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    in_legend: set[int] = set()
    for row, prefix, name, unit in ((1, "ixt", "I(X;T)", "x_unit"),
                                    (2, "ity", "I(T;Y)", "y_unit")):
        corrected = prefix == "ixt" or ity_source == "estimator"
        for layer in chosen:
            rows = pre[(pre["layer"] == layer) & pre[prefix].notna()]
            if rows.empty:
                continue
            colour, group = colours[layer], f"layer {layer}"
            xs = axis_positions(rows[x].to_numpy(dtype=float), scale)
            known = rows[[f"{prefix}_lo", f"{prefix}_hi"]].notna().all(axis=1).to_numpy()
            if known.any():
                fig.add_trace(_band(xs[known], rows[f"{prefix}_lo"].to_numpy(float)[known],
                                    rows[f"{prefix}_hi"].to_numpy(float)[known], colour,
                                    f"{group} 95% interval", group), row=row, col=1)
            fig.add_trace(go.Scatter(
                x=xs, y=rows[prefix], mode="lines+markers", name=group, legendgroup=group,
                showlegend=layer not in in_legend, line={"color": colour}, marker={"size": 4},
                customdata=np.stack([rows["checkpoint"], rows[f"{prefix}_raw"]], axis=-1),
                hovertemplate=f"{group}, %{{customdata[0]}}: {name} %{{y:.3f}}"
                + (" above null" if corrected else "") + " (raw %{customdata[1]:.3f})"
                "<extra></extra>"), row=row, col=1)
            in_legend.add(layer)
        if corrected:  # after the traces: plotly skips lines on subplots without data
            fig.add_hline(y=0, row=row, col=1, annotation_text=NULL_LABEL,
                          annotation_position="bottom right",
                          line={"color": BASELINE_COLOUR, "dash": "dash", "width": 1})
        fig.update_yaxes(title={"text": _quantity_label(name, _unit(plane, unit),
                                                        corrected=corrected)},
                         row=row, col=1)
    steps = dict(zip(pre["step"], pre[x], strict=False))
    marked = _distinguishable(turns)
    for turn in marked[marked["layer"].isin(chosen)].to_dict(orient="records"):
        where = steps.get(int(turn["turn_step"]))
        if where is not None:
            fig.add_vline(x=float(axis_positions([where], scale)[0]), row=1, col=1,
                          line={"color": colours[int(turn["layer"])], "dash": "dot",
                                "width": 1})
    fig.update_xaxes(axis_layout(pre[x].to_numpy(dtype=float), scale, "training " + x),
                     row=2, col=1)
    return styled(fig, "Null-corrected information against training (bands: 95% intervals; "
                   "dotted: distinguishable turns)", height=620)
