"""A study file naming the user's own CSV runs end to end on the smoke preset: probe heatmap,
vectors, stored card and the Steering lab's dimension list, exactly like a builtin dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from precompute.__main__ import main
from trustdyn.dashboard import lab, study, tables
from trustdyn.paths import REPO_ROOT
from trustdyn.store import Store
from trustdyn.suites import Suite

pytestmark = pytest.mark.integration

EXAMPLE = REPO_ROOT / "examples" / "user-csv"


@pytest.fixture
def home(smoke_suite: Suite, smoke_root: Path, monkeypatch: pytest.MonkeyPatch) -> Suite:
    """Point the CLI at the session's pre-trained smoke run."""
    monkeypatch.setenv("TRUSTDYN_HOME", str(smoke_root.parent))
    return smoke_suite


@pytest.fixture(scope="module")
def politeness(smoke_suite: Suite, smoke_root: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user-csv example run once through the command line into a fresh study file."""
    db = tmp_path_factory.mktemp("politeness") / "study.duckdb"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRUSTDYN_HOME", str(smoke_root.parent))
        assert main(["run", "--config", str(EXAMPLE / "study.toml"), "--db", str(db),
                     "--quiet"]) == 0
    return db


def test_user_csv_example_reaches_every_reader(home: Suite, politeness: Path) -> None:
    db = politeness
    store, suite = Store(db), home.name
    ckpts = store.checkpoints(suite)
    n_layers = int(ckpts["n_layers"].iloc[0])
    # The Probes page: its dataset list and heatmap data.
    assert "politeness" in store.datasets_with(suite, "probe")
    grid = store.probe_grid(suite, "politeness")
    assert len(grid) == len(ckpts) * n_layers and grid["balanced_accuracy"].notna().all()
    assert len(store.steering_vectors(suite, "politeness")) == len(ckpts) * n_layers
    assert len(store.info_results(suite, "politeness")) > 0
    # The stored card, with the meaning the study file gave it.
    card = tables.dataset_cards(store).set_index("dataset").loc["politeness"]
    assert (card["dimension"], card["label1_meaning"], card["n_rows"]) == (
        "politeness", "a polite sentence", 80)
    assert int(card["desirable_label"]) == 1
    # The Steering lab offers a dimension when a checkpoint's vectors and its card exist.
    for offered in store.vector_inventory()["datasets"]:
        assert "politeness" in set(offered)
    # The steering evaluation skips it, and the progress table does not wait for it.
    assert tables.unevaluated_datasets(store, suite) == ["politeness"]
    assert set(store.steering_eval_table(suite)["dataset"]) == {"truthfulqa"}
    assert tables.unit_progress(store, suite)["missing"].sum() == 0
    stored = tables.suite_config(store, suite)["user_datasets"]
    assert stored[0]["meta"]["name"] == "politeness" and stored[0]["path"].endswith(".csv")
    assert main(["status", "--config", str(EXAMPLE / "study.toml"), "--db", str(db)]) == 0


def test_layers_and_stages_subset(home: Suite, tmp_path: Path) -> None:
    study = tmp_path / "study.toml"
    study.write_text(f"""
[suite]
name = "builtin-smoke"
[[datasets.file]]
name = "politeness"
path = "{EXAMPLE / 'politeness.csv'}"
text_column = "text"
label_column = "is_polite"
[sizes]
layers = [1]
stages = ["probe", "vectors"]
""", encoding="utf-8")
    db = tmp_path / "subset.duckdb"
    assert main(["run", "--config", str(study), "--db", str(db), "--quiet"]) == 0
    store = Store(db)
    assert set(store.probe_results(home.name, "politeness")["layer"]) == {1}
    assert set(store.steering_vectors(home.name, "politeness")["layer"]) == {1}
    assert store.info_results(home.name).empty


def test_pages_list_the_user_dataset(politeness: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(study.STUDY_ENV, str(politeness))
    monkeypatch.setattr(lab, "_smollm2_installed", lambda: False)
    app = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=120).run()
    probes = app.switch_page("pages/probes.py").run()
    assert not probes.exception
    # Options read "<dimension> · <dataset>", from the stored card.
    assert "politeness · politeness" in probes.selectbox(key="probe_dataset").options
    steering = app.switch_page("pages/steering_results.py").run()
    assert not steering.exception
    captions = "\n".join(str(c.value) for c in steering.caption)
    assert "Not evaluated here: politeness" in captions
    assert steering.selectbox(key="steer_dataset").options == ["reliability · truthfulqa"]
    # The Steering lab, on the study's own chat model, offers the dataset as a dimension.
    chat = app.switch_page("pages/steering_lab.py").run()
    assert not chat.exception, [e.value for e in chat.exception]
    dimensions = chat.selectbox(key="lab_dataset").options
    assert any("politeness" in option for option in dimensions), dimensions
