"""The dashboard: data shaping (trustdyn.dashboard, trustdyn.findings), the synthetic study,
and every page through ``streamlit.testing.v1.AppTest`` against small synthetic studies."""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import build_model, build_tokenizer
from trustdyn import findings, stats
from trustdyn.dashboard import lab, study, tables
from trustdyn.paths import REPO_ROOT
from trustdyn.schema import BASELINE_SOURCE, RANDOM_SOURCE
from trustdyn.store import Store
from trustdyn.testing.synthetic import BUILTIN, write_synthetic_study

APP = REPO_ROOT / "app.py"
PAGES = ("pages/probes.py", "pages/information.py", "pages/steering_results.py",
         "pages/story.py", "pages/steering_lab.py")
TIMEOUT = 120  # seconds per script run: the machine is shared, and the lab loads torch


# --------------------------------------------------------------------------- fixtures


UNDEFINED_REASON = "T is X itself (X is this block's output)"
TURNING = ("stereoset", "renyi", 1)
"""The (dataset, estimator, layer) curve :func:`mark_study` makes turn (the default dataset)."""


def mark_study(store: Store) -> None:
    """Give a synthetic study what the pipeline writes and the generator does not.

    Layer 0's I(X;T) is undefined (X is decoder block 0's output), the paper's nHSIC is a
    third estimator, and one curve turns distinguishably.
    """
    info = store.info_results("synthetic").drop(columns=["step", "tokens", "ordinal",
                                                         "is_chat"])
    layer0 = ((info["layer"] == 0) & (info["quantity"] == "I(X;T)")).to_numpy()
    numbers = ["value", "null_mean", "null_std", "corrected", "z", "se", "corrected_lo",
               "corrected_hi"]
    info.loc[layer0, numbers] = np.nan
    info.loc[layer0, ["status", "reason"]] = ["undefined", UNDEFINED_REASON]
    paper = info[info["estimator"] == "nhsic"].assign(estimator="nhsic_paper")
    turns = store.info_turns("synthetic")
    dataset, estimator, layer = TURNING
    hit = ((turns["dataset"] == dataset) & (turns["estimator"] == estimator)
           & (turns["layer"] == layer)).to_numpy()
    assert hit.sum() == 1 and pd.notna(turns.loc[hit, "turn_step"]).all()
    turns.loc[hit, ["p_value", "distinguishable"]] = [0.001, True]
    store.write_units([], {"info_results": pd.concat([info[layer0], paper]),
                           "info_turns": turns}, seconds=0.0)


@pytest.fixture(scope="module")
def study_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete synthetic study whose vectors fit the tiny test model (d=32, 3 layers)."""
    path = tmp_path_factory.mktemp("study") / "study.duckdb"
    mark_study(write_synthetic_study(path, n_checkpoints=6, n_layers=3, hidden_size=32,
                                     seed=0))
    return path


# (dataset, source) pairs that block_source leaves without an admissible setting and
# with an undefined gain over the random direction, and why.
BLOCKED = ("truthfulqa", "step-0000011")
BLOCKED_REASON = ("12 dev settings; 12 over the perplexity guard 1.33 (least: 1.41 at layer 1, "
                  "α +0.25)")
DEGENERATE = ("truthfulqa", "step-0000110")
DEGENERATE_REASON = "the reference is degenerate: every answer is the same"


def block_source(rows: pd.DataFrame) -> pd.DataFrame:
    """Return ``steering_evals`` rows with :data:`BLOCKED` and :data:`DEGENERATE` as the
    pipeline writes them: one ``gain`` row without a value, an undefined comparison."""
    dataset, source = BLOCKED
    own = ((rows["dataset"] == dataset) & (rows["vector_source"] == source)
           & (rows["split"] == "test")).to_numpy()
    gain = rows[own & (rows["metric"] == "gain").to_numpy()].assign(
        layer=-1, alpha=0.0, value=np.nan, ci_lo=np.nan, ci_hi=np.nan, mde=np.nan,
        applied_norm=np.nan, norm_ratio=np.nan, status="no admissible setting",
        reason=BLOCKED_REASON, params=[{"role": "pretraining", "selection": {
            "on": "dev", "guard": 1.33, "guard_passed": False}}])
    dataset, source = DEGENERATE
    versus = ((rows["dataset"] == dataset) & (rows["vector_source"] == source)
              & (rows["metric"] == "gain_vs_random")).to_numpy()
    rows.loc[versus, ["value", "ci_lo", "ci_hi", "mde"]] = np.nan
    rows.loc[versus, ["status", "reason"]] = ["undefined", DEGENERATE_REASON]
    params = {k: v for k, v in json.loads(rows.loc[versus, "params"].iloc[0]).items()
              if k != "p_value"}
    rows.loc[versus, "params"] = json.dumps(params)
    return pd.concat([rows[~own], gain], ignore_index=True)


@pytest.fixture(scope="module")
def blocked_study(tmp_path_factory: pytest.TempPathFactory, study_file: Path) -> Path:
    """:func:`study_file`'s study whose steering rows went through :func:`block_source`."""
    path = tmp_path_factory.mktemp("blocked") / "study.duckdb"
    store = write_synthetic_study(path, n_checkpoints=6, n_layers=3, hidden_size=32, seed=0,
                                  stages=("probe", "info", "vectors", "turns"))
    rows = block_source(Store(study_file).steering_evals("synthetic"))
    store.write_units([], {"steering_evals": rows}, seconds=0.0)
    return path



@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, study_file: Path,
            tiny_chat: Path) -> Path:
    """Point the app at the synthetic study and the tiny chat model; no SmolLM2."""
    monkeypatch.setenv(study.STUDY_ENV, str(study_file))
    monkeypatch.setenv("TRUSTDYN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(lab.CHAT_MODELS_ENV, f"tiny={tiny_chat}")
    monkeypatch.setattr(lab, "_smollm2_installed", lambda: False)
    return study_file


def run_app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    if page is not None:
        at.switch_page(page).run()
    return at


def open_link(script: str | None = None, **params: str) -> AppTest:
    """Open the app as a browser opens ``/<script's page>?params`` (a new session)."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update(params)
    return at.run() if script is None else at.switch_page(script).run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def chart_specs(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def decode(value: object) -> np.ndarray:
    """Return a plotly JSON array (a list or plotly's base64 typed array) as numpy."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    return np.asarray(value)


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(str(el.value) for el in getattr(at, kind))


# --------------------------------------------------------------------------- synthetic study


def test_synthetic_study_is_labelled_and_plausible(study_file: Path) -> None:
    store = Store(study_file)
    suites = tables.suites(store)
    assert suites["synthetic"].all()
    assert suites["description"].iloc[0].startswith("SYNTHETIC")
    probes = store.probe_grid("synthetic", "truthfulqa")
    pre = probes[~probes["is_chat"]]
    first, last = pre["ordinal"].min(), pre["ordinal"].max()
    # Accuracy rises with training, and the best final layer is not the first one.
    assert pre[pre["ordinal"] == last]["accuracy"].mean() > \
        pre[pre["ordinal"] == first]["accuracy"].mean() + 0.1
    final = pre[pre["ordinal"] == last]
    assert int(final.loc[final["accuracy"].idxmax(), "layer"]) > 0
    assert set(tables.unit_progress(store, "synthetic")["missing"].dropna()) == {0}


def test_synthetic_study_is_deterministic(tmp_path: Path) -> None:
    a = write_synthetic_study(tmp_path / "a.duckdb", n_checkpoints=4, n_layers=2, seed=3)
    b = write_synthetic_study(tmp_path / "b.duckdb", n_checkpoints=4, n_layers=2, seed=3)
    c = write_synthetic_study(tmp_path / "c.duckdb", n_checkpoints=4, n_layers=2, seed=4)
    cols = ["checkpoint", "dataset", "layer", "accuracy"]

    def rows(store: Store) -> pd.DataFrame:
        # probe_results orders by checkpoint and layer only; datasets come in any order.
        return store.probe_results("synthetic")[cols].sort_values(cols[:3], ignore_index=True)

    pd.testing.assert_frame_equal(rows(a), rows(b))
    assert not np.allclose(rows(a)["accuracy"], rows(c)["accuracy"])


def test_synthetic_rejects_degenerate_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checkpoints"):
        write_synthetic_study(tmp_path / "x.duckdb", n_checkpoints=1)


# --------------------------------------------------------------------------- data shaping


def test_resolve_study_path_precedence(tmp_path: Path) -> None:
    env = {study.STUDY_ENV: str(tmp_path / "env.duckdb")}
    assert study.resolve_study_path(["--db", str(tmp_path / "arg.duckdb")], env) == \
        tmp_path / "arg.duckdb"
    assert study.resolve_study_path([], env) == tmp_path / "env.duckdb"
    assert study.resolve_study_path([], {}).name == "study.duckdb"


def test_study_status_states(tmp_path: Path, study_file: Path) -> None:
    assert study.study_status(Store(tmp_path / "none.duckdb")).state == "missing"
    (tmp_path / "empty.duckdb").write_bytes(b"")
    invalid = study.study_status(Store(tmp_path / "empty.duckdb", timeout_s=1))
    assert invalid.state == "invalid" and invalid.message
    assert study.study_status(Store(study_file)).state == "ready"


def test_file_stamp_changes_when_the_study_is_written(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    assert study.file_stamp(path) == (0, 0, 0)
    write_synthetic_study(path, n_checkpoints=3, n_layers=2, stages=("probe",))
    before = study.file_stamp(path)
    write_synthetic_study(path, n_checkpoints=3, n_layers=2, stages=("probe", "info"))
    assert study.file_stamp(path) != before


def test_unit_progress_of_a_partial_study(tmp_path: Path) -> None:
    store = write_synthetic_study(tmp_path / "p.duckdb", n_checkpoints=3, n_layers=2,
                                  stages=("probe",))
    progress = tables.unit_progress(store, "synthetic").set_index("stage")
    n_units = 4 * len(BUILTIN)  # 3 checkpoints + chat, per dataset
    assert progress.loc["probe", "done"] == n_units
    assert progress.loc["info", "missing"] == n_units
    assert progress.loc["turns", "expected"] == len(BUILTIN)
    assert progress.loc["steer_eval", "missing"] == len(BUILTIN)  # the suite has a chat model
    assert study.build_progress(store) == (n_units, 3 * n_units + 2 * len(BUILTIN))


def test_build_command_names_the_file_only_when_not_default(tmp_path: Path) -> None:
    custom = study.build_command(tmp_path / "x.duckdb")
    assert custom[1:6] == ["-m", "precompute", "study", "--preset", "default"]
    assert custom[-2:] == ["--db", str(tmp_path / "x.duckdb")]
    assert study.shell_command(study.default_study_path()) == \
        "python -m precompute study --preset default"


def test_best_layer_and_cosines(study_file: Path) -> None:
    store = Store(study_file)
    grid = store.probe_grid("synthetic", "toxigen")
    best = findings.best_layer_per_checkpoint(grid)
    for row in best.itertuples():
        rows = grid[grid["checkpoint"] == row.checkpoint]
        assert row.accuracy == rows["accuracy"].max()
    cos = tables.direction_cosines(store, "synthetic", "toxigen", 1)
    assert np.allclose(np.diag(cos.to_numpy()), 1.0)
    assert np.allclose(cos.to_numpy(), cos.to_numpy().T)
    vec = tables.probe_vector_cosines(store, "synthetic", "toxigen", 1)
    assert vec[["own_vector", "chat_vector", "final_probe"]].abs().le(1 + 1e-6).all().all()
    assert vec["final_probe"].iloc[-2] == pytest.approx(1.0)  # last pre-training checkpoint


def test_info_plane_pairs_corrected_quantities(study_file: Path) -> None:
    store = Store(study_file)
    info = store.info_grid("synthetic", "sst2")
    probes = store.probe_grid("synthetic", "sst2")
    assert tables.info_estimators(info) == ["renyi", "nhsic", "nhsic_paper"]
    plane = tables.info_plane(info, probes, "nhsic")
    assert len(plane) == len(probes)
    assert set(plane["x_unit"]) == {"score"}
    row = plane.iloc[5]
    expected = info[(info["checkpoint"] == row["checkpoint"]) & (info["layer"] == row["layer"])
                    & (info["estimator"] == "nhsic") & (info["quantity"] == "I(T;Y)")].iloc[0]
    assert row["ity"] == expected["corrected"] and row["ity_raw"] == expected["value"]
    assert (row["ity_lo"], row["ity_hi"]) == (expected["corrected_lo"], expected["corrected_hi"])
    assert set(plane.loc[plane["layer"] == 0, "status"]) == {"undefined"}
    assert plane.loc[plane["layer"] == 0, "ixt"].isna().all()
    usable = tables.info_plane(info, probes, "renyi", "usable")
    assert usable["ity_lo"].isna().all() and set(usable["y_unit"]) == {"bits"}
    turns = tables.turn_points(store, "synthetic", "stereoset", "renyi")
    assert list(turns.columns) == ["layer", "estimator", "turn_step", "peak_value", "fall",
                                   "final_value", "statistic", "p_value", "level",
                                   "ity_falls", "distinguishable"]
    assert turns["distinguishable"].tolist() == [False, True, False]
    assert turns["level"].iloc[0] == pytest.approx(0.05 / len(BUILTIN))


def test_steering_table_order_and_gain_pairs(study_file: Path) -> None:
    store = Store(study_file)
    evals = store.steering_eval_table("synthetic")
    ckpts = store.checkpoints("synthetic")
    table = tables.steering_table(evals, ckpts, "chat", "truthfulqa")
    sources = list(dict.fromkeys(table["source"]))
    assert sources[0] == BASELINE_SOURCE and sources[-1] == RANDOM_SOURCE
    assert sources[-2] == "chat"
    assert set(table["metric"]) >= {"mc1", "gain", "gain_vs_random", "ppl_ratio"}
    assert {"mde", "p_value", "status", "reason", "applied_norm", "norm_ratio",
            "scaling", "role"} <= set(table.columns)
    wide = tables.wide_table(table, "mc1")
    assert list(wide.columns[:4]) == ["vector", "mc1", "gain", "gain_vs_random"]
    pairs, corr = findings.gain_vs_probe(evals, store.probe_grid("synthetic", "truthfulqa"),
                                         "chat", "truthfulqa")
    assert len(pairs) == corr.n >= 3 and corr.lo <= corr.r <= corr.hi
    stored = evals[(evals["metric"] == "corr_probe_gain") & (evals["dataset"] == "truthfulqa")]
    assert corr.r == pytest.approx(stored["value"].iloc[0], abs=0.05)


def test_pearson_matches_numpy_and_handles_degenerate_input() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30), rng.normal(size=30)
    corr = stats.pearson(x, y)
    assert corr.r == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert math.isnan(stats.pearson([1, 2], [3, 4]).r)
    assert math.isnan(stats.pearson([1, 1, 1, 1], [1, 2, 3, 4]).r)


def test_story_verdicts_follow_the_data(tmp_path: Path, study_file: Path) -> None:
    story = findings.story(Store(study_file), "synthetic")
    assert story[1].verdict == "mixed"  # one dataset of five has a distinguishable turn
    assert story[1].details.set_index("dataset").loc["stereoset", "turning"] == 1
    assert story[2].verdict == "supported"
    partial = write_synthetic_study(tmp_path / "p.duckdb", n_checkpoints=3, n_layers=2,
                                    stages=("probe",))
    verdicts = [f.verdict for f in findings.story(partial, "synthetic")]
    assert verdicts[1:] == ["no data", "no data"]
    grid = Store(study_file).probe_grid("synthetic", "sst2")
    steps = sorted(grid["step"].unique())
    # A flat probe (never above chance) is reported as not supported.
    flat = grid.assign(balanced_accuracy=0.5)
    assert findings.probe_finding(flat).verdict == "not supported"
    # Separability a random network already has is not learnt: no onset, not supported.
    at_init = findings.probe_finding(grid.assign(balanced_accuracy=0.9))
    assert at_init.details["at_init"].tolist() == [True]
    assert at_init.details["onset"].isna().all() and at_init.verdict == "not supported"
    assert "already separable at initialisation" in at_init.text
    # Rising above the step-0 level from the third checkpoint on is an onset there.
    rising = findings.probe_finding(grid.assign(
        balanced_accuracy=np.where(grid["step"] >= steps[2], 0.9, 0.5)))
    assert rising.details["onset"].tolist() == [steps[2]]
    assert rising.verdict == "supported"
    table = tables.story_probe_table(rising.details)
    assert table["becomes separable from step"].tolist() == [f"{steps[2]:,}"]
    assert table["separable at initialisation"].tolist() == [False]


def test_parse_chat_models() -> None:
    assert lab.parse_chat_models("a=/x; b = /y ,") == [("a", Path("/x")), ("b", Path("/y"))]
    with pytest.raises(lab.LabError, match="name=folder"):
        lab.parse_chat_models("broken")


def test_validate_request_names_the_allowed_range() -> None:
    lab.validate_request(4.0, 1, 3, 64)
    with pytest.raises(lab.LabError, match="out of range"):
        lab.validate_request(lab.ALPHA_MAX + 1, 1, 3, 64)
    with pytest.raises(lab.LabError, match="out of range"):
        lab.validate_request(float("nan"), 1, 3, 64)
    with pytest.raises(lab.LabError, match="layers 0 to 2"):
        lab.validate_request(1.0, 3, 3, 64)
    with pytest.raises(lab.LabError, match="Reply length"):
        lab.validate_request(1.0, 0, 3, 0)


def test_vector_choices_keep_only_matching_widths(tmp_path: Path, study_file: Path) -> None:
    narrow = tmp_path / "narrow.duckdb"
    write_synthetic_study(narrow, n_checkpoints=3, n_layers=2, hidden_size=8, suite="narrow")
    spec = lab.ChatModelSpec("m", "folder", "/x")
    choices, n_other = lab.vector_choices(Store(narrow).vector_inventory(),
                                                spec, 32)
    assert choices == [] and n_other == 4
    inventory = Store(study_file).vector_inventory()
    own = lab.ChatModelSpec("m", "folder", "/x", "synthetic", "chat")
    choices, n_other = lab.vector_choices(inventory, own, 32)
    assert n_other == 0
    assert choices[0].kind == "own" and choices[-1].kind == "random"
    assert "chat" not in [c.checkpoint for c in choices if c.kind == "checkpoint"]


def test_lab_vector_and_incompatible_width(tmp_path: Path, study_file: Path) -> None:
    store = Store(study_file)
    inventory = store.vector_inventory()
    spec = lab.ChatModelSpec("m", "folder", "/x")
    choices, _ = lab.vector_choices(inventory, spec, 32)
    vector = lab.lab_vector(store, choices[0], "toxigen", 1)
    row = store.steering_vector("synthetic", choices[0].checkpoint, "toxigen", 1)
    assert row is not None
    assert np.allclose(vector.direction.numpy(), row["direction"] / np.linalg.norm(
        row["direction"]), atol=1e-5)
    random = lab.lab_vector(store, choices[-1], "toxigen", 1)
    assert random.scale == pytest.approx(vector.scale)
    with pytest.raises(lab.LabError, match="no toxigen vector"):
        lab.lab_vector(store, choices[0], "toxigen", 7)
    tokenizer = build_tokenizer()
    wide_model = build_model("llama", len(tokenizer))
    narrow = write_synthetic_study(tmp_path / "n.duckdb", n_checkpoints=3, n_layers=2,
                                   hidden_size=8)
    narrow_choice = lab.VectorChoice("n", "checkpoint", "synthetic", "chat", 8)
    bad = lab.lab_vector(narrow, narrow_choice, "toxigen", 0)
    with pytest.raises(lab.LabError, match="hidden size 8"):
        lab.steered_stream(wide_model, tokenizer, [{"role": "user", "content": "hi"}],
                                 vector=bad, alpha=2.0, toward_label=0, max_new_tokens=4)


def test_chat_model_specs(tmp_path: Path, study_file: Path, tiny_chat: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab, "_smollm2_installed", lambda: False)
    env = {lab.CHAT_MODELS_ENV: f"tiny={tiny_chat}"}
    specs = lab.chat_model_specs(Store(study_file), env)
    assert [s.label for s in specs] == ["tiny"] and specs[0].suite is None
    monkeypatch.setattr(lab, "_smollm2_installed", lambda: True)
    assert [s.kind for s in lab.chat_model_specs(Store(study_file), env)] == \
        ["folder", "smollm2"]
    with pytest.raises(lab.LabError, match="does not exist"):
        lab.load_chat_model(lab.ChatModelSpec("ghost", "folder",
                                                          str(tmp_path / "ghost")))


# --------------------------------------------------------------------------- pages


@pytest.mark.usefixtures("app_env")
def test_every_page_runs_without_exceptions() -> None:
    at = run_app()
    assert_clean(at)
    assert "SYNTHETIC" in texts(at, "warning")
    for page in PAGES:
        at.switch_page(page).run()
        assert_clean(at)
        assert not at.error, (page, [e.value for e in at.error])


@pytest.mark.usefixtures("app_env")
def test_overview_shows_suite_progress_and_cards() -> None:
    at = run_app()
    assert any("synthetic" in str(s.value) for s in at.subheader)
    n_units = 7 * len(BUILTIN)  # 6 checkpoints + chat, per dataset
    assert any(f"probe: {n_units} of {n_units} units" in str(p.proto.text)
               for p in at.get("progress"))
    assert len(at.expander) >= len(BUILTIN)
    assert chart_specs(at)  # the loss curve


def _trace(spec: dict, name: str) -> dict:
    return next(t for t in spec["data"] if t.get("name") == name)


def _titled(at: AppTest, words: str) -> dict:
    return next(spec for spec in chart_specs(at) if words in spec["layout"]["title"]["text"])


@pytest.mark.usefixtures("app_env")
def test_probe_heatmap_follows_the_dataset_and_metric(study_file: Path) -> None:
    at = run_app("pages/probes.py")
    assert at.selectbox(key="heat_metric").value == "balanced_accuracy"  # the default
    heat = chart_specs(at)[0]
    assert "Balanced accuracy" in heat["layout"]["title"]["text"]
    assert "balanced accuracy" in heat["data"][0]["hovertemplate"]
    z_first = heat["data"][0]["z"]
    at.selectbox(key="probe_dataset").set_value("toxigen").run()
    assert_clean(at)
    heat2 = chart_specs(at)[0]
    assert heat2["data"][0]["z"] != z_first
    assert heat2["layout"]["title"]["text"].startswith("toxigen")
    grid = Store(study_file).probe_grid("synthetic", "toxigen")
    expected = grid[~grid["is_chat"]].pivot(index="layer", columns="checkpoint",
                                            values="balanced_accuracy")
    z = decode(heat2["data"][0]["z"]).reshape(expected.shape)
    assert np.allclose(z, expected.to_numpy())
    at.selectbox(key="heat_metric").set_value("accuracy_minus_control").run()
    heat3 = chart_specs(at)[0]
    assert heat3["layout"]["coloraxis"]["colorscale"][0][1] != \
        heat2["layout"]["coloraxis"]["colorscale"][0][1]
    assert heat3["data"][1]["x"] == ["chat"]  # chat model in its own column
    at.segmented_control(key="heat_scale").set_value("linear").run()
    assert "tickvals" not in chart_specs(at)[0]["layout"]["xaxis"]


@pytest.mark.usefixtures("app_env")
def test_probe_views_show_the_step_zero_level(study_file: Path) -> None:
    at = run_app("pages/probes.py")
    grid = Store(study_file).probe_grid("synthetic", at.selectbox(key="probe_dataset").value)
    curves = _titled(at, "by checkpoint")
    layer = at.multiselect(key="curve_layers").value[0]
    init = _trace(curves, f"init, layer {layer}")
    first = grid[(grid["ordinal"] == 0) & (grid["layer"] == layer)]["balanced_accuracy"]
    assert init["line"]["dash"] == "dash"
    assert np.allclose(decode(init["y"]), first.iloc[0])
    best = _titled(at, "Best probe layer")
    reference = _trace(best, "initialisation (step 0), same layer")
    expected = tables.best_layers(grid)
    expected = expected[~expected["is_chat"]]
    assert np.allclose(decode(reference["y"]), expected["init_bacc"])
    assert "init_bacc" in at.dataframe[0].value.columns


@pytest.mark.usefixtures("app_env")
def test_information_page_plots_corrected_values(study_file: Path) -> None:
    at = run_app("pages/information.py")
    dataset = at.selectbox(key="info_dataset").value
    assert dataset == TURNING[0]
    radio = at.radio(key="info_estimator")
    assert radio.options == list(tables.ESTIMATOR_LABELS.values())
    plane = chart_specs(at)[0]
    assert "− permutation-null mean [bits]" in plane["layout"]["xaxis"]["title"]["text"]
    assert not any(s.get("type") == "rect" for s in plane["layout"].get("shapes", []))
    assert [a["text"] for a in plane["layout"]["annotations"]].count(
        "permutation-null mean") == 2
    info = Store(study_file).info_grid("synthetic", dataset)
    rows = info[(info["estimator"] == "renyi") & (info["quantity"] == "I(X;T)")
                & (info["layer"] == 1) & ~info["is_chat"]]
    layer1 = _trace(plane, "layer 1")
    assert np.allclose(decode(layer1["x"]), rows["corrected"])  # corrected, not raw
    assert layer1["error_x"]["visible"] and layer1["error_y"]["visible"]
    assert np.allclose(decode(layer1["error_x"]["array"]),
                       rows["corrected_hi"] - rows["corrected"])
    assert "layer 0" not in [t.get("name") for t in plane["data"]]  # undefined: skipped
    assert "turn, layer 1" in [t.get("name") for t in plane["data"]]  # distinguishable
    assert "turn, layer 2" not in [t.get("name") for t in plane["data"]]
    assert f"layer 0: {UNDEFINED_REASON} (I(X;T) undefined at all 7 checkpoints)" in \
        texts(at, "caption")
    turns = at.dataframe[0].value
    assert list(turns.columns) == ["layer", "estimator", "turn_step", "statistic", "p_value",
                                   "ity_falls", "distinguishable"]
    assert "family-wise over this dataset's curves" in texts(at, "caption")
    radio.set_value("nhsic").run()
    assert_clean(at)
    plane = chart_specs(at)[0]
    assert "score, not bits" in plane["layout"]["xaxis"]["title"]["text"]
    assert "dependence score" in texts(at, "caption")
    at.radio(key="info_estimator").set_value("nhsic_paper").run()
    assert_clean(at)
    assert "as in the paper" in chart_specs(at)[0]["layout"]["title"]["text"]
    at.radio(key="info_ity").set_value("usable").run()
    assert_clean(at)
    assert chart_specs(at)[0]["layout"]["yaxis"]["title"]["text"] == "I(T;Y) [bits]"


NUMBER_COLUMNS = ["layer", "α", "applied norm", "norm ratio", "MDE", "p (one-sided)",
                  "MDE vs random"]


def _frame_with(at: AppTest, column: str) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if column in d.value.columns)


@pytest.mark.usefixtures("app_env")
def test_steering_results_table_and_dataset_switch() -> None:
    at = run_app("pages/steering_results.py")
    assert _frame_with(at, "ppl")["vector"].iloc[0] == "baseline (unsteered)"
    assert list(_frame_with(at, "helps").columns) == [
        "vector", *NUMBER_COLUMNS[:4], "gain over unsteered [95%]", "MDE",
        "gain over same-norm random [95%]", "p (one-sided)", "MDE vs random",
        "perplexity guard", "helps"]
    at.selectbox(key="steer_dataset").set_value("toxigen").run()
    assert_clean(at)
    assert "loglik_gap" in _frame_with(at, "ppl").columns
    titles = [spec["layout"]["title"]["text"] for spec in chart_specs(at)]
    assert any("lower is better" in t for t in titles)
    assert any("Pearson r" in t and "partial r" in t for t in titles)


def test_steering_page_shows_verdicts_and_sources_without_a_setting(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, blocked_study: Path) -> None:
    monkeypatch.setenv(study.STUDY_ENV, str(blocked_study))
    monkeypatch.setenv("TRUSTDYN_HOME", str(tmp_path / "home"))
    dataset, source = BLOCKED
    at = run_app("pages/steering_results.py")
    at.selectbox(key="steer_dataset").set_value(dataset).run()
    assert_clean(at)
    store = Store(blocked_study)
    label = tables.source_label(source, store.checkpoints("synthetic"))
    shown = _frame_with(at, "helps").set_index("vector")
    assert shown.loc[label, "gain over unsteered [95%]"] == \
        f"no admissible setting: {BLOCKED_REASON}"
    assert (shown.loc[label, NUMBER_COLUMNS] == "—").all()
    assert f"{label}: {BLOCKED_REASON}" in texts(at, "warning")
    details = tables.steering_details(store, "synthetic").set_index("dataset").loc[dataset]
    assert f"{details['helping']} of {details['pretraining_sources']}" in texts(at, "markdown")
    assert shown["helps"].sum() == details["helping"] + details["chat_helps"]
    summary = _frame_with(at, "pre-training vectors that help").set_index("dataset")
    assert summary.loc[dataset, "no admissible setting"] == 1
    wide = _frame_with(at, "ppl").set_index("vector")
    assert wide.loc[label, "gain"] == f"no admissible setting: {BLOCKED_REASON}"
    assert wide.loc[tables.source_label(DEGENERATE[1], store.checkpoints("synthetic")),
                    "gain_vs_random"] == f"undefined: {DEGENERATE_REASON}"
    assert "not recorded with these rows. Applied norm = |α|·σ" in texts(at, "caption")
    at.selectbox(key="table_metric").set_value("gain").run()
    assert_clean(at)
    bars = _titled(at, "gain on the test split")
    y = dict(zip(bars["data"][0]["x"], decode(bars["data"][0]["y"]), strict=True))
    assert math.isnan(y[label]) and not math.isnan(y["chat's own (chat)"])
    absent = [a for a in bars["layout"]["annotations"] if a.get("text") == "n/a"]
    assert [a["x"] for a in absent] == [label] and BLOCKED_REASON in absent[0]["hovertext"]
    assert f"Not drawn (n/a), because not defined: {label}" in texts(at, "caption")
    assert "Not drawn, because their gain is not defined" in texts(at, "caption")
    assert "partial r" in _titled(at, "Probe accuracy vs")["layout"]["title"]["text"]
    at.switch_page("pages/story.py").run()
    assert_clean(at)
    story = _frame_with(at, "pre-training vectors that help").set_index("dataset")
    assert story.loc[dataset, "pre-training vectors that help"] == \
        f"{details['helping']} of {details['pretraining_sources']}"


@pytest.mark.usefixtures("app_env")
def test_story_states_its_verdicts() -> None:
    at = run_app("pages/story.py")
    assert_clean(at)
    assert len(at.header) == 3
    stated = texts(at, "success") + texts(at, "info") + texts(at, "warning")
    assert stated.count("In this study: ") == 3
    assert "not learnt" in texts(at, "markdown")
    probe_table = next(d.value for d in at.dataframe
                       if "separable at initialisation" in d.value.columns)
    assert list(probe_table.columns) == [
        "dataset", "step-0 balanced accuracy [95%]", "separable at initialisation",
        "becomes separable from step", "checkpoints above init",
        "last checkpoint: balanced accuracy [95%]", "gain over initialisation [95%]"]
    assert len(probe_table) == len(BUILTIN)
    assert probe_table["step-0 balanced accuracy [95%]"].str.match(
        r"0\.\d{3} \[0\.\d{3}, 0\.\d{3}\] at layer \d").all()
    info_table = next(d.value for d in at.dataframe if "median_turn_step" in d.value.columns)
    assert info_table.set_index("dataset").loc[TURNING[0], "turning"] == 1
    steering = _frame_with(at, "pre-training vectors that help")
    assert {"no admissible setting", "level per vector", "its MDE", "chat's own vector helps",
            "r (probe, gain)", "r, norm held fixed"} <= set(steering.columns)
    assert len(steering) == len(BUILTIN)
    raw = _frame_with(at, "partial_corr_probe_gain")
    assert {"helping", "chat_helps", "best_gain_vs_random", "mde", "level"} <= set(raw.columns)
    assert "same applied norm" in texts(at, "caption")


LINK_NOTE = "The link asks for"


@pytest.mark.usefixtures("app_env")
def test_a_link_opens_the_view_it_names_and_follows_the_selectors() -> None:
    at = open_link(page="probes", suite="synthetic", dataset="toxigen", view="Directions",
                   metric="auroc", layer="1")
    assert_clean(at)
    assert LINK_NOTE not in texts(at, "warning")
    assert at.selectbox(key="probe_dataset").value == "toxigen"
    assert at.selectbox(key="heat_metric").value == "auroc"
    assert at.select_slider(key="dir_layer").value == 1
    assert at.session_state["view"] == "Directions"
    assert chart_specs(at)[0]["layout"]["title"]["text"] == \
        f"toxigen: {tables.PROBE_METRICS['auroc']}"
    assert "page" not in at.query_params  # followed, then dropped: the path names the page
    at.selectbox(key="probe_dataset").set_value("stereoset").run()
    at.select_slider(key="dir_layer").set_value(2).run()
    assert_clean(at)
    link = dict(at.query_params)
    assert link == {"suite": "synthetic", "dataset": "stereoset", "view": "Directions",
                    "metric": "auroc", "layer": "2"}
    again = open_link("pages/probes.py", **link)  # the copied URL, in a new session
    assert (again.selectbox(key="probe_dataset").value, again.select_slider(key="dir_layer")
            .value, again.session_state["view"]) == ("stereoset", 2, "Directions")


@pytest.mark.usefixtures("app_env")
def test_unknown_link_values_are_ignored_with_a_note() -> None:
    at = open_link(page="nosuch")
    assert_clean(at)
    assert f"{LINK_NOTE} page 'nosuch'" in texts(at, "warning")
    assert "page" not in at.query_params
    assert any("synthetic" in str(s.value) for s in at.subheader)  # the overview
    at = open_link(page="probes", suite="nosuch", dataset="nosuch", layer="99", view="Nope")
    assert_clean(at)
    for asked in ("suite 'nosuch'", "dataset 'nosuch'", "layer '99'", "view 'Nope'"):
        assert f"{LINK_NOTE} {asked}" in texts(at, "warning")
    assert chart_specs(at)
    assert at.query_params["suite"] == "synthetic"
    assert at.query_params["dataset"] == at.selectbox(key="probe_dataset").value
    at.run()
    assert LINK_NOTE not in texts(at, "warning")  # the URL now names the view on screen


def test_the_pipeline_writes_while_the_dashboard_is_open(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    path = tmp_path / "live.duckdb"
    write_synthetic_study(path, n_checkpoints=3, n_layers=2, stages=("probe",))
    monkeypatch.setenv(study.STUDY_ENV, str(path))
    at = run_app("pages/probes.py")
    assert_clean(at)
    first = str(Store(path).checkpoints("synthetic")["checkpoint"].iloc[0])
    # A writer with no patience (timeout 0): a lock the dashboard kept between reads fails it.
    subprocess.run([sys.executable, "-c", "import sys\nfrom trustdyn.store import Store\n"
                    "Store(sys.argv[1], timeout_s=0).update_checkpoint("
                    "'synthetic', sys.argv[2], train_loss=123.0)", str(path), first],
                   cwd=REPO_ROOT, check=True, timeout=120)
    at.switch_page("pages/overview.py").run()
    assert_clean(at)
    assert _frame_with(at, "train_loss").set_index("checkpoint").loc[first, "train_loss"] == 123


def test_two_suites_are_selectable_and_comparable(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    path = tmp_path / "two.duckdb"
    write_synthetic_study(path, n_checkpoints=4, n_layers=2, suite="alpha", seed=1)
    write_synthetic_study(path, n_checkpoints=5, n_layers=2, suite="beta", seed=2)
    monkeypatch.setenv(study.STUDY_ENV, str(path))
    at = run_app()
    assert at.sidebar.selectbox[0].options == ["alpha", "beta"]
    at.sidebar.selectbox[0].set_value("beta").run()
    assert_clean(at)
    assert any("beta" in str(s.value) for s in at.subheader)
    assert at.query_params["suite"] == "beta"
    at.switch_page("pages/probes.py").run()
    assert_clean(at)
    assert at.sidebar.selectbox[0].value == "beta"  # the choice follows the user
    compare = [spec for spec in chart_specs(at)
               if "suites side by side" in spec["layout"]["title"]["text"]]
    assert len(compare) == 1 and len(compare[0]["data"]) == 2
    assert len(decode(compare[0]["data"][1]["x"])) == 4  # alpha's pre-training checkpoints


def test_missing_study_shows_how_to_build_it(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv(study.STUDY_ENV, str(tmp_path / "nothing.duckdb"))
    at = run_app()
    assert_clean(at)
    assert "python -m precompute study --preset default" in at.code[0].value
    assert any(b.label == "Start the default build" for b in at.button)
    at.switch_page("pages/probes.py").run()
    assert_clean(at)
    assert "precompute study" in at.code[0].value


def test_build_button_starts_the_build_and_follows_it(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "new.duckdb"
    monkeypatch.setenv(study.STUDY_ENV, str(path))
    monkeypatch.setenv("TRUSTDYN_HOME", str(tmp_path / "home"))
    started: list[list[str]] = []

    def fake_build(target: Path, log_path: Path, *, preset: str = "default"
                   ) -> subprocess.Popen[bytes]:
        # Stands in for the real pipeline: records the command, logs a line, exits 0.
        started.append(study.build_command(target, preset=preset))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            return subprocess.Popen([sys.executable, "-c", "print('pre-training...')"],
                                    stdout=log)

    monkeypatch.setattr(study, "start_build", fake_build)
    at = run_app()
    next(b for b in at.button if b.label == "Start the default build").click().run()
    assert_clean(at)
    assert started and started[0][-2:] == ["--db", str(path)]
    progress = at.get("progress")
    finished = "The build finished" in texts(at, "success")
    assert finished or any("Pre-training" in str(p.proto.text) for p in progress)
    deadline = time.monotonic() + 60  # the stand-in exits at once; then the page says so
    while "The build finished" not in texts(at, "success") and time.monotonic() < deadline:
        time.sleep(0.5)
        at.run()
    assert "The build finished" in texts(at, "success")
    assert "pre-training..." in at.code[-1].value  # the log tail


def test_empty_file_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    (tmp_path / "empty.duckdb").write_bytes(b"")
    monkeypatch.setenv(study.STUDY_ENV, str(tmp_path / "empty.duckdb"))
    at = run_app()
    assert_clean(at)
    assert at.error and "precompute study" in at.code[0].value


def test_partial_study_pages_say_what_is_missing(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    path = tmp_path / "partial.duckdb"
    write_synthetic_study(path, n_checkpoints=4, n_layers=2, stages=("probe",))
    monkeypatch.setenv(study.STUDY_ENV, str(path))
    monkeypatch.setattr(lab, "_smollm2_installed", lambda: False)
    at = run_app()
    assert_clean(at)
    assert "Some units are missing" in texts(at, "info")
    at.switch_page("pages/probes.py").run()
    assert_clean(at)
    assert chart_specs(at)
    at.switch_page("pages/information.py").run()
    assert "No information estimates yet" in texts(at, "info")
    at.switch_page("pages/steering_results.py").run()
    assert "No steering evaluation yet" in texts(at, "info")
    at.switch_page("pages/steering_lab.py").run()
    assert_clean(at)
    assert "No chat model is available" in texts(at, "error")


def test_a_locked_study_gives_a_warning(monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    from pages import _common

    path = tmp_path / "locked.duckdb"
    write_synthetic_study(path, n_checkpoints=3, n_layers=2, stages=("probe",))
    # Another process holds DuckDB's write lock, as the pipeline does during a unit.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time\n"
         "con = duckdb.connect(sys.argv[1])\nprint('locked', flush=True)\ntime.sleep(120)",
         str(path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        monkeypatch.setenv(study.STUDY_ENV, str(path))
        monkeypatch.setattr(_common, "READ_TIMEOUT_S", 0.3)
        at = run_app()
        assert_clean(at)
        assert "being written by another process" in texts(at, "warning")
        assert not at.button  # no build offered for a file that is being written
        at.switch_page("pages/probes.py").run()
        assert_clean(at)
        assert "being written by another process" in texts(at, "warning")
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.usefixtures("app_env")
def test_lab_streams_the_unsteered_and_the_steered_answer(tiny_chat: Path,
                                                           study_file: Path) -> None:
    from trustdyn.generation import generate
    from trustdyn.steering import signed_alpha
    from trustdyn.suites import CheckpointRef, LoadOptions, load_checkpoint

    at = run_app("pages/steering_lab.py")
    assert_clean(at)
    at.selectbox(key="lab_dataset").set_value("truthfulqa")
    at.select_slider(key="lab_layer").set_value(1)
    at.slider(key="lab_alpha").set_value(8.0)
    at.slider(key="lab_tokens").set_value(16).run()
    at.chat_input(key="lab_prompt").set_value("Is the sky blue?").run()
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    replies = [m for m in at.chat_message if m.name == "assistant"]
    assert len(replies) == 2
    turn = at.session_state["lab_history"][0]
    assert turn["prompt"] == "Is the sky blue?"
    unsteered, steered = turn["unsteered"], turn["steered"]
    shown = [m.markdown[-1].value if len(m.markdown) else "" for m in replies]
    assert shown == [unsteered.strip(), steered.strip()]  # markdown trims outer spaces
    model, tokenizer = load_checkpoint(CheckpointRef("t", "t", 0, str(tiny_chat)),
                                       LoadOptions(device="cpu"))
    messages = [{"role": "user", "content": "Is the sky blue?"}]
    assert unsteered == generate(model, tokenizer, messages, max_new_tokens=16)
    source = at.selectbox(key="lab_source").value
    choices, _ = lab.vector_choices(Store(study_file).vector_inventory(),
                                          lab.ChatModelSpec("tiny", "folder", ""), 32)
    choice = next(c for c in choices if c.label == source)
    vector = lab.lab_vector(Store(study_file), choice, "truthfulqa", 1)
    alpha = signed_alpha(8.0, vector, 1)  # truthfulqa: toward label 1 (true) is desirable
    assert steered == generate(model, tokenizer, messages, vector=vector, alpha=alpha,
                               max_new_tokens=16)
    assert steered != unsteered  # α = 8σ at a middle layer changes a tiny model's reply


@pytest.mark.usefixtures("app_env")
def test_lab_reports_a_missing_model_folder(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv(lab.CHAT_MODELS_ENV, f"ghost={tmp_path / 'no-such-model'}")
    at = run_app("pages/steering_lab.py")
    assert_clean(at)
    assert "does not exist" in texts(at, "error")
