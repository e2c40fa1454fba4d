"""A suite that never learns: its checkpoints only drift randomly in weight space.

Starting from the built-in smoke model's random initialisation, each checkpoint adds small
isotropic noise to every weight. Nothing is learnt, so the story must report no emergence
of separability and no fitting → compression turn, for any dataset.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from precompute.pipeline import run_study
from trustdyn import findings
from trustdyn.schema import PER_CHECKPOINT_STAGES
from trustdyn.store import Store
from trustdyn.suites import CheckpointRef, Suite

pytestmark = pytest.mark.integration

N_CHECKPOINTS = 12
DRIFT = 0.02  # per checkpoint, in units of each weight tensor's own std


def drifting_suite(init: Path, root: Path, seed: int = 0) -> Suite:
    """Save ``N_CHECKPOINTS`` copies of the model at ``init``, each a random step further."""
    model = AutoModelForCausalLM.from_pretrained(init)
    generator = torch.Generator().manual_seed(seed)
    refs = []
    for i in range(N_CHECKPOINTS):
        if i:
            with torch.no_grad():
                for weight in model.parameters():
                    noise = torch.randn(weight.shape, generator=generator)
                    weight.add_(DRIFT * float(weight.std()) * noise)
        folder = root / f"drift-{i:02d}"
        model.save_pretrained(folder)
        for name in init.iterdir():  # the tokenizer's files
            if name.name.startswith(("tokenizer", "special_tokens")):
                shutil.copy(name, folder / name.name)
        refs.append(CheckpointRef(suite="drift", name=folder.name, step=10 * i,
                                  source=str(folder)))
    return Suite(name="drift", description="random drift from an initialisation",
                 checkpoints=tuple(refs), chat=None)


def test_a_suite_that_only_drifts_shows_no_emergence_and_no_turn(smoke_suite, smoke_config,
                                                                    tmp_path):
    init = Path(smoke_suite.checkpoints[0].source)
    suite = drifting_suite(init, tmp_path / "suite")
    config = dataclasses.replace(smoke_config, stages=PER_CHECKPOINT_STAGES, steer_eval=None)
    store = Store(tmp_path / "study.duckdb")
    report = run_study(suite, store, config, progress=False)
    assert not report.failures
    probes = findings.all_probes(store, suite.name)
    details = findings.probe_details(probes)
    assert set(details["dataset"]) == set(config.datasets)
    assert details["onset"].isna().all(), details[["dataset", "onset", "share_above_init"]]
    turns = findings.information_finding(store.info_turns(suite.name)).details
    assert set(turns["dataset"]) == set(config.datasets)
    assert (turns["turning"] == 0).all(), turns
    # The tests ran on numbers: every dataset had defined I(X;T) curves to test.
    assert (turns["curves"] > 0).all()
