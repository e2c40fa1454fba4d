"""Results and vectors out: ``trustdyn.export`` and the ``export`` / ``export-vectors`` commands
against small synthetic study files, read back with pandas, ``gguf`` and safetensors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import gguf
import numpy as np
import pandas as pd
import pytest
import torch

from precompute.__main__ import main
from trustdyn.export import (
    ExportError,
    VectorExportError,
    VectorRequest,
    export_tables,
    export_vectors,
    parse_layers,
    read_manifest,
    read_table,
    read_vector_file,
    write_control_vector,
)
from trustdyn.paths import REPO_ROOT
from trustdyn.schema import SCHEMA_VERSION, TABLES
from trustdyn.steering import load_vectors
from trustdyn.store import Store
from trustdyn.testing.synthetic import write_synthetic_study


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("study") / "study.duckdb"
    write_synthetic_study(path, n_checkpoints=3, n_layers=3, hidden_size=8, seed=1)
    return path


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with one NULL spelling and lists as tuples, for exact comparison."""
    out = frame.reset_index(drop=True).map(
        lambda v: tuple(np.asarray(v, np.float32).tolist())
        if isinstance(v, np.ndarray | list) else v).astype(object)
    return out.where(out.notna(), None)


def stored(path: Path, table: str) -> pd.DataFrame:
    return Store(path).query(f"SELECT * FROM {table} ORDER BY ALL")


# --------------------------------------------------------------------------- tables


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_every_table_reads_back_equal(study: Path, tmp_path: Path, file_format: str) -> None:
    out = tmp_path / "tables"
    result = export_tables(study, out, file_format)
    store = Store(study)
    assert result.rows == store.table_counts()
    manifest = read_manifest(out)
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json", *(f"{t}.{file_format}" for t in TABLES)])
    columns = store.table_columns()
    for table in TABLES:
        entry = manifest["tables"][table]
        assert [(c["name"], c["type"]) for c in entry["columns"]] == columns[table]
        expected = comparable(stored(study, table))
        pd.testing.assert_frame_equal(comparable(read_table(out, table)), expected)
        if file_format == "parquet":  # plain pandas reads the same table
            pd.testing.assert_frame_equal(
                comparable(pd.read_parquet(out / entry["file"])), expected)


def test_csv_files_are_plain_csv(study: Path, tmp_path: Path) -> None:
    export_tables(study, tmp_path / "t", "csv", ["steering_vectors"])
    frame = pd.read_csv(tmp_path / "t" / "steering_vectors.csv")
    rows = stored(study, "steering_vectors")
    assert list(frame.columns) == list(rows.columns)
    assert np.array_equal(np.asarray(json.loads(frame["direction"][0]), np.float32),
                          rows["direction"][0])
    assert json.loads(frame["params"][0]) == json.loads(rows["params"][0])


def test_chosen_tables_only(study: Path, tmp_path: Path) -> None:
    result = export_tables(study, tmp_path / "t", "parquet", ["units", "datasets", "units"])
    assert list(result.rows) == ["units", "datasets"]
    assert sorted(read_manifest(tmp_path / "t")["tables"]) == ["datasets", "units"]
    with pytest.raises(ExportError, match="holds no 'meta' table"):
        read_table(tmp_path / "t", "meta")


def test_bad_requests_fail_before_writing(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cases = [
        (dict(db=tmp_path / "none.duckdb"), "No study file"),
        (dict(tables=["probe_results", "probes"]), "Unknown table.*probes"),
        (dict(file_format="xlsx"), "Unknown format 'xlsx'"),
    ]
    for change, message in cases:
        with pytest.raises(ExportError, match=message):
            export_tables(**{"db": study, "out": out, **change})
        assert not out.exists()
    foreign = tmp_path / "foreign.duckdb"
    duckdb.connect(str(foreign)).close()
    with pytest.raises(ExportError, match="not a trustdyn study"):
        export_tables(foreign, out)
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep")
    with pytest.raises(ExportError, match="is a file"):
        export_tables(study, a_file)
    assert a_file.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "foreign.duckdb"]


def test_a_non_empty_folder_needs_force(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "units.csv").write_text("old")
    with pytest.raises(ExportError, match=r"not empty.*--force"):
        export_tables(study, out, "csv", ["units"])
    assert (out / "units.csv").read_text() == "old"
    export_tables(study, out, "csv", ["units"], force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert len(read_table(out, "units")) == Store(study).table_counts()["units"]


def test_a_failed_export_leaves_nothing(study: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def half_then_fail(self: Store, files: dict[str, Path], file_format: str) -> None:
        next(iter(files.values())).write_text("partial")
        raise OSError("disk full")

    monkeypatch.setattr(Store, "copy_tables", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        export_tables(study, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def readme_tables() -> dict[str, list[tuple[str, str]]]:
    """The README's "Exported tables" section as {table: [(column, type)]}."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("\n## Exported tables\n", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, list[tuple[str, str]]] = {}
    for block in section.split("\n### ")[1:]:
        name = re.match(r"`(\w+)`", block)
        assert name is not None, block[:40]
        tables[name[1]] = re.findall(r"^\| `(\w+)` \| ([A-Z\[\]]+) \| \S", block, re.M)
    return tables


def test_readme_documents_every_exported_column(tmp_path: Path) -> None:
    store = Store(tmp_path / "empty.duckdb")
    with store.writer():
        pass
    assert readme_tables() == store.table_columns()


# --------------------------------------------------------------------------- vectors


def vector_rows(path: Path, checkpoint: str, dataset: str) -> dict[int, dict]:
    rows = Store(path).steering_vectors("synthetic", dataset, with_direction=True)
    mine = rows[rows["checkpoint"] == checkpoint]
    return {int(r["layer"]): r for r in mine.to_dict(orient="records")}


def test_gguf_control_vector_reads_back(study: Path, tmp_path: Path) -> None:
    # toxigen's desirable label is 0 (not toxic): directions are flipped toward it, and
    # the target unit is the chat model's σ at each layer.
    request = VectorRequest("synthetic", "step-0000001", "toxigen")
    result = export_vectors(Store(study), request, tmp_path / "tox.gguf")
    assert result.gguf == tmp_path / "tox.gguf"
    assert result.safetensors == tmp_path / "tox.safetensors"
    assert (result.gguf_layers, result.skipped, result.toward_label) == ((1, 2), (0,), 0)
    reader = gguf.GGUFReader(str(result.gguf))
    field = {name: f.contents() for name, f in reader.fields.items()}
    assert field["general.architecture"] == "controlvector"
    assert field["controlvector.model_hint"] == "synthetic"
    assert field["controlvector.layer_count"] == 2
    assert reader.fields["controlvector.layer_count"].types == [gguf.GGUFValueType.UINT32]
    assert (field["trustdyn.dataset"], field["trustdyn.scaling"],
            field["trustdyn.toward_label"]) == ("toxigen", "target", "0")
    assert [t.name for t in reader.tensors] == ["direction.1", "direction.2"]
    source, chat = (vector_rows(study, c, "toxigen") for c in ("step-0000001", "chat"))
    for tensor in reader.tensors:
        layer = int(tensor.name.split(".")[1])
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        expected = -np.asarray(source[layer]["direction"], np.float32) * np.float32(
            chat[layer]["scale"])
        assert np.array_equal(np.asarray(tensor.data), expected)


@pytest.mark.parametrize(("scaling", "unit"), [("source-sigma", "own"), ("unit", "one")])
def test_other_scalings(study: Path, tmp_path: Path, scaling: str, unit: str) -> None:
    request = VectorRequest("synthetic", "step-0000001", "truthfulqa", (2,), scaling)
    result = export_vectors(Store(study), request, tmp_path / "v")
    row = vector_rows(study, "step-0000001", "truthfulqa")[2]
    scale = np.float32(row["scale"] if unit == "own" else 1.0)
    tensor = gguf.GGUFReader(str(result.gguf)).tensors[0]
    assert tensor.name == "direction.2"  # truthfulqa: label 1 (true) is desirable, no flip
    assert np.array_equal(np.asarray(tensor.data),
                          np.asarray(row["direction"], np.float32) * scale)


def test_safetensors_file_round_trips(study: Path, tmp_path: Path) -> None:
    request = VectorRequest("synthetic", "chat", "stereoset", None, "target", toward_label=0)
    result = export_vectors(Store(study), request, tmp_path / "v")
    vectors = load_vectors(result.safetensors)
    rows = vector_rows(study, "chat", "stereoset")
    assert [v.layer for v in vectors] == [0, 1, 2]
    for vec in vectors:
        row = rows[vec.layer]
        assert torch.equal(vec.direction, -torch.from_numpy(
            np.asarray(row["direction"], np.float32)))
        assert vec.scale == row["scale"]  # the chat model's own σ: target = source here
        assert (vec.toward_label, vec.source, vec.dataset) == (0, "synthetic/chat", "stereoset")
        assert vec.meta["scaling"] == "target" and vec.meta["flipped"] is True
        assert vec.meta["source_sigma"] == row["scale"]
    from_file = read_vector_file(result.gguf)
    assert [v.layer for v in from_file] == [1, 2]
    for vec, ref in zip(from_file, vectors[1:], strict=True):
        assert torch.allclose(vec.delta(1.5), ref.delta(1.5), atol=1e-6)
        assert (vec.toward_label, vec.dataset, vec.source) == (0, "stereoset", "synthetic/chat")


def test_a_foreign_control_vector_is_read(tmp_path: Path) -> None:
    # As repeng's export_gguf writes one: no trustdyn keys, layers named by block index.
    path = tmp_path / "repeng.gguf"
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_uint32("controlvector.layer_count", 2)
    for layer, values in ((3, [3.0, 4.0]), (5, [0.0, -2.0])):
        writer.add_tensor(f"direction.{layer}", np.asarray(values, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    vectors = read_vector_file(path)
    assert [(v.layer, v.scale, v.toward_label, v.model) for v in vectors] == [
        (3, 5.0, 1, "llama"), (5, 2.0, 1, "llama")]
    assert torch.equal(vectors[0].delta(1.0), torch.tensor([3.0, 4.0]))


def test_bad_vector_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(VectorExportError, match="No vector file"):
        read_vector_file(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(VectorExportError, match="not a readable safetensors file"):
        read_vector_file(junk)
    model = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(model), "llama")
    writer.add_tensor("token_embd.weight", np.ones((2, 2), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(VectorExportError, match="architecture 'llama', not a control vector"):
        read_vector_file(model)


def test_bad_vector_requests_fail_before_writing(study: Path, tmp_path: Path) -> None:
    store = Store(study)
    cases = [
        (VectorRequest("nope", "chat", "toxigen"), "no suite 'nope'.*synthetic"),
        (VectorRequest("synthetic", "ghost", "toxigen"), "checkpoints with toxigen vectors"),
        (VectorRequest("synthetic", "chat", "stereo"), "No stereo vectors"),
        (VectorRequest("synthetic", "chat", "toxigen", (1, 7)), r"layer\(s\) \[7\].*\[0, 1, 2\]"),
        (VectorRequest("synthetic", "chat", "toxigen", (0,)), "Layer 0 cannot go into a GGUF"),
        (VectorRequest("synthetic", "chat", "toxigen", scaling="paper"), "Unknown scaling"),
        (VectorRequest("synthetic", "chat", "toxigen", toward_label=2), "0 or 1"),
    ]
    for request, message in cases:
        with pytest.raises(VectorExportError, match=message):
            export_vectors(store, request, tmp_path / "v")
        assert list(tmp_path.iterdir()) == []
    with pytest.raises(VectorExportError, match="No study file"):
        export_vectors(Store(tmp_path / "none.duckdb"), cases[1][0], tmp_path / "v")
    (tmp_path / "v.gguf").write_text("keep")
    with pytest.raises(VectorExportError, match=r"already exist.*--force"):
        export_vectors(store, VectorRequest("synthetic", "chat", "toxigen"), tmp_path / "v")
    assert (tmp_path / "v.gguf").read_text() == "keep"
    assert not (tmp_path / "v.safetensors").exists()


def test_target_scaling_needs_a_chat_model(tmp_path: Path) -> None:
    path = tmp_path / "nochat.duckdb"
    write_synthetic_study(path, n_checkpoints=2, n_layers=2, hidden_size=4, with_chat=False,
                          stages=("vectors",))
    request = VectorRequest("synthetic", "step-0000000", "sst2")
    with pytest.raises(VectorExportError, match=r"no chat model.*source-sigma"):
        export_vectors(Store(path), request, tmp_path / "v")
    written = export_vectors(Store(path), VectorRequest(
        "synthetic", "step-0000000", "sst2", scaling="source-sigma"), tmp_path / "v")
    assert written.toward_label == 1  # sst2 has no desirable label: label 1


def test_write_control_vector_refuses_what_gguf_cannot_hold(study: Path) -> None:
    vectors = load_vectors_of(study)
    for bad, message in (([], "distinct layers"), (vectors[:1], "distinct layers"),
                         ([vectors[1], vectors[1]], "distinct layers")):
        with pytest.raises(VectorExportError, match=message):
            write_control_vector(Path("unused.gguf"), bad)


def load_vectors_of(study: Path) -> list:
    from trustdyn.steering import vector_from_row

    rows = vector_rows(study, "chat", "toxigen")
    return [vector_from_row(rows[ell], "synthetic") for ell in sorted(rows)]


def test_parse_layers() -> None:
    assert parse_layers("all") is None
    assert parse_layers("3, 5-7,3") == (3, 5, 6, 7)
    for bad in ("", "a", "5-3", "1,,2", "-1"):
        with pytest.raises(VectorExportError, match="Cannot read layers"):
            parse_layers(bad)


# --------------------------------------------------------------------------- commands


def test_commands_write_and_report(study: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--db", str(study), "--out", str(tmp_path / "t"), "--format",
                 "csv", "--tables", "datasets,units"]) == 0
    assert "wrote 2 csv files" in capsys.readouterr().out
    assert main(["export", "--db", str(study), "--out", str(tmp_path / "t")]) == 2
    assert "not empty" in capsys.readouterr().err
    out = tmp_path / "vec"
    assert main(["export-vectors", "--db", str(study), "--suite", "synthetic",
                 "--checkpoint", "chat", "--dataset", "toxigen", "--toward", "1",
                 "--layers", "0-1", "--scaling", "unit", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "toward label 1" in printed and "safetensors file only" in printed
    assert [v.layer for v in load_vectors(out.with_suffix(".safetensors"))] == [0, 1]
    assert main(["export-vectors", "--db", str(study), "--suite", "synthetic",
                 "--checkpoint", "chat", "--dataset", "toxigen", "--layers", "x"]) == 2
    assert "Cannot read layers" in capsys.readouterr().err


def test_the_command_module_imports_light() -> None:
    code = ("import sys, precompute.export_commands\n"
            "heavy = {'torch', 'pandas', 'duckdb', 'gguf'} & set(sys.modules)\n"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
