"""Study files: the worked examples parse, a broken file reports every problem at once and
writes nothing, user datasets (file and hub) reach the study config, and layers are checked."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from precompute.study import StudyConfig, study_config
from precompute.study_file import StudyFileError, load_suite, read_study_file
from tests.conftest import FakeHubTable
from trustdyn.datasets import CardMeta, DatasetError, UserDataset, load_study_dataset, loading
from trustdyn.paths import REPO_ROOT
from trustdyn.suites.hub import public_suite

EXAMPLES = REPO_ROOT / "examples"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(StudyFileError) as caught:
        read_study_file(path)
    return caught.value.problems


def test_user_csv_example_names_its_dataset_with_card() -> None:
    study = read_study_file(EXAMPLES / "user-csv" / "study.toml")
    assert study.suite.builtin and study.suite.preset == "smoke"
    assert study.config.datasets == ("truthfulqa", "politeness")
    (spec,) = study.config.user_datasets
    assert Path(spec.path) == EXAMPLES / "user-csv" / "politeness.csv"
    assert (spec.meta.dimension, spec.meta.desirable_label) == ("politeness", 1)
    dataset = load_study_dataset("politeness", study.config.user_datasets)
    assert len(dataset) == 80 and dataset.groups is not None
    assert dataset.card.label1_meaning == "a polite sentence"
    # Sizes come from the smoke preset, with the file's override on top.
    smoke = study_config("smoke")
    assert study.config.n_per_dataset == smoke.n_per_dataset
    assert study.config.n_bootstrap == 100 and study.config.device == "cpu"


def test_hub_example_selects_log_spaced_revisions_offline() -> None:
    study = read_study_file(EXAMPLES / "hub-log-spaced" / "study.toml")
    assert study.revisions.log_spaced == 8 and study.model.delete_after
    suite = public_suite(study.suite.name, study.revisions)
    steps = [ref.step for ref in suite.checkpoints]
    assert len(steps) == 8 and steps[0] == 0 and steps == sorted(steps)
    assert (study.config.dtype, study.config.n_per_dataset) == ("bfloat16", None)


def test_local_folder_example_loads_its_step_range(tmp_path: Path, saved_tiny_model) -> None:
    folder = tmp_path / "local-folder"
    shutil.copytree(EXAMPLES / "local-folder", folder)
    for step in (0, 1000, 9000):
        shutil.copytree(saved_tiny_model("llama", step), folder / "checkpoints" / f"step-{step}")
    study = read_study_file(folder / "study.toml")
    assert study.config.datasets == ("toxigen", "truthfulqa", "claims")
    assert study.config.stages == ("probe", "vectors") and study.model.layers == "model.layers"
    suite = load_suite(study, pretrain=False)
    assert [ref.step for ref in suite.checkpoints] == [0, 1000]  # steps = [0, 5000]
    assert all(ref.layers == "model.layers" for ref in suite.checkpoints)


BROKEN = """
[suite]
name = "pythia-160m"
prest = "smoke"

[revisions]
names = ["step1000", "stepp2000"]

[datasets]
builtin = ["truthfulqa", "honesty"]

[[datasets.file]]
name = "mine"
path = "bad.csv"

[[datasets.file]]
name = "toxigen"
path = "missing.csv"
desirable_label = 3

[sizes]
preset = "tiny"
info_n = "many"
layers = [0, 0]

[run]
dtype = "bf16"
executor = "slurm"
workers = 0

[model]
trust_remote_code = "yes"

[extras]
"""

EXPECTED = [
    "command line: --seed is given next to --config",
    "top level: unknown key 'extras'",
    "[suite]: unknown key 'prest'; did you mean 'preset'?",
    "[revisions]: Suite 'pythia-160m' has no revision 'stepp2000'",
    "[datasets] builtin: unknown dataset 'honesty'",
    "(toxigen): desirable_label must be 0, 1 or None, got 3",
    "(toxigen): no such file",
    "bad.csv: 2 invalid row(s):\n      row 2 (line 3): label '2' in 'label' is not 0 or 1",
    "row 3 (line 4): empty text in 'statement'",
    "[sizes]: no study sizes 'tiny'",
    "[sizes]: info_n must be an integer >= 8, got 'many'",
    "[sizes]: layers must be distinct block indices",
    "[run]: dtype must be one of float32, float16, bfloat16, got 'bf16'",
    "[run]: executor must be one of local, ray, got 'slurm'",
    "[run]: workers must be >= 1 and only with executor = 'local'",
    "[model]: trust_remote_code must be true or false, got a string 'yes'",
]


def test_broken_file_reports_every_problem_and_writes_nothing(tmp_path: Path) -> None:
    write(tmp_path / "bad.csv", "statement,label\nfine,1\nbad,2\n,0\n")
    study = write(tmp_path / "study.toml", BROKEN)
    db = tmp_path / "out" / "study.duckdb"
    # A fresh interpreter shows what the command imports before it gives up: not torch.
    script = ("import sys\nfrom precompute.__main__ import main\n"
              f"code = main(['run', '--config', {str(study)!r}, '--db', {str(db)!r}, "
              "'--seed', '3'])\n"
              "print('torch imported:', 'torch' in sys.modules)\nsys.exit(code)")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    # One problem per line above, except the data file's, whose two rows share one.
    assert f"{len(EXPECTED) - 1} problem(s); nothing was run or written" in done.stderr
    for expected in EXPECTED:
        assert expected in done.stderr, expected
    assert "torch imported: False" in done.stdout
    assert not db.parent.exists()


def test_user_dataset_names_must_not_shadow_builtins_or_repeat(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", "statement,label\nyes,1\nno,0\n")
    study = write(tmp_path / "study.toml", """
[suite]
name = "builtin"
[datasets]
builtin = ["toxicity", "toxigen"]
[[datasets.file]]
name = "privacy"
path = "a.csv"
""")
    found = problems_of(study)
    assert any("'privacy' is taken by a builtin dataset or dimension" in p for p in found)
    assert any("named more than once: toxigen" in p for p in found)


def test_format_overrides_the_suffix_and_steps_take_a_string(tmp_path: Path) -> None:
    write(tmp_path / "rows.txt", '{"s": "up", "y": 1}\n{"s": "down", "y": 0}\n')
    study = write(tmp_path / "study.toml", """
[suite]
name = "pythia-160m"
[revisions]
steps = "1000:3000"
every = 2
[datasets]
[[datasets.file]]
name = "direction"
path = "rows.txt"
format = "jsonl"
text_column = "s"
label_column = "y"
""")
    read = read_study_file(study)
    assert read.revisions.steps == (1000, 3000) and read.revisions.every == 2
    assert load_study_dataset("direction", read.config.user_datasets).texts == ("up", "down")



HUB_STUDY = """
[suite]
name = "builtin-smoke"
[[datasets.hub]]
name = "hubby"
dataset = "org/claims:validation"
revision = "v2"
text_column = "sentence"
label_column = "y"
dimension = "honesty"
"""


def test_hub_dataset_is_read_with_its_card_before_work(tmp_path: Path, monkeypatch) -> None:
    rows = [{"sentence": "true thing", "y": 1}, {"sentence": "false thing", "y": 0}]
    calls = []

    def fake_loader(repo_id: str, split: str, revision: str | None) -> FakeHubTable:
        calls.append((repo_id, split, revision))
        return FakeHubTable(rows)

    monkeypatch.setattr(loading, "_load_hub_table", fake_loader)
    study = read_study_file(write(tmp_path / "study.toml", HUB_STUDY))
    assert calls == [("org/claims", "validation", "v2")]
    dataset = load_study_dataset("hubby", study.config.user_datasets)
    assert dataset.card.dimension == "honesty" and dataset.card.path == "hf://org/claims"
    assert dataset.card.source == "hf://org/claims@v2[validation]"

    rows[1]["y"] = 7
    found = problems_of(tmp_path / "study.toml")
    assert any("hf://org/claims@v2[validation]: 1 invalid row(s)" in p for p in found)


def test_layers_beyond_the_builtin_model_are_named(tmp_path: Path) -> None:
    study = write(tmp_path / "study.toml", """
[suite]
name = "builtin"
preset = "smoke"
[sizes]
layers = [1, 7, 9]
""")
    (problem,) = problems_of(study)
    assert "layers [7, 9] do not exist" in problem and "(0 to 1)" in problem


def test_user_datasets_are_part_of_the_stored_config_and_digest(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "statement,label\nyes,1\nno,0\n")
    spec = UserDataset(CardMeta("mine", dimension="custom"), path=str(path))
    config = StudyConfig(datasets=("mine",), user_datasets=(spec,))
    stored = config.to_dict()["user_datasets"][0]
    assert stored["path"] == str(path) and stored["meta"]["name"] == "mine"
    renamed = StudyConfig(datasets=("mine",), user_datasets=(
        UserDataset(CardMeta("mine", dimension="other"), path=str(path)),))
    assert config.digest() != renamed.digest()


def test_user_dataset_needs_exactly_one_source() -> None:
    with pytest.raises(DatasetError, match="exactly one"):
        UserDataset(CardMeta("x"))
    with pytest.raises(DatasetError, match="'<repo id>:<split>'"):
        UserDataset(CardMeta("x"), hub="org/set")
