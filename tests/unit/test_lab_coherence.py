"""The Steering lab's coherence evidence: the stored guard in the lab's unit, each answer's
perplexity, the preselected setting, and the page with and without a steering evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from trustdyn.dashboard import coherence, lab, study
from trustdyn.dashboard.coherence import GuardEvidence, GuardStep, NoEvaluation
from trustdyn.paths import REPO_ROOT
from trustdyn.store import Store
from trustdyn.testing.synthetic import write_synthetic_study

TIMEOUT = 120  # seconds per script run: the machine is shared, and the lab loads torch
SUITE, CHAT = "synthetic", "chat"

# The evaluation's scaling is "target": its α is in the chat model's σ, the lab's in the
# source checkpoint's. Layer 1: chat σ 2.0, source σ 0.5, so lab α = 4 × evaluation α;
# layer 2: chat σ 3.0, source σ 1.5, so lab α = 2 × evaluation α.
CHAT_SIGMA = {0: 1.0, 1: 2.0, 2: 3.0}
SOURCE_SIGMA = {0: 1.0, 1: 0.5, 2: 1.5}
LADDER = {  # (layer, signed evaluation α) -> dev perplexity ratio
    (1, 0.25): 1.0, (1, 0.5): 1.1, (1, 1.0): 1.3, (1, 2.0): 1.6,
    (2, 0.25): 1.2, (2, 0.5): 1.5,
    (1, -0.5): 1.2, (1, -1.0): 1.4,  # the other direction: toward label 0
}


def eval_row(source: str, metric: str, split: str, layer: int, alpha: float, value: float | None,
             params: dict[str, Any], *, status: str = "ok", reason: str | None = None,
             norm: float | None = None) -> dict[str, Any]:
    return {"suite": SUITE, "target": CHAT, "vector_source": source, "dataset": "truthfulqa",
            "metric": metric, "split": split, "layer": layer, "alpha": alpha,
            "steer_direction": "toward label 1 (the answer is true)", "value": value,
            "applied_norm": norm, "status": status, "reason": reason, "seed": 0,
            "params": json.dumps({"scaling": "target", "positions": "newest", **params}),
            "code_version": "test"}


def write_evaluation(store: Store, source: str) -> None:
    """Give ``source`` (a pre-training checkpoint) the vector scales and the steering
    evaluation rows above; the random control has no admissible setting."""
    vectors = store.steering_vectors(SUITE, "truthfulqa", with_direction=True)
    vectors = vectors[vectors["checkpoint"].isin([source, CHAT])].drop(columns=["step",
                                                                                "is_chat"])
    vectors["scale"] = [(CHAT_SIGMA if c == CHAT else SOURCE_SIGMA)[int(layer)]
                        for c, layer in zip(vectors["checkpoint"], vectors["layer"], strict=True)]
    guard = {"guard": 1.33}
    rows = [eval_row(source, "ppl_ratio", "dev", layer, alpha, ratio, guard,
                     norm=abs(alpha) * CHAT_SIGMA[layer])
            for (layer, alpha), ratio in LADDER.items()]
    rows += [
        eval_row(source, "gain", "test", 1, 1.0, 0.04, {"selection": guard}, norm=2.0),
        eval_row("random", "ppl_ratio", "dev", 1, 0.25, 1.5, guard, norm=0.5),
        eval_row("random", "gain", "test", -1, 0.0, None, {"selection": guard},
                 status="no admissible setting", reason="1 dev settings; 1 over the guard"),
    ]
    store.write_units([], {"steering_vectors": vectors, "steering_evals": pd.DataFrame(rows)},
                      seconds=0.0)


@pytest.fixture(scope="module")
def study_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic study (d=32, 3 layers: the tiny chat model's shape) with vectors and a
    hand-written steering evaluation of truthfulqa only."""
    path = tmp_path_factory.mktemp("study") / "study.duckdb"
    store = write_synthetic_study(path, n_checkpoints=3, n_layers=3, hidden_size=32, seed=0,
                                  stages=("vectors",))
    write_evaluation(store, source_name(path))
    return path


def source_name(path: Path) -> str:
    """The last pre-training checkpoint: the evaluated vector source."""
    names = Store(path).checkpoints(SUITE)
    return str(names[~names["is_chat"]]["checkpoint"].iloc[-1])


def spec(tiny_chat: Path | str = "") -> lab.ChatModelSpec:
    return lab.ChatModelSpec("tiny", "folder", str(tiny_chat), SUITE, CHAT, "the test's")


def choices(path: Path) -> dict[str, lab.VectorChoice]:
    found, _ = lab.vector_choices(Store(path).vector_inventory(), spec(), 32)
    return {c.checkpoint if c.kind == "checkpoint" else c.kind: c for c in found}


def test_lab_alpha_converts_through_the_applied_norm() -> None:
    # Evaluation α 1 in the chat model's σ 2.0 adds a norm of 2.0; the lab's vector carries
    # its checkpoint's σ 0.5, so the lab needs α 4 to add the same norm.
    assert coherence.lab_alpha(1.0 * 2.0, 0.5) == 4.0
    assert coherence.lab_alpha(3.0, 1.5) == 2.0


def test_the_lab_unit_is_the_evaluations_source_sigma(tmp_path: Path, tiny_llama: Any,
                                                       tiny_tokenizer: Any) -> None:
    """On rows the real evaluation writes (target scaling), every lab α equals the strength
    it stores in the source checkpoint's σ (``params.alpha_source_sigma``), the lab's unit."""
    from dataclasses import replace

    from trustdyn.datasets import load_dataset, sample_dataset
    from trustdyn.evaluation import (
        EVAL_PRESETS,
        build_sources,
        build_task,
        evaluate_dataset,
        heldout_passages,
    )
    from trustdyn.evaluation.tasks import PerplexityGuard

    store = write_synthetic_study(tmp_path / "s.duckdb", n_checkpoints=3, n_layers=3,
                                  hidden_size=32, seed=0, stages=("vectors",))
    cfg = replace(EVAL_PRESETS["smoke"], alphas=(0.5, 4.0))
    assert cfg.scaling == "target"
    seen = sample_dataset(load_dataset("confaide"), 20, seed=0)
    names = [n for n in store.checkpoints(SUITE)["checkpoint"] if n != CHAT]
    sources = build_sources(store.steering_vectors(SUITE, "confaide", with_direction=True),
                            suite=SUITE, chat=CHAT, pretraining=[(n, None) for n in names],
                            layers=[1], chat_step=None, seed=0)
    rows = pd.DataFrame(evaluate_dataset(
        tiny_llama, tiny_tokenizer, build_task("confaide", seen, cfg),
        PerplexityGuard(*heldout_passages(None, cfg)), sources, [1], seen.card, cfg,
        suite=SUITE, target=CHAT))
    store.write_units([], {"steering_evals": rows}, seconds=0.0)
    stored = {(r.vector_source, r.metric, abs(r.alpha)): r.params["alpha_source_sigma"]
              for r in rows.itertuples() if r.layer == 1}
    found, _ = lab.vector_choices(store.vector_inventory(), spec(), 32)
    checked = 0
    for choice in found:
        evidence = coherence.guard_evidence(store, spec(), choice, "confaide", 0)
        assert isinstance(evidence, GuardEvidence)
        for step in evidence.steps[1]:
            assert step.lab_alpha == pytest.approx(
                stored[(evidence.source, "ppl_ratio", step.alpha)], rel=1e-9)
            checked += 1
        rec = evidence.recommended
        if rec is not None:
            assert rec.lab_alpha == pytest.approx(
                stored[(evidence.source, "gain", rec.alpha)], rel=1e-9)
    assert checked >= 2 * len(found)  # both strengths of every source, in the lab's unit
    step0 = coherence.guard_evidence(store, spec(), next(c for c in found if c.checkpoint
                                                          == names[0]), "confaide", 0)
    assert isinstance(step0, GuardEvidence)  # a tiny early σ: many lab σ per chat σ
    assert step0.steps[1][0].lab_alpha > 2 * step0.steps[1][0].alpha


def test_the_dev_ladder_is_read_in_the_lab_unit(study_file: Path) -> None:
    source = source_name(study_file)
    evidence = coherence.guard_evidence(Store(study_file), spec(), choices(study_file)[source],
                                        "truthfulqa", 1)
    assert isinstance(evidence, GuardEvidence)
    assert (evidence.source, evidence.guard, evidence.scaling, evidence.positions) == (
        source, 1.33, "target", "newest")
    assert evidence.steps[1] == (GuardStep(0.25, 1.0, 1.0, True), GuardStep(0.5, 2.0, 1.1, True),
                                 GuardStep(1.0, 4.0, 1.3, True), GuardStep(2.0, 8.0, 1.6, False))
    assert evidence.steps[2] == (GuardStep(0.25, 0.5, 1.2, True), GuardStep(0.5, 1.0, 1.5, False))
    assert evidence.recommended == coherence.Recommendation(1, 1.0, 4.0, 1)
    assert evidence.caveats == ()
    away = coherence.guard_evidence(Store(study_file), spec(), choices(study_file)[source],
                                    "truthfulqa", 0)
    assert isinstance(away, GuardEvidence)
    assert away.steps == {1: (GuardStep(0.5, 2.0, 1.2, True), GuardStep(1.0, 4.0, 1.4, False))}


def test_the_verdict_is_the_evaluations_own(study_file: Path) -> None:
    source = source_name(study_file)
    evidence = coherence.guard_evidence(Store(study_file), spec(), choices(study_file)[source],
                                        "truthfulqa", 1)
    assert isinstance(evidence, GuardEvidence)
    verdicts = {(layer, alpha): coherence.guard_verdict(evidence, layer, alpha)[0]
                for layer, alpha in ((1, 0.5), (1, 4.0), (1, 4.0 * (1 + 1e-12)), (1, 6.0),
                                     (1, 8.0), (1, 12.0), (2, 0.5), (2, 0.75), (2, 1.0),
                                     (0, 1.0))}
    assert verdicts == {
        (1, 0.5): "within the guard", (1, 4.0): "within the guard",
        (1, 4.0 * (1 + 1e-12)): "within the guard", (1, 6.0): "not measured",
        (1, 8.0): "beyond the guard", (1, 12.0): "beyond the guard",
        (2, 0.5): "within the guard", (2, 0.75): "not measured", (2, 1.0): "beyond the guard",
        (0, 1.0): "not measured"}
    assert coherence.guard_verdict(evidence, 1, 8.0)[1] == (
        "at layer 1, α 8 already gave ×1.60 the unsteered perplexity on dev, over the guard "
        "×1.33")
    assert coherence.guard_verdict(evidence, 0, 1.0)[1] == (
        "the evaluation did not try this vector at layer 0 in this direction (layers tried: "
        "1, 2)")
    assert coherence.describe_range(evidence, 1) == (
        "Steering evaluation, dev, layer 1: α 1 to 4 passed the perplexity guard (×1.33); "
        "tried α 1, 2, 4, 8. In the evaluation's unit (the chat model's σ): 0.25 to 1.")
    assert coherence.describe_recommendation(evidence, lab.ALPHA_MAX) == (
        "The evaluation's recommended setting (chosen on dev): layer 1, α 4 (1 in the chat "
        "model's σ), toward label 1.")


def test_a_ladder_that_never_failed_is_not_extrapolated() -> None:
    evidence = GuardEvidence("s", 1.33, "target", "all", {3: (GuardStep(1.0, 2.0, 1.1, True),)},
                             None, "none")
    assert coherence.guard_verdict(evidence, 3, 2.5) == (
        "not measured", "at layer 3 the evaluation tried α up to 2; this strength lies beyond "
        "every strength tried")
    assert coherence.preselection(evidence, 1, [0, 1, 2, 3], 16.0) is None


def test_the_recommended_setting_is_preselected_when_it_fits(study_file: Path) -> None:
    source = source_name(study_file)
    evidence = coherence.guard_evidence(Store(study_file), spec(), choices(study_file)[source],
                                        "truthfulqa", 1)
    assert coherence.preselection(evidence, 1, [0, 1, 2], lab.ALPHA_MAX) == (1, 4.0)
    assert coherence.preselection(evidence, 0, [0, 1, 2], lab.ALPHA_MAX) is None  # other side
    assert coherence.preselection(evidence, 1, [0, 2], lab.ALPHA_MAX) is None
    assert coherence.preselection(evidence, 1, [0, 1, 2], 3.0) is None  # beyond the slider
    assert coherence.preselection(NoEvaluation("x"), 1, [0, 1, 2], lab.ALPHA_MAX) is None


def test_no_evaluation_says_why(study_file: Path) -> None:
    store, found = Store(study_file), choices(study_file)
    random = coherence.guard_evidence(store, spec(), found["random"], "truthfulqa", 1)
    assert isinstance(random, GuardEvidence) and random.recommended is None
    assert random.steps[1] == (GuardStep(0.25, 0.25, 1.5, False),)  # the chat model's σ 2.0
    assert coherence.describe_recommendation(random, lab.ALPHA_MAX) == (
        "The steering evaluation recommends no setting for this vector: no admissible setting "
        "on dev (1 dev settings; 1 over the guard).")
    assert random.caveats == ()  # the lab's random direction is the evaluation's draw
    other_draw = lab.VectorChoice("random", "random", SUITE, source_name(study_file), 32)
    drawn = coherence.guard_evidence(store, spec(), other_draw, "truthfulqa", 1)
    assert isinstance(drawn, GuardEvidence)
    assert drawn.caveats == ("the lab's random direction is another draw than the "
                             "evaluation's (same norm, different direction)",)
    assert drawn.steps[1] == (GuardStep(0.25, 1.0, 1.5, False),)  # scaled like the source
    first = str(Store(study_file).checkpoints(SUITE)["checkpoint"].iloc[0])
    reasons = [coherence.guard_evidence(store, model, choice, dataset, 1)
               for model, choice, dataset in (
                   (spec(), found[first], "truthfulqa"), (spec(), found["own"], "toxigen"),
                   (lab.ChatModelSpec("other", "folder", ""), found["own"], "truthfulqa"),
                   (spec(), lab.VectorChoice("f", "file", "", "f.gguf", 32), "truthfulqa"))]
    assert reasons == [
        NoEvaluation(f"the steering evaluation of truthfulqa did not use this vector (it used: "
                     f"random, {source_name(study_file)})"),
        NoEvaluation("the study has no steering evaluation of synthetic on toxigen"),
        NoEvaluation("the study has no steering evaluation of other"),
        coherence.FILE_VECTORS]


def test_an_answer_is_scored_by_the_unsteered_model(tiny_chat: Path) -> None:
    import torch

    from trustdyn.generation import encode_prompt, generate
    from trustdyn.suites import CheckpointRef, LoadOptions, load_checkpoint

    model, tokenizer = load_checkpoint(CheckpointRef("t", "t", 0, str(tiny_chat)),
                                       LoadOptions(device="cpu"))
    messages = [{"role": "user", "content": "Is the sky blue?"}]
    answer = generate(model, tokenizer, messages, max_new_tokens=8)
    prompt = encode_prompt(tokenizer, messages)
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    nll = 0.0  # one token at a time: each answer token given everything before it
    for i, token in enumerate(ids):
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([prompt + ids[:i]])).logits[0, -1]
        nll -= float(torch.log_softmax(logits.float(), dim=-1)[token])
    ppl = coherence.answer_perplexity(model, tokenizer, messages, answer)
    assert ppl == pytest.approx(math.exp(nll / len(ids)), rel=1e-5)
    assert coherence.answer_perplexity(model, tokenizer, messages, "") is None
    # Greedy decoding picks each token the model finds likeliest, so another answer of the
    # same length is less likely under it.
    assert ppl is not None and ppl < coherence.answer_perplexity(
        model, tokenizer, messages, tokenizer.decode(list(reversed(ids))))


def test_the_coherence_line() -> None:
    verdict = ("within the guard", "at layer 1, α up to 4 kept ...")
    assert coherence.describe_coherence(5.0, 2.0, verdict) == (
        "Coherence: perplexity 5 under the unsteered model (unsteered answer: 2; ×2.50). "
        "Steering evaluation: within the guard (at layer 1, α up to 4 kept ...).")
    assert coherence.describe_coherence(None, 2.0, None, "no evaluation of x") == (
        "Coherence: perplexity — (empty answer) under the unsteered model (unsteered answer: "
        "2). No guard verdict: no evaluation of x.")


# --------------------------------------------------------------------------- the page


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, study_file: Path,
            tiny_chat: Path) -> None:
    monkeypatch.setenv(study.STUDY_ENV, str(study_file))
    monkeypatch.setenv("TRUSTDYN_HOME", str(tmp_path / "home"))
    # The tiny model stands for the study's chat model, whose evaluation the rows describe.
    monkeypatch.setattr(lab, "chat_model_specs", lambda store: [spec(tiny_chat)])


def captions(at: AppTest) -> str:
    return "\n".join(str(c.value) for c in at.caption)


@pytest.mark.usefixtures("app_env")
def test_the_page_preselects_the_recommendation_and_judges_each_answer(
        study_file: Path) -> None:
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/steering_lab.py").run()
    source = choices(study_file)[source_name(study_file)]
    at.selectbox(key="lab_source").set_value(source.label).run()
    at.selectbox(key="lab_dataset").set_value("truthfulqa").run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    assert (at.select_slider(key="lab_layer").value, at.slider(key="lab_alpha").value) == (1, 4.0)
    assert "α 1 to 4 passed the perplexity guard (×1.33)" in captions(at)
    assert "This setting: **within the guard**" in captions(at)
    at.slider(key="lab_tokens").set_value(8).run()
    at.chat_input(key="lab_prompt").set_value("Is the sky blue?").run()
    at.slider(key="lab_alpha").set_value(12.0).run()  # the user's choice is kept
    assert at.slider(key="lab_alpha").value == 12.0
    at.chat_input(key="lab_prompt").set_value("Is the sky blue?").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    first, second = at.session_state["lab_history"]
    assert first["coherence"].startswith("Coherence: perplexity ")
    assert first["coherence"].endswith("Steering evaluation: within the guard (at layer 1, α up "
                                       "to 4 kept the dev perplexity within ×1.33 of the "
                                       "unsteered model's).")
    assert "Steering evaluation: beyond the guard (at layer 1, α 8 already" in second["coherence"]
    assert second["coherence"] in captions(at)
    at.selectbox(key="lab_dataset").set_value("toxigen").run()  # no evaluation of toxigen
    assert not at.exception
    assert ("Perplexity guard: the study has no steering evaluation of synthetic on toxigen, so "
            "the lab shows each answer's perplexity without a guard verdict.") in captions(at)
    at.chat_input(key="lab_prompt").set_value("Is the sky blue?").run()
    assert at.session_state["lab_history"][-1]["coherence"].endswith(
        "No guard verdict: the study has no steering evaluation of synthetic on toxigen.")
    at.selectbox(key="lab_dataset").set_value("truthfulqa").run()  # opened again: preset again
    assert (at.select_slider(key="lab_layer").value, at.slider(key="lab_alpha").value) == (1, 4.0)
