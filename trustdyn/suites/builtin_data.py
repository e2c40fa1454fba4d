"""Corpus, tokenizer and packed token streams for the built-in pre-training run.

Everything here is a pure function of the vendored corpus in ``data/corpus/``, a preset's
size limits and a seed:

* :func:`load_corpus` reads the three vendored files (missing files are named in the error).
* :func:`split_corpus` holds out a seeded set of Wikipedia passages (and glosses). Held-out
  documents are never pre-trained on, they form the held-out loss slice, and the chat
  task's evaluation items come from the held-out passages only (see ``builtin_task``).
* :func:`train_tokenizer` trains a deterministic byte-level BPE with pad/bos/eos and chat
  role tokens, a chat template and left padding.
* :func:`encode_documents` tokenises once and caches ids under ``generated_dir()/cache``,
  keyed by the tokenizer's hash and the documents' hash; :func:`pack_documents` packs
  them into fixed-length blocks and :func:`batch_indices` gives each step's blocks.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from trustdyn.paths import DATA_DIR, generated_dir
from trustdyn.suites.base import SuiteError

CORPUS_DIR = DATA_DIR / "corpus"
PASSAGES_FILE = "wikipedia_passages.txt.gz"
GLOSSES_FILE = "wordnet_glosses.txt.gz"

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD, BOS, EOS, *ROLE_TOKENS)

# One turn = role token, content, eos. The eos closing an assistant turn is what the chat
# model learns to emit, so generation stops there.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unknown chat role: ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


@dataclass(frozen=True)
class Corpus:
    """The vendored corpus, optionally capped to its first ``limit`` lines per text file."""

    passages: tuple[str, ...]
    glosses: tuple[str, ...]


@dataclass(frozen=True)
class CorpusSplit:
    """A seeded partition of the corpus into pre-training and held-out documents.

    Attributes:
        train_docs: Documents pre-trained on, in a seeded order mixing both sources.
        heldout_docs: Held-out documents (never trained on), in a seeded order.
        train_glosses: Glosses in ``train_docs`` (the chat stage's WordNet source).
        train_passages: Passages in ``train_docs``, in corpus order (chat task training).
        heldout_passages: Passages in ``heldout_docs``, in corpus order (chat task
            evaluation).

    """

    train_docs: tuple[str, ...]
    heldout_docs: tuple[str, ...]
    train_glosses: tuple[str, ...]
    train_passages: tuple[str, ...]
    heldout_passages: tuple[str, ...]


def corpus_file(name: str, corpus_dir: Path | None = None) -> Path:
    """Return the path of a vendored corpus file, checking that it exists.

    Raises:
        SuiteError: naming the missing file and how to restore it.

    """
    path = (corpus_dir or CORPUS_DIR) / name
    if not path.is_file():
        raise SuiteError(
            f"Corpus file {path} is missing. The built-in suite pre-trains on the vendored "
            f"corpus in {path.parent}; restore {name} there (it is tracked in git) and rerun."
        )
    return path


def _read_lines(name: str, limit: int | None, corpus_dir: Path | None) -> tuple[str, ...]:
    with gzip.open(corpus_file(name, corpus_dir), "rt", encoding="utf-8") as fh:
        lines = [line.rstrip("\n") for line in fh]
    return tuple(lines[:limit] if limit is not None else lines)


def load_corpus(limit: int | None = None, corpus_dir: Path | None = None) -> Corpus:
    """Read the passages and glosses.

    Args:
        limit: Keep only the first ``limit`` lines of each text file (tiny presets).
        corpus_dir: Folder holding the corpus (default ``data/corpus``).

    Raises:
        SuiteError: if a file is missing.

    """
    return Corpus(_read_lines(PASSAGES_FILE, limit, corpus_dir),
                  _read_lines(GLOSSES_FILE, limit, corpus_dir))


def split_corpus(corpus: Corpus, heldout_fraction: float, seed: int) -> CorpusSplit:
    """Hold out a seeded ``heldout_fraction`` of passages and of glosses.

    Held-out passages are neither pre-trained on nor used for the chat task's training
    items; they are where its evaluation items come from.
    """
    rng = random.Random(seed)
    n_pass, n_gloss = len(corpus.passages), len(corpus.glosses)
    held_pass = set(rng.sample(range(n_pass), max(1, round(heldout_fraction * n_pass))))
    held_gloss = set(rng.sample(range(n_gloss), max(1, round(heldout_fraction * n_gloss))))
    train_glosses = tuple(g for i, g in enumerate(corpus.glosses) if i not in held_gloss)
    train_passages = tuple(p for i, p in enumerate(corpus.passages) if i not in held_pass)
    train_docs = [*train_passages, *train_glosses]
    heldout_passages = tuple(corpus.passages[i] for i in sorted(held_pass))
    heldout_docs = [*heldout_passages, *(corpus.glosses[i] for i in sorted(held_gloss))]
    rng.shuffle(train_docs)
    rng.shuffle(heldout_docs)
    return CorpusSplit(
        train_docs=tuple(train_docs),
        heldout_docs=tuple(heldout_docs),
        train_glosses=train_glosses,
        train_passages=train_passages,
        heldout_passages=heldout_passages,
    )


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and wrap it as a chat-ready HF tokenizer.

    The trainer is deterministic for the same texts and vocabulary size. Encoding a
    string adds ``<s>`` in front (like Llama), never ``</s>``, so the last token of a
    statement is its own last token.
    """
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer, length=len(texts))
    bos_id = backend.token_to_id(BOS)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, bos_token=BOS, eos_token=EOS,
        extra_special_tokens=list(ROLE_TOKENS), padding_side="left",
        model_max_length=1 << 30,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def load_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by :func:`train_tokenizer` + ``save_pretrained``."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    tokenizer.padding_side = "left"
    return tokenizer


def tokenizer_hash(tokenizer: PreTrainedTokenizerFast) -> str:
    """Return the sha256 of the tokenizer's serialised vocabulary, merges and template."""
    digest = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode())
    digest.update((tokenizer.chat_template or "").encode())
    return digest.hexdigest()


def _texts_hash(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def encode_documents(tokenizer: PreTrainedTokenizerFast, docs: Sequence[str],
                     cache_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise documents (no special tokens), caching the result on disk.

    Returns:
        ``(ids, offsets)``: ``ids`` ``[n_tokens]`` int32 holds every document's ids back
        to back, and document ``i`` is ``ids[offsets[i]:offsets[i + 1]]`` (``offsets`` is
        ``[n_docs + 1]`` int64).

    """
    cache_dir = cache_dir or generated_dir() / "cache"
    key = f"{tokenizer_hash(tokenizer)[:16]}-{_texts_hash(docs)[:16]}"
    path = cache_dir / f"builtin-tokens-{key}.npz"
    if path.is_file():
        with np.load(path) as cached:
            return cached["ids"], cached["offsets"]
    encodings = tokenizer.backend_tokenizer.encode_batch(list(docs), add_special_tokens=False)
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(docs))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.fromiter((i for e in encodings for i in e.ids), dtype=np.int32,
                      count=int(offsets[-1]))
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, ids=ids, offsets=offsets)
    os.replace(tmp, path)
    return ids, offsets


def pack_documents(ids: np.ndarray, offsets: np.ndarray, seq_len: int, bos_id: int,
                   eos_id: int) -> torch.Tensor:
    """Pack documents into one ``<s> doc </s> <s> doc </s> ...`` stream cut into blocks.

    The tail shorter than ``seq_len`` is dropped.

    Returns:
        ``[n_blocks, seq_len]`` int64 token ids.

    Raises:
        SuiteError: if the documents do not fill a single block.

    """
    n_docs = len(offsets) - 1
    stream = np.empty(len(ids) + 2 * n_docs, dtype=np.int64)
    # Document i starts at offsets[i] + 2i in the stream (two specials per earlier doc).
    starts = offsets[:-1] + 2 * np.arange(n_docs)
    ends = offsets[1:] + 2 * np.arange(n_docs) + 1
    stream[starts] = bos_id
    stream[ends] = eos_id
    body = np.ones(len(stream), dtype=bool)
    body[starts] = body[ends] = False
    stream[body] = ids
    n_blocks = len(stream) // seq_len
    if n_blocks == 0:
        raise SuiteError(f"The corpus holds {len(stream)} tokens, fewer than one "
                         f"sequence of {seq_len}; use a preset with a larger corpus.")
    return torch.from_numpy(stream[: n_blocks * seq_len].reshape(n_blocks, seq_len).copy())


def batch_indices(step: int, batch_size: int, n_blocks: int, seed: int) -> torch.Tensor:
    """Return the block indices ``[batch_size]`` that optimiser step ``step`` (1-based) reads.

    Blocks are read in a seeded permutation per epoch, so the data a step sees depends
    only on (step, seed): a resumed run needs no data-loader state beyond the step.
    """
    first = (step - 1) * batch_size
    sample = torch.arange(first, first + batch_size)
    epochs, positions = sample // n_blocks, sample % n_blocks
    out = torch.empty(batch_size, dtype=torch.int64)
    for epoch in torch.unique(epochs).tolist():
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(n_blocks, generator=generator)
        chosen = epochs == epoch
        out[chosen] = perm[positions[chosen]]
    return out
