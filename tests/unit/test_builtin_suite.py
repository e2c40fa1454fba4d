"""Unit tests of the built-in suite's pieces: presets, schedules, corpus split, tokenizer,
chat template, loss mask, packing, batching and the CLI wiring. No pre-training runs here
(see tests/integration/test_pretrain.py)."""

from __future__ import annotations

import argparse
import gzip
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from precompute import pretrain as pretrain_cli
from trustdyn.suites.base import SuiteError
from trustdyn.suites.builtin import PRESETS, Preset, load_suite, pretrain, suite_dir
from trustdyn.suites.builtin_chat import (
    IGNORE_INDEX,
    NO,
    TASK_SHARE,
    YES,
    ChatPair,
    answer_logprobs,
    collate,
    encode_pair,
    encode_pairs,
    gloss_pairs,
    parse_gloss,
    sft_mixture,
    task_count,
)
from trustdyn.suites.builtin_data import (
    GLOSSES_FILE,
    PASSAGES_FILE,
    Corpus,
    batch_indices,
    encode_documents,
    load_corpus,
    pack_documents,
    split_corpus,
    tokenizer_hash,
    train_tokenizer,
)
from trustdyn.suites.builtin_presets import get_preset, log_spaced_steps
from trustdyn.suites.builtin_train import build_model, heldout_loss, model_config

TEXTS = [
    "Home Run Derby -- Bobby Abreu won the Derby in 2005 with 41 homers.",
    "Event-driven programming -- the flow of the program is determined by events.",
    'made lively or spirited; "a meal enlivened by the music"; "a spirited debate"',
    "a hole in a board where a knot came out",
    "any infection of the respiratory tract",
    "Is the sky blue? Yes. Does water boil at 50 degrees? No.",
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=320)


def _corpus(n_passages: int = 40, n_glosses: int = 60) -> Corpus:
    passages = tuple(f"Title {i} -- passage number {i} about topic {i % 7}." for i in
                     range(n_passages))
    glosses = tuple(f'gloss {i}; "example {i}"' if i % 2 else f"gloss {i}" for i in
                    range(n_glosses))
    return Corpus(passages, glosses)


# --- presets and schedules -------------------------------------------------------------


def test_presets_are_named_and_ordered_by_size():
    assert set(PRESETS) == {"smoke", "default", "classroom"}
    for name, preset in PRESETS.items():
        assert preset.name == name
        assert preset.checkpoints[0] == 0 and preset.checkpoints[-1] == preset.steps
    smoke, default, classroom = PRESETS["smoke"], PRESETS["default"], PRESETS["classroom"]
    assert smoke.layers * smoke.hidden < default.layers * default.hidden
    assert default.layers * default.hidden < classroom.layers * classroom.hidden
    # Deep enough for "middle layers" to exist; dense enough early for a turn.
    assert len(default.checkpoints) >= 20 and default.layers >= 8
    assert classroom.layers > default.layers
    assert 5 <= len(smoke.checkpoints) <= 8 and smoke.steps <= 30


def test_default_checkpoints_are_dense_early_then_sparse():
    ckpts = PRESETS["default"].checkpoints
    gaps = np.diff(ckpts)
    assert list(ckpts[:5]) == [0, 1, 2, 3, 4]
    assert gaps[-1] > 10 * gaps[0]
    # Gaps never shrink by much as steps grow (roughly geometric spacing).
    assert all(b >= a - 1 for a, b in itertools.pairwise(gaps))


@pytest.mark.parametrize(("total", "count"),
                         [(20, 6), (480, 20), (480, 28), (800, 24), (5, 6), (9, 2)])
def test_log_spaced_steps_has_exact_count_and_ends(total, count):
    steps = log_spaced_steps(total, count)
    assert len(steps) == count
    assert steps[0] == 0 and steps[-1] == total
    assert list(steps) == sorted(set(steps))


def test_log_spaced_steps_rejects_impossible_requests():
    with pytest.raises(ValueError, match="count"):
        log_spaced_steps(5, 7)


def test_preset_validation_rejects_bad_schedules():
    base = PRESETS["smoke"].to_json() | {"checkpoints": (0, 5, 3, 20)}
    with pytest.raises(ValueError, match="checkpoints"):
        Preset(**base)
    with pytest.raises(ValueError, match="heads"):
        Preset(**(PRESETS["smoke"].to_json() | {"checkpoints": (0, 20), "heads": 3}))


def test_lr_schedule_warms_up_then_decays_to_floor():
    preset = PRESETS["default"]
    lrs = [preset.lr_at(step) for step in range(1, preset.steps + 1)]
    warm = preset.warmup_steps
    assert lrs[0] == pytest.approx(preset.lr / warm)
    assert lrs[warm - 1] == pytest.approx(preset.lr)
    assert all(a <= b for a, b in itertools.pairwise(lrs[:warm]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[warm:]))
    assert lrs[-1] == pytest.approx(preset.lr * preset.min_lr_ratio)


def test_unknown_preset_is_a_suite_error_listing_presets(tmp_path):
    for call in (lambda: get_preset("huge"), lambda: suite_dir("huge"),
                 lambda: pretrain("huge", root=tmp_path, progress=False),
                 lambda: load_suite("huge", root=tmp_path)):
        with pytest.raises(SuiteError, match="smoke, default, classroom"):
            call()


def test_get_preset_substitutes_seed():
    assert get_preset("smoke", 7).seed == 7
    assert get_preset("smoke").seed == PRESETS["smoke"].seed


def test_load_suite_before_pretraining_says_how_to_pretrain(tmp_path):
    with pytest.raises(SuiteError, match="python -m precompute pretrain --preset smoke"):
        load_suite("smoke", root=tmp_path)


def test_suite_dir_layout(tmp_path, trustdyn_home):
    assert suite_dir("smoke", tmp_path) == tmp_path / "builtin-smoke"
    assert suite_dir("default") == trustdyn_home / "suites" / "builtin-default"


def test_model_config_follows_preset(tokenizer):
    preset = PRESETS["smoke"]
    config = model_config(preset, tokenizer)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.num_key_value_heads, config.intermediate_size) == (
        preset.hidden, preset.layers, preset.heads, preset.kv_heads, preset.intermediate)
    assert config.vocab_size == len(tokenizer)
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (0, 1, 2)
    assert type(build_model(preset, tokenizer)).__name__ == "LlamaForCausalLM"


def test_build_model_is_seeded(tokenizer):
    preset = PRESETS["smoke"]
    a, b = build_model(preset, tokenizer), build_model(preset, tokenizer)
    c = build_model(get_preset("smoke", 1), tokenizer)
    wa, wb, wc = (m.model.embed_tokens.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


# --- corpus -----------------------------------------------------------------------------


def _write_corpus(folder: Path, n: int = 5, skip: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        PASSAGES_FILE: "\n".join(f"P{i} -- text {i}" for i in range(n)) + "\n",
        GLOSSES_FILE: "\n".join(f'gloss {i}; "ex {i}"' for i in range(n)) + "\n",
    }
    for name, text in files.items():
        if name != skip:
            with gzip.open(folder / name, "wt", encoding="utf-8") as fh:
                fh.write(text)


@pytest.mark.parametrize("missing", [PASSAGES_FILE, GLOSSES_FILE])
def test_missing_corpus_file_is_named(tmp_path, missing):
    _write_corpus(tmp_path, skip=missing)
    with pytest.raises(SuiteError, match=missing):
        load_corpus(corpus_dir=tmp_path)


def test_load_corpus_limits_lines(tmp_path):
    _write_corpus(tmp_path, n=6)
    corpus = load_corpus(limit=3, corpus_dir=tmp_path)
    assert len(corpus.passages) == len(corpus.glosses) == 3
    assert corpus.passages[0] == "P0 -- text 0"


def test_vendored_corpus_is_present_with_licences():
    corpus_dir = Path(__file__).resolve().parents[2] / "data" / "corpus"
    for name in (PASSAGES_FILE, GLOSSES_FILE, "LICENSE-WordNet-3.0.txt"):
        assert (corpus_dir / name).is_file(), name
    readme = (corpus_dir / "README.md").read_text()
    assert "CC BY-SA 3.0" in readme and "WordNet" in readme


def test_split_keeps_heldout_passages_out_of_training():
    corpus = _corpus()
    split = split_corpus(corpus, heldout_fraction=0.2, seed=0)
    train = set(split.train_docs)
    assert split.heldout_passages and train.isdisjoint(split.heldout_passages)
    assert set(split.heldout_passages) <= set(split.heldout_docs)
    assert set(split.train_passages) <= train
    assert sorted(split.train_passages + split.heldout_passages) == sorted(corpus.passages)
    assert train.isdisjoint(split.heldout_docs)
    assert len(train) + len(split.heldout_docs) == len(corpus.passages) + len(corpus.glosses)
    assert set(split.train_glosses) <= train


def test_split_is_seeded():
    corpus = _corpus()
    assert split_corpus(corpus, 0.2, seed=3) == split_corpus(corpus, 0.2, seed=3)
    assert split_corpus(corpus, 0.2, seed=3).heldout_docs != split_corpus(
        corpus, 0.2, seed=4).heldout_docs


# --- tokenizer and chat template ----------------------------------------------------------


def test_tokenizer_training_is_deterministic(tokenizer):
    assert tokenizer_hash(train_tokenizer(TEXTS, 320)) == tokenizer_hash(tokenizer)
    assert tokenizer_hash(train_tokenizer(TEXTS[:-1] * 2, 320)) != tokenizer_hash(tokenizer)


def test_tokenizer_special_tokens_and_padding(tokenizer):
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.padding_side == "left"
    assert len(tokenizer) == 320
    for role in ("<|system|>", "<|user|>", "<|assistant|>"):
        assert len(tokenizer(role, add_special_tokens=False)["input_ids"]) == 1
    ids = tokenizer("a knot")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] != tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a knot"
    batch = tokenizer(["a", "a hole in a board"], padding=True)
    assert batch["input_ids"][0][0] == tokenizer.pad_token_id
    assert batch["attention_mask"][0][-1] == 1


def test_tokenizer_round_trips_through_save(tokenizer, tmp_path):
    from trustdyn.suites.builtin_data import load_tokenizer

    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert tokenizer_hash(loaded) == tokenizer_hash(tokenizer)
    assert loaded.padding_side == "left"
    assert loaded("Is it?")["input_ids"] == tokenizer("Is it?")["input_ids"]


def test_chat_template_renders_turns(tokenizer):
    messages = [{"role": "user", "content": "Is it?"}, {"role": "assistant", "content": "Yes."}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == "<s><|user|>Is it?</s><|assistant|>Yes.</s>"
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt == "<s><|user|>Is it?</s><|assistant|>"
    with pytest.raises(Exception, match="Unknown chat role"):
        tokenizer.apply_chat_template([{"role": "robot", "content": "x"}], tokenize=False)


def test_loss_mask_covers_answer_and_eos_only(tokenizer):
    ids, labels = encode_pair(tokenizer, ChatPair("Is the sky blue?", YES), max_len=512)
    assert len(ids) == len(labels)
    answer = [t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
    assert [lab for lab in labels if lab != IGNORE_INDEX] == answer
    assert tokenizer.decode(answer) == YES + "</s>"
    n_prompt = labels.count(IGNORE_INDEX)
    assert tokenizer.decode(ids[:n_prompt]) == "<s><|user|>Is the sky blue?</s><|assistant|>"


def test_loss_mask_truncation_keeps_answer(tokenizer):
    ids, labels = encode_pair(tokenizer, ChatPair("word " * 100, NO), max_len=16)
    assert len(ids) == len(labels) == 16
    assert tokenizer.decode([t for t, lab in zip(ids, labels, strict=True)
                             if lab != IGNORE_INDEX]) == NO + "</s>"


def test_encode_pairs_equals_rendering_and_tokenising_each_pair(tokenizer):
    pairs = [ChatPair("Is the sky blue?", YES), ChatPair('Explain "a {{ x }}" \0prompt\0', "Def."),
             ChatPair("word " * 40, NO)]

    def one(pair: ChatPair, generation_prompt: bool) -> list[int]:
        messages = [{"role": "user", "content": pair.prompt}]
        if not generation_prompt:
            messages.append({"role": "assistant", "content": pair.answer})
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=generation_prompt)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    for max_len in (512, 16):
        expected = []
        for pair in pairs:
            prompt, full = one(pair, True), one(pair, False)
            labels = [IGNORE_INDEX] * len(prompt) + full[len(prompt):]
            expected.append((full[-max_len:], labels[-max_len:]))
        assert encode_pairs(tokenizer, pairs, max_len) == expected


def test_encode_pairs_refuses_a_template_that_rewrites_contents():
    clone = train_tokenizer(TEXTS, vocab_size=320)
    clone.chat_template = "{% for m in messages %}{{ m['content'] | upper }}{% endfor %}"
    with pytest.raises(ValueError, match="verbatim"):
        encode_pairs(clone, [ChatPair("Is it?", YES)], 512)


def test_collate_right_pads_with_masks():
    batch = collate([([5, 6, 7], [-100, 6, 7]), ([8], [8])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]


# --- chat data ---------------------------------------------------------------------------


def test_parse_gloss_splits_definition_and_examples():
    assert parse_gloss('made lively; "a meal enlivened"; "a spirited debate"') == (
        "made lively", ["a meal enlivened", "a spirited debate"])
    assert parse_gloss("the principal ore of tungsten; found in quartz veins") == (
        "the principal ore of tungsten; found in quartz veins", [])
    assert parse_gloss('x; "a; b"') == ("x", ["a; b"])


def test_gloss_pairs_ask_about_examples():
    pairs = gloss_pairs(['made lively; "a meal enlivened by the music"', "no example here"])
    assert pairs == [ChatPair('Explain the sense used in: "a meal enlivened by the music"',
                              "Made lively.")]


def test_sft_mixture_takes_the_task_share_and_is_seeded():
    task = [ChatPair(f"q{i}", YES) for i in range(5)]
    gloss = [ChatPair(f"g{i}", "Def.") for i in range(50)]
    mix = sft_mixture(task, gloss, 20, seed=0)
    assert len(mix) == 20
    assert task_count(20) == round(TASK_SHARE * 20) == 15
    assert sum(p in task for p in mix) == 15  # cycles the 5 task pairs three times
    assert all(mix.count(p) == 3 for p in task)
    assert mix == sft_mixture(task, gloss, 20, seed=0) != sft_mixture(task, gloss, 20, 1)
    assert sft_mixture(task, [], 7, seed=0).count(task[0]) >= 1


def test_answer_logprobs_batched_equals_one_at_a_time(tokenizer):
    model = build_model(PRESETS["smoke"], tokenizer).eval()
    prompts = ["Is it?", "Is the sky blue today, or not at all?", "No?"]
    batched = answer_logprobs(model, tokenizer, prompts, YES, batch_size=3)
    single = torch.cat([answer_logprobs(model, tokenizer, [p], YES) for p in prompts])
    assert torch.allclose(batched, single, atol=1e-5)
    ids, labels = encode_pair(tokenizer, ChatPair(prompts[0], YES), 512)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
    manual = sum(float(logp[i - 1, ids[i]]) for i in range(len(ids)) if labels[i] != -100)
    assert float(single[0]) == pytest.approx(manual, abs=1e-4)


# --- packing, batching, caching ---------------------------------------------------------------


def test_pack_documents_wraps_each_document_in_bos_eos():
    ids = np.array([10, 11, 12, 20, 30, 31], dtype=np.int32)
    offsets = np.array([0, 3, 4, 6])
    blocks = pack_documents(ids, offsets, seq_len=4, bos_id=1, eos_id=2)
    assert blocks.dtype == torch.int64
    assert blocks.tolist() == [[1, 10, 11, 12], [2, 1, 20, 2], [1, 30, 31, 2]]
    with pytest.raises(SuiteError, match="fewer than one"):
        pack_documents(ids, offsets, seq_len=100, bos_id=1, eos_id=2)


def test_batch_indices_read_each_block_once_per_epoch():
    n_blocks, batch = 10, 4
    seen = torch.cat([batch_indices(step, batch, n_blocks, seed=0) for step in range(1, 6)])
    assert sorted(seen[:10].tolist()) == list(range(10))  # epoch 0
    assert sorted(seen[10:20].tolist()) == list(range(10))  # epoch 1
    assert seen[:10].tolist() != seen[10:20].tolist()
    assert torch.equal(batch_indices(3, batch, n_blocks, 0), seen[8:12])
    assert not torch.equal(batch_indices(1, batch, n_blocks, 1), seen[:4])


def test_encode_documents_caches_by_tokenizer_and_texts(tokenizer, tmp_path):
    docs = TEXTS[:4]
    ids, offsets = encode_documents(tokenizer, docs, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("builtin-tokens-*.npz"))) == 1
    assert ids.tolist()[offsets[1]:offsets[2]] == tokenizer(docs[1], add_special_tokens=False)[
        "input_ids"]
    again = encode_documents(tokenizer, docs, cache_dir=tmp_path)
    assert np.array_equal(again[0], ids) and np.array_equal(again[1], offsets)
    encode_documents(tokenizer, docs[:3], cache_dir=tmp_path)
    assert len(list(tmp_path.glob("builtin-tokens-*.npz"))) == 2


def test_heldout_loss_matches_model_loss(tokenizer):
    model = build_model(PRESETS["smoke"], tokenizer)
    blocks = torch.randint(3, len(tokenizer), (5, 16))
    with torch.no_grad():
        expected = float(model(input_ids=blocks, labels=blocks).loss)
    assert heldout_loss(model, blocks, batch_size=2) == pytest.approx(expected, rel=1e-5)
    assert model.training  # mode restored


# --- CLI ---------------------------------------------------------------------------------


def test_cli_registers_pretrain_subcommand():
    parser = argparse.ArgumentParser()
    pretrain_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["pretrain", "--preset", "smoke", "--seed", "3", "--root", "x"])
    assert (args.preset, args.seed, args.root) == ("smoke", 3, Path("x"))
    assert args.handler is pretrain_cli.run
    with pytest.raises(SystemExit):
        parser.parse_args(["pretrain", "--preset", "huge"])


def test_run_preset_names_study_sizes_for_suites_other_than_builtin(monkeypatch):
    """`run --suite smollm2-instruct --preset classroom` (a README command) must not pass
    the preset to the suite as a built-in preset: it names SmolLM2's study sizes."""
    from precompute import commands
    from precompute.__main__ import build_parser
    from precompute.study import sizes_for, study_config

    assert sizes_for("smollm2-instruct", "classroom") == "smollm2-classroom"
    assert sizes_for("builtin", "default") == "default" and sizes_for("amber", None) is None
    assert study_config(sizes_for("smollm2-instruct", "default")).steer_eval is None
    seen = {}

    def fake_get_suite(name, *, preset=None, **options):
        seen.update(name=name, preset=preset)
        return "suite"

    monkeypatch.setattr(commands, "get_suite", fake_get_suite)
    args = build_parser().parse_args(["run", "--suite", "smollm2-instruct", "--preset",
                                      "classroom", "--quiet"])
    _suite, _store, config = commands._resolve(args)
    assert seen == {"name": "smollm2-instruct", "preset": None}
    assert config == study_config("smollm2-classroom")


def test_run_rejects_an_unknown_dtype_before_any_work(capsys):
    from precompute import commands

    parser = argparse.ArgumentParser()
    commands.add_run_commands(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["run", "--dtype", "bfloat16"]).dtype == "bfloat16"
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--dtype", "bf16"])
    assert "invalid choice: 'bf16'" in capsys.readouterr().err
