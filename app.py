"""trustdyn dashboard: ``streamlit run app.py [-- --db study.duckdb]``.

A multipage Streamlit app over one study file (DuckDB) written by ``python -m precompute``.
Pick the file with ``--db`` after ``--``, or ``TRUSTDYN_STUDY``; the default is
``trustdyn.paths.default_study_path()``. The pages live in ``pages/`` and only call into
``trustdyn`` (no SQL, no model code here). A page is linked by its path
(``/probes?dataset=toxigen``) or, from the root, by ``?page=probes``.
"""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="trustdyn", page_icon=":material/timeline:", layout="wide")

PAGES = {
    "overview": st.Page("pages/overview.py", title="Overview", icon=":material/home:",
                        default=True),
    "probes": st.Page("pages/probes.py", title="Probes", icon=":material/grid_on:"),
    "information": st.Page("pages/information.py", title="Information plane",
                           icon=":material/scatter_plot:"),
    "steering_results": st.Page("pages/steering_results.py", title="Steering results",
                                icon=":material/table:"),
    "steering_lab": st.Page("pages/steering_lab.py", title="Steering lab",
                            icon=":material/chat:"),
    "story": st.Page("pages/story.py", title="The story", icon=":material/school:"),
}
"""The pages by the name a link gives them (their URL path; the overview's is empty)."""


def follow_page_link() -> None:
    """Open the page named by ``?page=``, keeping the link's other parameters.

    An unknown name is ignored with a note, and the current page is shown.
    """
    wanted = st.query_params.get("page")
    if wanted is None:
        return
    rest = {name: st.query_params.get_all(name) for name in st.query_params if name != "page"}
    if wanted in PAGES:
        st.switch_page(PAGES[wanted], query_params=rest)
    del st.query_params["page"]
    st.warning(f"The link asks for page {wanted!r}, which does not exist; it was ignored "
               f"(pages: {', '.join(PAGES)}).", icon=":material/link_off:")


navigation = st.navigation(list(PAGES.values()))
follow_page_link()
navigation.run()
