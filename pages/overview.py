"""Overview: the loaded study, its checkpoints, chat task and datasets, what is done and missing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import streamlit as st

from pages import _common as common
from trustdyn.dashboard import figures, study, tables
from trustdyn.dashboard.chat_task import chat_task_result
from trustdyn.paths import generated_dir
from trustdyn.store import Store


@st.cache_resource
def _builds() -> dict[str, subprocess.Popen[bytes]]:
    """Background builds started from this server, by study path (one per file)."""
    return {}


def _log_path(path: Path) -> Path:
    return generated_dir() / "logs" / f"build-{path.stem}.log"


def build_panel(path: Path) -> None:
    """Offer to start (or resume) the default build and follow its progress."""
    builds = _builds()
    process = builds.get(str(path))
    idle = process is None or process.poll() is not None
    if idle and st.button("Start the default build", type="primary",
                          icon=":material/play_arrow:",
                          help="Runs `" + study.shell_command(path) + "` in the "
                          "background; it resumes where an earlier run stopped."):
        builds[str(path)] = study.start_build(path, _log_path(path))
        st.rerun()
    if process is not None:
        build_progress(path)


@common.fragment(run_every=2.0)
def build_progress(path: Path) -> None:
    """Show the running build's progress from the store's finished-unit count."""
    process = _builds().get(str(path))
    if process is None:
        return
    done, expected = study.build_progress(common.store())
    code = process.poll()
    if code is None:
        if expected:
            st.progress(min(done / expected, 1.0), text=f"{done} of {expected} units finished")
        else:
            st.progress(0.0, text="Pre-training the built-in model (units start after it)…")
    elif code == 0:
        st.success(f"The build finished ({done} units).", icon=":material/check_circle:")
        if st.button("Show the study"):
            st.rerun(scope="app")
    else:
        st.error(f"The build stopped with exit code {code}; its log is below. Rerunning "
                 "resumes from the last finished unit.", icon=":material/error:")
    log = study.tail(_log_path(path))
    if log:
        st.code(log, language="text")


def suite_header(suite: str) -> None:
    """Describe the selected suite and its study settings."""
    suites = common.read(tables.suites)
    row = suites[suites["suite"] == suite].iloc[0]
    ckpts = common.read(Store.checkpoints, suite)
    pre = ckpts[~ckpts["is_chat"].astype(bool)]
    st.subheader(f"Suite `{suite}`")
    st.write(row["description"])
    cols = st.columns(4)
    cols[0].metric("Pre-training checkpoints", len(pre))
    cols[1].metric("Chat model", str(row["chat_checkpoint"] or "none"))
    layers = ckpts["n_layers"].dropna()
    cols[2].metric("Layers", int(layers.max()) if len(layers) else "?")
    width = ckpts["hidden_size"].dropna()
    cols[3].metric("Hidden size", int(width.max()) if len(width) else "?")
    config = tables.suite_config(common.store(), suite)
    if config:
        with st.expander("Study settings stored with the suite"):
            st.json(config)


def chat_task_section(suite: str) -> None:
    """Show the chat model's held-out task accuracy against the majority baseline."""
    ckpts = common.read(Store.checkpoints, suite)
    if not ckpts["is_chat"].astype(bool).any():
        return
    st.subheader("The chat model's task")
    result = chat_task_result(ckpts)
    if result is None:
        st.caption("This suite's chat model stores no task accuracy (only the built-in "
                   "suites fine-tune their chat model on a task of their own).")
        return
    st.write(f"**{result.name}.** {result.description}")
    cols = st.columns(3)
    cols[0].metric("Held-out accuracy", f"{result.accuracy:.3f}",
                   help="Share of held-out items where the chat model finds its right "
                   "answer (\"Yes.\" or \"No.\") likelier than the wrong one"
                   + (f", over {result.n} items." if result.n else "."))
    cols[1].metric("95% interval", f"{result.low:.3f} – {result.high:.3f}",
                   help="Percentile bootstrap over the held-out items.")
    cols[2].metric("Majority baseline", f"{result.majority_baseline:.3f}",
                   help="Accuracy of always giving the items' most common answer.")
    show = st.success if result.beats_majority else st.warning
    show(result.verdict(), icon=":material/check_circle:" if result.beats_majority
         else ":material/warning:")


def progress_section(suite: str) -> None:
    """Show finished vs expected units per stage."""
    st.subheader("What is done")
    progress = common.read(tables.unit_progress, suite)
    for row in progress.to_dict(orient="records"):
        expected = row["expected"]
        if pd.isna(expected):
            st.write(f"**{row['stage']}**: {row['done']} units (size not known in advance)")
        else:
            share = row["done"] / expected if expected else 1.0
            st.progress(min(share, 1.0), text=f"{row['stage']}: {row['done']} of "
                        f"{int(expected)} units")
    if int(progress["missing"].fillna(0).sum()):
        st.info("Some units are missing: the pipeline is still running or was stopped. "
                "Rerun the build to resume; pages show what exists so far.",
                icon=":material/hourglass_top:")


def checkpoints_section(suite: str) -> None:
    """Show the checkpoints table and the loss curve."""
    st.subheader("Checkpoints")
    ckpts = common.read(Store.checkpoints, suite)
    duplicates = tables.duplicate_checkpoints(ckpts)
    table = ckpts[["checkpoint", "step", "tokens", "train_loss", "heldout_loss", "is_chat",
                   "source", "revision", "weight_hash"]].copy()
    table["duplicate_of"] = table["checkpoint"].map(duplicates)
    if duplicates:
        st.warning(f"{len(duplicates)} checkpoint(s) have the same weights as an earlier one "
                   "(see duplicate_of).", icon=":material/content_copy:")
    left, right = st.columns([3, 2])
    with left:
        st.dataframe(table, hide_index=True, height=360)
    with right:
        x, scale = common.axis_controls("loss")
        common.figure(figures.loss_curve(ckpts, x=x, scale=scale),
                      ckpts[["checkpoint", "step", "tokens", "train_loss", "heldout_loss"]],
                      f"{suite}-loss", key="loss")


def datasets_section() -> None:
    """Show the probe datasets with their cards."""
    st.subheader("Datasets")
    cards = common.read(tables.dataset_cards)
    st.dataframe(cards[["dimension", "dataset", "n_rows", "label1_meaning", "label0_meaning",
                        "desirable_label", "source", "license"]], hide_index=True)
    for card in cards.to_dict(orient="records"):
        with st.expander(f"{card['dimension']} · {card['dataset']}"):
            st.write(card["description"] or "No description in the card.")
            desirable = card["desirable_label"]
            side = ("no desirable side (both directions are evaluated)" if pd.isna(desirable)
                    else f"desirable label: {int(desirable)}")
            st.caption(f"label 1 = {card['label1_meaning']}; label 0 = "
                       f"{card['label0_meaning'] or 'the other class'}; {side}")


def main() -> None:
    """Draw the Overview page."""
    st.title("Overview")
    status = common.study_status()
    suite = common.sidebar(status)
    path = status.path
    if suite is None:
        common.show_missing_study(status, with_button=True)
        if status.state != "busy":
            build_panel(path)
        return
    suite_header(suite)
    chat_task_section(suite)
    progress_section(suite)
    checkpoints_section(suite)
    datasets_section()
    with st.expander("Build or resume the default study"):
        st.code(study.shell_command(path), language="bash")
        build_panel(path)


common.run_page(main)
