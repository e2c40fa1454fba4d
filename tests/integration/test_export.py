"""Export from a real study (the `smoke` built-in suite): its tables, and its chat model's
vectors as a GGUF control vector that steers the chat model exactly like the stored vector."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pandas as pd
import pytest
import torch

from precompute.__main__ import main
from trustdyn.export import read_table, read_vector_file
from trustdyn.schema import TABLES
from trustdyn.steering import signed_alpha, steer, vector_from_row
from trustdyn.store import Store
from trustdyn.suites import LoadOptions, Suite, load_checkpoint

pytestmark = pytest.mark.integration


def test_the_study_reads_back_from_parquet(reference: Store, tmp_path: Path) -> None:
    out = tmp_path / "tables"
    assert main(["export", "--db", str(reference.path), "--out", str(out)]) == 0
    for table in TABLES:
        exported = read_table(out, table)
        expected = reference.query(f"SELECT * FROM {table} ORDER BY ALL")
        assert len(exported) == len(expected) and list(exported) == list(expected)
        for column in expected:
            same = [np.array_equal(a, b) if isinstance(a, np.ndarray) else
                    (pd.isna(a) and pd.isna(b)) or a == b
                    for a, b in zip(exported[column], expected[column], strict=True)]
            assert all(same), (table, column)


def test_a_gguf_vector_steers_like_the_stored_one(reference: Store, smoke_suite: Suite,
                                                  tmp_path: Path) -> None:
    suite, chat = smoke_suite.name, smoke_suite.chat
    assert chat is not None
    cards = reference.datasets().set_index("dataset")
    dataset = next(d for d in reference.datasets_with(suite, "vectors")
                   if cards.loc[d, "desirable_label"] == 0)  # a flipped direction
    out = tmp_path / "vec"
    assert main(["export-vectors", "--db", str(reference.path), "--suite", suite,
                 "--checkpoint", chat.name, "--dataset", dataset, "--out", str(out)]) == 0
    n_layers = int(reference.checkpoints(suite)["n_layers"].iloc[0])
    reader = gguf.GGUFReader(str(out.with_suffix(".gguf")))
    assert reader.fields["general.architecture"].contents() == "controlvector"
    assert reader.fields["controlvector.layer_count"].contents() == n_layers - 1
    assert [t.name for t in reader.tensors] == [f"direction.{n}" for n in range(1, n_layers)]

    model, tokenizer = load_checkpoint(chat, LoadOptions(device="cpu"))
    ids = tokenizer("Is the sky blue?", return_tensors="pt")["input_ids"]
    layer = n_layers // 2
    from_file = {v.layer: v for v in read_vector_file(out.with_suffix(".gguf"))}[layer]
    row = reference.steering_vector(suite, chat.name, dataset, layer)
    assert row is not None
    stored = vector_from_row(row, suite)
    with torch.no_grad(), steer(model, from_file, 2.0):
        file_logits = model(ids).logits
    with torch.no_grad(), steer(model, stored, signed_alpha(2.0, stored, toward_label=0)):
        stored_logits = model(ids).logits
    with torch.no_grad():
        plain_logits = model(ids).logits
    assert torch.allclose(file_logits, stored_logits, atol=1e-4)
    assert not torch.allclose(file_logits, plain_logits, atol=1e-3)
