"""The contrastive (CAA) source: pairing, chat-format prompts, the vector itself, its role."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from trustdyn.blocks import decoder_blocks
from trustdyn.dashboard import tables
from trustdyn.datasets import DatasetCard, ProbeDataset
from trustdyn.evaluation import build_sources, contrastive_vectors
from trustdyn.evaluation.contrastive import ANSWERS, QUESTION, caa_prompts, pair_rows
from trustdyn.evaluation.scoring import chat_text
from trustdyn.schema import CONTRASTIVE_SOURCE, RANDOM_SOURCE

TEXTS = ("the sky is blue", "the sky is green", "water is wet", "water is dry",
         "fire is hot", "fire is cold", "ice is cold", "snow is black", "grass grows")
LABELS = (1, 0, 1, 0, 1, 0, 1, 0, 1)
GROUPS = ("sky", "sky", "water", "water", "fire", "fire", "cold", "cold", "grass")


def _dataset(groups: tuple[str, ...] | None = GROUPS) -> ProbeDataset:
    card = DatasetCard(name="toy", dimension="custom", path="-", label1_meaning="true",
                       label0_meaning="false", desirable_label=1, harmful_label=0, rows=9,
                       n_label0=4, n_label1=5, n_groups=None, rows_raw=9,
                       duplicates_dropped=0, conflicts_dropped=0, texts_cleaned=0,
                       source="", upstream="", license="", sha256="")
    return ProbeDataset("toy", card, TEXTS, np.array(LABELS),
                        None if groups is None else np.array(groups))


def test_pairs_stay_in_their_group_and_are_seeded():
    ds = _dataset()
    pairs = pair_rows(ds, seed=0, max_pairs=None)
    # Four groups hold both labels; "grass" has one label only and stays unpaired.
    assert len(pairs) == 4
    assert (ds.labels[pairs[:, 0]] == 1).all() and (ds.labels[pairs[:, 1]] == 0).all()
    assert (ds.groups[pairs[:, 0]] == ds.groups[pairs[:, 1]]).all()
    np.testing.assert_array_equal(pairs, pair_rows(ds, seed=0, max_pairs=None))
    capped = pair_rows(ds, seed=0, max_pairs=2)
    assert len(capped) == 2 and {tuple(p) for p in capped} <= {tuple(p) for p in pairs}


def test_ungrouped_pairs_span_the_split_and_need_both_labels():
    ds = _dataset(groups=None)
    pairs = pair_rows(ds, seed=3, max_pairs=None)
    assert len(pairs) == 4  # min(5 label-1 rows, 4 label-0 rows)
    assert len(set(pairs[:, 0])) == 4 and set(pairs[:, 1]) == {1, 3, 5, 7}
    with pytest.raises(ValueError, match="no group holds statements of both labels"):
        pair_rows(ds.subset([0, 2, 4]), seed=0, max_pairs=None)


def test_prompts_share_the_user_turn_and_differ_only_in_the_answer(tiny_tokenizer):
    ds = _dataset()
    prompts, picks = caa_prompts(tiny_tokenizer, ds, np.array([[0, 1]]))
    forward = chat_text(tiny_tokenizer, QUESTION.format(first=TEXTS[0], second=TEXTS[1]))
    backward = chat_text(tiny_tokenizer, QUESTION.format(first=TEXTS[1], second=TEXTS[0]))
    assert prompts == [forward + ANSWERS[0], forward + ANSWERS[1],
                       backward + ANSWERS[0], backward + ANSWERS[1]]
    assert forward.startswith("<|user|> Which of these") and forward.endswith("<|assistant|> ")
    # Each letter picks each label once: the letter cancels in the mean difference.
    assert picks.tolist() == [1, 0, 0, 1]


def _last_token_blocks(model, tokenizer, texts, layers):
    """Block outputs at each text's last token, one text per forward pass (no batching)."""
    seen: dict[int, torch.Tensor] = {}

    def reader(ell):
        def hook(_module, _args, out):
            seen[ell] = (out[0] if isinstance(out, tuple) else out)[0, -1]
        return hook

    handles = [decoder_blocks(model)[ell].register_forward_hook(reader(ell)) for ell in layers]
    rows = []
    try:
        for text in texts:
            with torch.no_grad():
                model(torch.tensor([tokenizer(text)["input_ids"]]))
            rows.append(torch.stack([seen[ell] for ell in layers]))
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(rows, dim=1)  # [layers, n, d]


def test_vector_is_the_mean_difference_at_the_answer_token(tiny_llama, tiny_tokenizer):
    ds = _dataset()
    layers = [0, 2]
    result = contrastive_vectors(tiny_llama, tiny_tokenizer, ds, layers, seed=0,
                                 max_pairs=None, max_length=32, batch_size=3,
                                 source="toy/chat contrastive", model_name="tiny")
    prompts, picks = caa_prompts(tiny_tokenizer, ds, pair_rows(ds, seed=0, max_pairs=None))
    answers = _last_token_blocks(tiny_llama, tiny_tokenizer, prompts, layers)
    statements = _last_token_blocks(tiny_llama, tiny_tokenizer, list(TEXTS), layers)
    assert len(prompts) == 16 and result.recipe["pairs"] == 4
    chosen = torch.from_numpy(picks == 1)
    for i, ell in enumerate(layers):
        # In a random tiny model the two class means differ by ~1e-5 of a 0.1 norm (the
        # letter and the order cancel), so the reference is taken in float64 and float32
        # round-off of the means shows at ~1e-4 in the unit direction.
        acts = answers[i].double()
        diff = acts[chosen].mean(0) - acts[~chosen].mean(0)
        unit = diff / diff.norm()
        vector = result.vectors[ell]
        assert vector.layer == ell and vector.toward_label == 1
        assert float(vector.direction.double() @ unit) > 1 - 1e-6
        torch.testing.assert_close(vector.direction.double(), unit, atol=1e-3, rtol=0)
        sigma = float((statements[i].double() @ vector.direction.double()).std(correction=1))
        assert vector.scale == pytest.approx(sigma, rel=1e-5)
    again = contrastive_vectors(tiny_llama, tiny_tokenizer, ds, layers, seed=0,
                                max_pairs=None, max_length=32, batch_size=3,
                                source="toy/chat contrastive", model_name="tiny")
    assert all(torch.equal(again.vectors[ell].direction, result.vectors[ell].direction)
               and again.vectors[ell].scale == result.vectors[ell].scale for ell in layers)


def _stored(layers: list[int], hidden: int = 8) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for checkpoint in ("step-0", "chat"):
        for ell in layers:
            direction = rng.normal(size=hidden)
            rows.append({"checkpoint": checkpoint, "dataset": "toy", "layer": ell,
                         "direction": direction / np.linalg.norm(direction),
                         "scale": 2.0 if checkpoint == "chat" else 0.5, "toward_label": 1,
                         "site": "block_output", "operation": "add", "hidden_size": hidden,
                         "model": checkpoint, "revision": None, "params": "{}"})
    return pd.DataFrame(rows)


def test_contrastive_source_sits_between_chat_and_random_in_the_chat_unit(tiny_llama,
                                                                         tiny_tokenizer):
    result = contrastive_vectors(tiny_llama, tiny_tokenizer, _dataset(), [1], seed=0,
                                 max_pairs=2, max_length=32, batch_size=8,
                                 source="toy/chat contrastive", model_name="tiny")
    hidden = result.vectors[1].hidden_size
    common = {"suite": "toy", "chat": "chat", "pretraining": [("step-0", 0)], "layers": [1],
              "chat_step": 0, "seed": 0}
    sources = build_sources(_stored([1], hidden), **common, contrastive=result)
    assert [s.role for s in sources] == ["pretraining", "chat", CONTRASTIVE_SOURCE, "random"]
    own = sources[2]
    assert own.name == CONTRASTIVE_SOURCE and own.recipe["question"] == QUESTION
    # Target scaling: the chat vector's σ; the contrastive σ is kept as its own unit.
    assert own.vectors[1].scale == 2.0
    assert own.source_sigma[1] == result.vectors[1].scale
    assert torch.equal(own.vectors[1].direction, result.vectors[1].direction)
    paper = build_sources(_stored([1], hidden), **common, scaling="source-sigma",
                          contrastive=result)
    assert paper[2].vectors[1].scale == result.vectors[1].scale
    with pytest.raises(ValueError, match=r"No contrastive vector at layer\(s\) \[0\]"):
        build_sources(_stored([0, 1], hidden), **{**common, "layers": [0, 1]},
                      contrastive=result)


def test_dashboard_names_the_contrastive_source_beyond_the_paper():
    ckpts = pd.DataFrame({"checkpoint": ["step-0", "chat"], "ordinal": [0, 1],
                          "is_chat": [False, True], "step": [0, 10]})
    evals = pd.DataFrame({"vector_source": [RANDOM_SOURCE, CONTRASTIVE_SOURCE, "chat",
                                            "step-0", "none"]})
    assert tables.source_order(evals, ckpts) == ["none", "step-0", "chat", CONTRASTIVE_SOURCE,
                                                 RANDOM_SOURCE]
    assert (tables.source_label(CONTRASTIVE_SOURCE, ckpts)
            == "contrastive (CAA on the chat model; beyond the paper)")
