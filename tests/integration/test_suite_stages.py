"""The steering-evaluation stage end to end on a tiny saved Llama chat suite.

The suite's checkpoints are tiny random models (the conftest's), and its stored vectors
are random unit directions written through :class:`Store` in the real schema, so the
numbers are meaningless; what is checked is the table the stage writes: every condition,
both splits, the selection under the guard, signs, intervals, resumability.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from precompute.pipeline import checkpoint_frame
from precompute.study import study_config
from precompute.suite_stages import eval_config_for, run_steering_stage
from trustdyn import findings
from trustdyn.evaluation import EVAL_PRESETS
from trustdyn.evaluation import run as evaluation_run
from trustdyn.provenance import code_version
from trustdyn.schema import STEERING_STAGE, Unit
from trustdyn.store import Store
from trustdyn.suites import CheckpointRef, Suite

pytestmark = pytest.mark.integration

DATASETS = ("truthfulqa", "toxigen", "sst2", "sentences")
HIDDEN, LAYERS = 32, 3


def _suite(saved: Callable[[str, int], Path]) -> Suite:
    refs = tuple(
        CheckpointRef(suite="tiny", name=f"step-{step:03d}", step=step,
                      source=str(saved("llama", seed)))
        for seed, step in enumerate((0, 10, 20))
    )
    chat = CheckpointRef(suite="tiny", name="chat", step=20, source=str(saved("llama", 7)),
                         is_chat=True)
    return Suite(name="tiny", description="tiny random Llamas", checkpoints=refs, chat=chat)


def _fake_study(store: Store, suite: Suite, config) -> None:
    """Register the suite and write schema-valid vectors and probe results for it."""
    store.put_suite(suite.name, description=suite.description, chat_checkpoint="chat",
                    config=config.to_dict(), checkpoints=checkpoint_frame(suite))
    rng = np.random.default_rng(0)
    for ordinal, ref in enumerate(suite.all_refs()):
        for dataset in config.datasets:
            key = {"suite": suite.name, "checkpoint": ref.name, "dataset": dataset}
            vectors, probes = [], []
            for layer in range(LAYERS):
                direction = rng.normal(size=HIDDEN)
                vectors.append({
                    **key, "layer": layer, "direction": direction / np.linalg.norm(direction),
                    "scale": 0.5, "toward_label": 1, "site": "block_output",
                    "operation": "add", "hidden_size": HIDDEN, "model": ref.source,
                    "revision": None, "n": 10, "seed": 0, "params": {"fake": True},
                    "code_version": code_version(),
                })
                probes.append({**key, "layer": layer, "accuracy": 0.5 + 0.1 * ordinal
                               + 0.01 * layer, "n_train": 10, "n_test": 5, "seed": 0})
            store.write_unit(Unit(suite.name, ref.name, dataset, "vectors"),
                             {"steering_vectors": vectors}, seconds=0.0)
            store.write_unit(Unit(suite.name, ref.name, dataset, "probe"),
                             {"probe_results": probes}, seconds=0.0)


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine
    OpenMP spin-waiting makes them ~10x slower; run this test single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def study(tmp_path, saved_tiny_model, monkeypatch, one_thread):
    # Every pre-training checkpoint's vector (not every 3rd), so three points correlate;
    # fewer items than the smoke grid keeps the test fast.
    monkeypatch.setitem(EVAL_PRESETS, "smoke", dataclasses.replace(
        EVAL_PRESETS["smoke"], checkpoint_stride=1, n_items=8, n_passages=4,
        judge_train=200, judge_test=60, max_new_tokens=4))
    suite = _suite(saved_tiny_model)
    config = study_config("smoke", datasets=DATASETS, n_bootstrap=50, device="cpu")
    store = Store(tmp_path / "study.duckdb")
    _fake_study(store, suite, config)
    return suite, store, config


def test_stage_writes_the_steering_table_and_resumes(study):
    suite, store, config = study
    cfg = eval_config_for(config)
    assert cfg.name == "smoke"

    assert run_steering_stage(suite, store, config, progress=False) == len(DATASETS)
    rows = store.steering_evals(suite.name)
    units = store.units(suite.name)
    assert set(units.loc[units["stage"] == STEERING_STAGE, "dataset"]) == set(DATASETS)
    assert (rows["target"] == "chat").all()

    # Every source (pre-training checkpoints, the chat's own vector, the contrastive vector
    # computed on the chat model, random) has a dev sweep and exactly one selected test
    # setting per metric.
    sources = {"step-000", "step-010", "step-020", "chat", "contrastive", "random"}
    for dataset in DATASETS:
        part = rows[rows["dataset"] == dataset]
        test = part[(part["split"] == "test") & part["vector_source"].isin(sources)]
        assert set(test["vector_source"]) == sources
        assert (test.groupby(["vector_source", "metric"]).size() == 1).all()
        assert set(part.loc[part["split"] == "dev", "vector_source"]) == sources | {"none"}
        baseline = part[part["vector_source"] == "none"]
        assert set(baseline["split"]) == {"dev", "test"}
        assert (baseline["alpha"] == 0).all() and (baseline["layer"] == -1).all()
        gains = test[test["metric"] == "gain"]
        assert len(gains) == len(sources)
        for params in gains["params"]:
            assert "guard_passed" in json.loads(params)["selection"]

    # The contrastive source says what it is and how it was made (it is not stored).
    contrastive = rows[rows["vector_source"] == "contrastive"]["params"].map(json.loads)
    assert (contrastive.map(lambda p: p["role"]) == "contrastive").all()
    assert (contrastive.map(lambda p: p["recipe"]["pairs"]) > 0).all()
    assert (contrastive.map(lambda p: p["recipe"]["max_pairs"]) == cfg.contrastive_pairs).all()
    # The "helps" summary reports it beside the chat's own vector, from the same test row.
    details = findings.steering_details(store.steering_eval_table(suite.name),
                                        store.probe_grid(suite.name, None))
    versus = rows[(rows["split"] == "test") & (rows["metric"] == "gain_vs_random")
                  & (rows["vector_source"] == "contrastive")].set_index("dataset")["value"]
    np.testing.assert_allclose(details.set_index("dataset")["contrastive_gain_vs_random"]
                               .loc[versus.index], versus)

    # One intervention and one unit of strength, recorded with every row; every steered
    # row carries its applied norm and its ratio to the chat model's residual norm.
    params = rows["params"].map(json.loads)
    assert (params.map(lambda p: (p["positions"], p["scaling"])) == ("newest", "target")).all()
    steered_rows = rows[rows["layer"] >= 0]
    assert (steered_rows["applied_norm"] > 0).all() and (steered_rows["norm_ratio"] > 0).all()
    # Target scaling: every source adds the same norm at the same layer and |alpha|.
    dev_norms = steered_rows[steered_rows["split"] == "dev"].assign(
        magnitude=lambda f: f["alpha"].abs().round(9))
    spread = dev_norms.groupby(["dataset", "layer", "magnitude"])["applied_norm"].agg(np.ptp)
    assert (spread < 1e-6).all()

    # Each vector but the random one is compared with the random direction of the same
    # applied norm on the same test items: a paired gain with its p-value and MDE.
    versus = rows[rows["metric"] == "gain_vs_random"]
    # (a gain without spread over the unsteered model is undefined, yet still compared)
    selected = (rows["status"] == "ok") | rows["reason"].fillna("").str.contains("no spread")
    ok_gains = rows[(rows["metric"] == "gain") & selected & (rows["vector_source"] != "random")]
    assert set(zip(versus["dataset"], versus["vector_source"], strict=True)) == set(
        zip(ok_gains["dataset"], ok_gains["vector_source"], strict=True))
    for _, row in versus.iterrows():
        matched = ok_gains[(ok_gains["dataset"] == row["dataset"])
                           & (ok_gains["vector_source"] == row["vector_source"])].iloc[0]
        assert row["applied_norm"] == pytest.approx(matched["applied_norm"])
        if row["status"] == "ok":
            assert 0.0 <= json.loads(row["params"])["p_value"] <= 1.0
            assert row["mde"] > 0
        else:  # e.g. an accuracy on 4 items of a random tiny model that no vector changes
            assert "no spread" in row["reason"] or "degenerate" in row["reason"]

    # The sweep: every strength tried has perplexity rows; with max_scored = 1 only the
    # strongest strength inside the guard has task rows, the others say why not.
    dev = rows[rows["split"] == "dev"]
    for key, group in dev[dev["vector_source"] != "none"].groupby(
            ["dataset", "vector_source", "layer", "alpha"]):
        scored = json.loads(group.loc[group["metric"] == "ppl", "params"].iloc[0])["scored"]
        assert {"ppl", "ppl_ratio"} <= set(group["metric"]), key
        assert (len(group) > 2) == scored, key
    chat_tqa = dev[(dev["dataset"] == "truthfulqa") & (dev["vector_source"] == "chat")
                   & (dev["metric"] == "ppl")]
    assert sum(json.loads(p)["scored"] for p in chat_tqa["params"]) == 1

    # Intervals bracket their value wherever both exist.
    finite = rows.dropna(subset=["value", "ci_lo", "ci_hi"])
    assert (finite["ci_lo"] <= finite["value"] + 1e-9).all()
    assert (finite["value"] <= finite["ci_hi"] + 1e-9).all()

    # Toxicity: steered away from the toxic label (negative alpha on a toward-1 vector),
    # generation-based share reported on test only, judge accuracy stored.
    tox = rows[(rows["dataset"] == "toxigen") & (rows["vector_source"] != "none")]
    steered = tox[tox["vector_source"].isin(sources)]
    assert (steered["alpha"] < 0).all()
    assert steered.loc[steered["vector_source"] != "random", "steer_direction"].str.startswith(
        "away from label 1 (toxic)").all()
    assert set(tox.loc[tox["metric"] == "toxic_share", "split"]) == {"test"}
    for name in ("judge_accuracy", "judge_accuracy_truncated"):
        judge = rows[rows["metric"] == name]
        assert len(judge) == 1 and 0.0 <= judge["value"].iloc[0] <= 1.0

    # TruthfulQA: toward the true label; sst2 (no desirable label): both signs swept.
    tqa = rows[(rows["dataset"] == "truthfulqa") & (rows["split"] == "dev")
               & (rows["vector_source"] == "chat")]
    assert (tqa["alpha"] > 0).all()
    assert tqa["steer_direction"].str.startswith("toward label 1").all()
    sst = rows[(rows["dataset"] == "sst2") & (rows["split"] == "dev")
               & (rows["vector_source"] == "chat")]
    assert set(np.sign(sst["alpha"])) == {-1.0, 1.0}

    # The chat task (beyond the paper): accuracy on its held-out items, half real and half
    # shuffled, steered toward label 1 (real); the tiny suite is not built-in, so its items
    # are the `default` preset's.
    sent = rows[rows["dataset"] == "sentences"]
    assert {"accuracy", "yes_rate", "gain", "gain_vs_random"} <= set(sent["metric"])
    sent_dev = sent[(sent["split"] == "dev") & (sent["vector_source"] == "chat")]
    assert (sent_dev["alpha"] > 0).all()
    assert sent_dev["steer_direction"].str.startswith("toward label 1").all()
    sent_base = sent[(sent["vector_source"] == "none") & (sent["metric"] == "accuracy")]
    assert sorted(sent_base["n"]) == [4, 4]
    assert "preset 'default'" in json.loads(sent_base["params"].iloc[0])["task"]["items"]

    # The correlation row equals what the dashboard helper recomputes from the file.
    corr = rows[(rows["metric"] == "corr_probe_gain") & (rows["dataset"] == "truthfulqa")]
    assert len(corr) == 1
    probes = store.probe_grid(suite.name, "truthfulqa")
    _, recomputed = findings.gain_vs_probe(store.steering_eval_table(suite.name), probes,
                                           "chat", "truthfulqa")
    r, p, n = recomputed.r, recomputed.p, recomputed.n
    assert n == corr["n"].iloc[0] == 3
    if math.isnan(r):  # constant gains (possible with random tiny models)
        assert pd.isna(corr["value"].iloc[0])
    else:
        assert r == pytest.approx(corr["value"].iloc[0])
        assert -1.0 <= r <= 1.0 and 0.0 <= p <= 1.0

    # A rerun finds every unit finished and writes nothing.
    before = store.table_counts()["steering_evals"]
    assert run_steering_stage(suite, store, config, progress=False) == 0
    assert store.table_counts()["steering_evals"] == before


def test_no_admissible_setting_is_stored_never_a_fallback(study, monkeypatch):
    """Every steered setting over the guard: each source says so instead of being scored."""
    suite, store, config = study
    unsteered_ppl = evaluation_run._Context.ppl

    def steered_ppl_over_guard(ctx, scorer, split):  # a random tiny model barely reacts
        table = unsteered_ppl(ctx, scorer, split)
        return table if scorer.vector is None else table * np.array([10.0, 1.0])

    monkeypatch.setattr(evaluation_run._Context, "ppl", steered_ppl_over_guard)
    one = dataclasses.replace(config, datasets=("truthfulqa",))
    assert run_steering_stage(suite, store, one, progress=False) == 1
    rows = store.steering_evals(suite.name)
    test = rows[(rows["split"] == "test") & (rows["vector_source"] != "none")]
    assert set(test["metric"]) == {"gain", "corr_probe_gain", "partial_corr_probe_gain"}
    test = test[test["metric"] == "gain"]
    assert (test["status"] == "no admissible setting").all() and test["value"].isna().all()
    assert test["reason"].str.contains("over the perplexity guard").all()
    story = findings.steering_finding(store.steering_eval_table(suite.name),
                                      store.probe_grid(suite.name, None))
    assert story.verdict == "not supported" and "No admissible setting" in story.text


def test_source_sigma_scaling_keeps_each_checkpoints_own_unit(study):
    """The paper's scaling: α counts each source's own σ, so norms differ by source."""
    suite, store, config = study
    paper = dataclasses.replace(config, datasets=("truthfulqa",), steer_scaling="source-sigma",
                                steer_positions="all")
    assert run_steering_stage(suite, store, paper, progress=False) == 1
    rows = store.steering_evals(suite.name)
    steered = rows[rows["layer"] >= 0]
    params = steered["params"].map(json.loads)
    assert (params.map(lambda p: (p["scaling"], p["positions"])) == ("source-sigma", "all")).all()
    own_units = params.map(lambda p: p["alpha_source_sigma"])
    np.testing.assert_allclose(own_units, steered["alpha"].abs())


def test_stage_skips_a_suite_without_chat_model(study, caplog):
    suite, store, config = study
    bare = Suite(name=suite.name, description="", checkpoints=suite.checkpoints, chat=None)
    with caplog.at_level("INFO"):
        assert run_steering_stage(bare, store, config, progress=False) == 0
    assert "no chat model" in caplog.text
    assert store.table_counts()["steering_evals"] == 0


def test_single_checkpoint_chat_suite_compares_own_vector_with_random(study):
    """SmolLM2-style suite: its one checkpoint is the chat model, so no pre-training
    sources and no correlation, only the chat's own and contrastive vectors against the
    random control."""
    suite, store, config = study
    single = Suite(name=suite.name, description="", checkpoints=(suite.chat,),
                   chat=suite.chat)
    one = dataclasses.replace(config, datasets=("truthfulqa",))
    assert run_steering_stage(single, store, one, progress=False) == 1
    rows = store.steering_evals(suite.name)
    assert set(rows["vector_source"]) == {"none", "chat", "contrastive", "random"}
    assert not (rows["metric"] == "corr_probe_gain").any()


def test_eval_grid_follows_the_study_preset():
    assert eval_config_for(study_config("default")).name == "reduced"
    assert eval_config_for(study_config("classroom")).name == "reduced"
    assert eval_config_for(study_config(None)).name == "full"  # a public suite
    smoke = eval_config_for(study_config("smoke", seed=3, n_bootstrap=20))
    assert (smoke.name, smoke.seed, smoke.n_bootstrap) == ("smoke", 3, 20)
    assert (smoke.scaling, smoke.positions) == ("target", "newest")
    paper = eval_config_for(study_config("smoke", steer_scaling="source-sigma"))
    assert paper.scaling == "source-sigma"
    with pytest.raises(ValueError, match="scaling must be one of"):
        eval_config_for(study_config("smoke", steer_scaling="sigma"))
    with pytest.raises(ValueError, match="No steering-evaluation grid 'tiny'"):
        eval_config_for(study_config("smoke", steer_eval="tiny"))


def test_no_eval_grid_skips_the_stage(smoke_suite, tmp_path):
    store = Store(tmp_path / "study.duckdb")
    config = study_config("smollm2-default")
    assert config.steer_eval is None
    assert run_steering_stage(smoke_suite, store, config, progress=False) == 0
