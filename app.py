"""trustdyn dashboard: ``streamlit run app.py [-- --db study.duckdb]``.

A multipage Streamlit app over one study file (DuckDB) written by ``python -m precompute``.
Pick the file with ``--db`` after ``--``, or ``TRUSTDYN_STUDY``; the default is
``trustdyn.paths.default_study_path()``. The pages live in ``pages/`` and only call into
``trustdyn`` (no SQL, no model code here).
"""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="trustdyn", page_icon=":material/timeline:", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("pages/probes.py", title="Probes", icon=":material/grid_on:"),
    st.Page("pages/information.py", title="Information plane", icon=":material/scatter_plot:"),
    st.Page("pages/steering_results.py", title="Steering results", icon=":material/table:"),
    st.Page("pages/steering_lab.py", title="Steering lab", icon=":material/chat:"),
    st.Page("pages/story.py", title="The story", icon=":material/school:"),
]

st.navigation(PAGES).run()
