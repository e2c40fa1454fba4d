"""Streamlit helpers shared by the pages: the study in use, cached reads, deep links, export.

Reads go through :func:`read`, which calls a reader (a function or ``Store`` method taking
the store first) under ``st.cache_data`` keyed on the study file's stamp (mtime and size of
the file and its WAL): a study the pipeline is still writing refreshes on the next
interaction, while repeated views of a finished study never touch DuckDB twice. Selectors
that choose a view (suite, dataset, layer, tab, ...) are drawn with :func:`linked` and
:func:`view_tabs`, which take their value from the URL's query parameters and write it
back, so the address bar always holds a link to the view on screen.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import duckdb
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from trustdyn.dashboard import study, tables
from trustdyn.dashboard.figures import ExportFormat, Scale, XAxis, export_config
from trustdyn.store import Store, StoreError

READ_TIMEOUT_S = 5.0
"""How long a page waits for the pipeline's write lock before saying so (seconds)."""

X_LABELS = {"step": "training step", "tokens": "tokens seen"}

LINKS = "_links"
"""Session key of the value each URL parameter last showed in this session (by parameter)."""

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def study_path() -> Path:
    """Return the study file this server shows (``--db``, ``$TRUSTDYN_STUDY`` or default)."""
    return study.resolve_study_path()


def store() -> Store:
    """Return a read handle on the study (short lock timeout: pages must stay responsive)."""
    return Store(study_path(), timeout_s=READ_TIMEOUT_S)


@st.cache_data(show_spinner=False, max_entries=64)
def _cached(_reader: Callable[..., Any], key: str, path: str, stamp: tuple[int, int, int],
            args: tuple[Any, ...]) -> Any:
    """Run ``_reader(Store(path), *args)``; ``key`` names the reader, ``stamp`` the file's
    state (Streamlit does not hash arguments whose name starts with an underscore)."""
    return _reader(Store(path, timeout_s=READ_TIMEOUT_S), *args)


def read(reader: Callable[Concatenate[Store, P], R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Return the cached ``reader(store, *args)``: a table function or a ``Store`` method.

    Positional arguments only (they key the cache); ``kwargs`` exists for the type checker
    and must be empty.
    """
    if kwargs:
        raise TypeError(f"read() passes positional arguments only, got {sorted(kwargs)}")
    path = study_path()
    key = f"{reader.__module__}.{reader.__qualname__}"
    result: R = _cached(reader, key, str(path), study.file_stamp(path), tuple(args))
    return result


@contextlib.contextmanager
def study_errors() -> Iterator[None]:
    """Turn study-file problems inside a page into a warning instead of a traceback.

    Covers a file that the pipeline holds locked for too long, a file being replaced, or
    a truncated/foreign file; the user can simply interact again to retry.
    """
    try:
        yield
    except (StoreError, duckdb.Error) as exc:
        st.warning(f"The study file could not be read just now: {exc}\n\n"
                   "If the pipeline is writing to it, wait a moment and interact again.",
                   icon=":material/sync_problem:")


def fragment(func: Callable[..., None] | None = None, *, run_every: float | None = None
             ) -> Any:
    """Return ``st.fragment(func)`` whose reruns also turn study-file errors into warnings.

    A fragment reruns on its own (outside :func:`run_page`), so it needs its own guard.
    Usable bare (``@fragment``) or with arguments (``@fragment(run_every=2)``).
    """
    def decorate(body: Callable[..., None]) -> Any:
        @functools.wraps(body)
        def guarded(*args: Any, **kwargs: Any) -> None:
            with study_errors():
                body(*args, **kwargs)

        return st.fragment(guarded, run_every=run_every)

    return decorate(func) if func is not None else decorate


def run_page(body: Callable[[], None]) -> None:
    """Run a page's body with the sidebar and study checks, turning file errors into warnings."""
    with study_errors():
        body()


# --------------------------------------------------------------------------- sidebar


def study_status() -> study.StudyStatus:
    """Return the study file's state (call once per run: a locked file costs a timeout)."""
    return study.study_status(store())


def sidebar(status: study.StudyStatus) -> str | None:
    """Draw the shared sidebar (study file, suite selector, export format).

    Returns:
        The selected suite, or ``None`` when the file holds no readable study.
    """
    st.sidebar.caption(f"Study file: `{status.path}`")
    if status.state != "ready":
        return None
    suites = read(tables.suites)
    suite = linked(st.sidebar.selectbox, "Suite", list(suites["suite"]), param="suite",
                   key="suite", help="The study file can hold several checkpoint suites.")
    row = suites[suites["suite"] == suite].iloc[0]
    if bool(row["synthetic"]):
        st.sidebar.warning("SYNTHETIC study: made-up numbers for testing the dashboard, "
                           "not measured from any model.", icon=":material/science:")
    _restore("export_format", ["png", "svg"])
    st.sidebar.radio("Figure download format", ["png", "svg"], key="export_format",
                     on_change=_remember, args=("export_format",), horizontal=True,
                     help="Format of the camera button above each figure.")
    _remember("export_format")
    return str(suite)


def _restore(key: str, options: list[str]) -> None:
    """Give a sidebar widget the value chosen on another page.

    Streamlit drops a widget's state when the page that drew it is left, so the shared
    sidebar keeps its choices under a second key and puts them back on every page.
    """
    saved = st.session_state.get(f"_{key}")
    if saved in options:
        st.session_state[key] = saved
    elif key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]


def _remember(key: str) -> None:
    """Keep a sidebar widget's value under a second key (also its ``on_change``, which
    runs before the script, so :func:`_restore` sees a new choice)."""
    st.session_state[f"_{key}"] = st.session_state.get(key)


def require_study() -> str:
    """Return the selected suite, or explain how to build a study and stop the page."""
    status = study_status()
    suite = sidebar(status)
    if suite is None:
        show_missing_study(status, with_button=False)
        st.stop()
    return suite


def show_missing_study(status: study.StudyStatus, *, with_button: bool) -> None:
    """Explain that there is no readable study yet and how to build one."""
    path = status.path
    if status.state == "busy":
        st.warning(status.message, icon=":material/sync_problem:")
        return
    if status.state == "invalid":
        st.error(f"{status.message}", icon=":material/error:")
    else:
        st.info(status.message, icon=":material/info:")
    st.markdown("Build the default study (pre-trains the built-in model, then runs probes, "
                "information estimates and steering; resumable) with:")
    st.code(study.shell_command(path), language="bash")
    st.markdown(f"or point the dashboard at another file with `{study.STUDY_ENV}=path` "
                "or `streamlit run app.py -- --db path`.")
    if not with_button:
        st.page_link("pages/overview.py", label="Start the build from the Overview page",
                     icon=":material/play_arrow:")


# --------------------------------------------------------------------------- deep links


def linked(draw: Callable[..., Any], label: str, options: Sequence[T], *, param: str,
           key: str, default: T | None = None, **kwargs: Any) -> T:
    """Draw a selector that the URL's ``?param=`` sets and that writes its value back to it.

    The value is, in order: a URL value this session has not shown yet (a link just opened),
    the widget's own state (the user's choice), the value ``param`` last had on any page
    (suite and dataset follow the user from page to page), ``default``, the first option.
    A URL value that names no option is ignored with a note. Options are matched by their
    text, so ``?layer=2`` selects the integer 2.

    Args:
        draw: The Streamlit selector (``st.selectbox``, ``st.sidebar.selectbox``,
            ``st.select_slider``, ``column.selectbox``, ...); called with ``key`` and no
            default of its own, so the session state set here rules.
        label: The selector's label.
        options: Its options (not empty).
        param: The URL query parameter.
        key: The widget key.
        default: The value when nothing else chooses one (the first option if ``None``).
        **kwargs: More arguments for ``draw`` (``format_func``, ``help``, ...).

    """
    shown: dict[str, str] = st.session_state.setdefault(LINKS, {})
    by_text = {str(option): option for option in options}
    chosen = st.session_state.get(key)
    wanted = st.query_params.get(param)
    if wanted is not None and wanted != shown.get(param):
        if wanted in by_text:
            chosen = by_text[wanted]
        else:
            _ignored(param, wanted)
    if chosen not in options:
        fallback = default if default in options else options[0]
        chosen = by_text.get(shown.get(param, ""), fallback)
    # Always set: a widget drawn on a new page starts from its default, not from the state
    # the same key had on the page before.
    st.session_state[key] = chosen
    value: T = draw(label, options, key=key, **kwargs)
    shown[param] = str(value)
    if st.query_params.get(param) != shown[param]:  # each write sends the browser a message
        st.query_params[param] = shown[param]
    return value


def view_tabs(labels: Sequence[str]) -> Sequence[Any]:
    """Return ``st.tabs(labels)`` whose open tab the URL's ``?view=`` sets and follows.

    Streamlit binds the open tab to the parameter itself (by label, leaving the first tab
    out of the URL); a value that names no tab is ignored with a note.
    """
    wanted = st.query_params.get("view")
    if wanted is not None and wanted not in labels:
        _ignored("view", wanted)
    return st.tabs(labels, key="view", bind="query-params")


def _ignored(param: str, value: str) -> None:
    """Say that the link's ``param=value`` names nothing here (the view shows another)."""
    st.warning(f"The link asks for {param} {value!r}, which is not on this page for this "
               "study; it was ignored.", icon=":material/link_off:")


# --------------------------------------------------------------------------- output


def export_format() -> ExportFormat:
    """Return the image format chosen in the sidebar."""
    value = st.session_state.get("export_format", "png")
    return "svg" if value == "svg" else "png"


def figure(fig: go.Figure, data: pd.DataFrame, name: str, *, key: str) -> None:
    """Draw a figure with PNG/SVG export (camera button) and a CSV download of its data."""
    st.plotly_chart(fig, config=export_config(name, export_format()), key=f"{key}_chart")
    st.download_button(
        "Download data (CSV)", data=lambda: data.to_csv(index=False).encode(),
        file_name=f"{name}.csv", mime="text/csv", key=f"{key}_csv", on_click="ignore",
        icon=":material/download:")


def dataset_label(cards: pd.DataFrame) -> Callable[[str], str]:
    """Return a formatter that shows a dataset as ``dimension · name``."""
    dims = dict(zip(cards["dataset"], cards["dimension"], strict=True))
    return lambda name: f"{dims.get(name, '?')} · {name}"


def axis_controls(key: str, *, with_tokens: bool = True) -> tuple[XAxis, Scale]:
    """Draw x-axis and scale selectors; return ``(x, scale)``."""
    left, right = st.columns(2)
    x = left.segmented_control("x axis", ["step", "tokens"] if with_tokens else ["step"],
                               default="step", key=f"{key}_x",
                               format_func=lambda v: X_LABELS[v])
    scale = right.segmented_control("Scale", ["log", "linear"], default="log",
                                    key=f"{key}_scale")
    return ("tokens" if x == "tokens" else "step"), ("linear" if scale == "linear" else "log")
