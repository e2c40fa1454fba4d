"""Suites a user brings: a local folder of checkpoints, or a suite described in a TOML file.

Folder suites (:func:`local_suite`): one Hugging Face checkpoint folder per subfolder
(``config.json``, weights, tokenizer). An optional ``manifest.json`` or ``manifest.jsonl``
gives each folder's step, tokens and which one is the chat model::

    {"name": "my-run", "description": "...",
     "checkpoints": [{"folder": "ckpt-a", "step": 100, "tokens": 409600},
                     {"folder": "sft", "step": 1000, "chat": true}]}

(``manifest.json`` may also be a bare list of those entries; ``manifest.jsonl`` holds one
entry per line.) Without a manifest, steps are parsed from folder names such as
``step-123``, ``step123``, ``ckpt_012`` or ``checkpoint-500``; if any name has no number,
folders are ordered by name and numbered 0, 1, 2... A subfolder called ``chat`` is the
chat model. Folders without a config or weights are skipped with a warning naming them.

TOML suites (:func:`toml_suite`) mix hub revisions and local folders::

    name = "my-suite"
    description = "Pythia-160M at three steps"
    layers = "gpt_neox.layers"          # optional: dotted path to the decoder blocks
    trust_remote_code = false           # optional: run the checkpoints' own model code

    [[checkpoints]]
    source = "EleutherAI/pythia-160m"   # hub id, or a path starting with ./ ../ / or ~
    revision = "step1000"               # optional
    step = 1000
    tokens = 2097152000                 # optional
    name = "step1000"                   # optional, defaults to the revision or folder name

    [chat]                              # optional, same keys; step defaults to -1
    source = "./my-chat-model"

Relative paths are resolved against the TOML file's folder. ``layers`` (needed only when
trustdyn cannot find the decoder blocks itself) and ``trust_remote_code`` (off unless set)
apply to every checkpoint; a ``[[checkpoints]]`` or ``[chat]`` table may set its own.
"""

from __future__ import annotations

import json
import re
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustdyn.suites.base import CheckpointRef, Suite, SuiteError

MANIFESTS = ("manifest.json", "manifest.jsonl")
CHAT_FOLDER = "chat"
_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_STEP_IN_NAME = re.compile(r"(?:step|ckpt|checkpoint|iter)[-_]?(\d+)", re.IGNORECASE)


class LocalSuiteWarning(UserWarning):
    """A checkpoint folder was skipped (corrupt, incomplete or not in the manifest)."""


@dataclass(frozen=True)
class _Entry:
    """One checkpoint folder as described by a manifest or its name."""

    folder: str
    name: str
    step: int
    tokens: int | None = None
    chat: bool = False


# --- checkpoint folders ---------------------------------------------------------------

def checkpoint_problem(folder: Path) -> str | None:
    """Return why ``folder`` is not a loadable checkpoint, or ``None`` if it looks fine."""
    config = folder / "config.json"
    if not config.is_file():
        return "no config.json"
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return f"config.json is not valid JSON ({error})"
    if not any(any(folder.glob(pattern)) for pattern in _WEIGHT_GLOBS):
        return "no weights (model.safetensors or pytorch_model.bin)"
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        return "no tokenizer files (tokenizer.json or tokenizer_config.json)"
    return None


def _skip(folder: Path, reason: str) -> None:
    warnings.warn(f"Skipping checkpoint folder {folder.name!r} in {folder.parent}: {reason}.",
                  LocalSuiteWarning, stacklevel=4)


def step_from_name(name: str) -> int | None:
    """Return the step encoded in a folder name like ``step-123`` or ``ckpt_012``."""
    match = _STEP_IN_NAME.search(name)
    return int(match[1]) if match else None


def _entries_from_names(names: list[str]) -> list[_Entry]:
    """Take steps from folder names; if any name has none, order by name and number."""
    regular = [n for n in names if n != CHAT_FOLDER]
    steps = [step_from_name(n) for n in regular]
    if all(s is not None for s in steps):
        entries = [_Entry(n, n, s) for n, s in zip(regular, steps, strict=True) if s is not None]
    else:
        entries = [_Entry(n, n, i) for i, n in enumerate(sorted(regular))]
    if CHAT_FOLDER in names:
        entries.append(_Entry(CHAT_FOLDER, CHAT_FOLDER, -1, chat=True))
    return entries


# --- manifests --------------------------------------------------------------------------

def _manifest_rows(path: Path) -> tuple[dict[str, Any], list[Any]]:
    """Return ``(suite-level fields, checkpoint rows)`` of a manifest file."""
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            return {}, [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except ValueError as error:
        raise SuiteError(f"{path}: not valid JSON ({error}).") from error
    if isinstance(data, list):
        return {}, data
    if isinstance(data, dict) and isinstance(data.get("checkpoints"), list):
        return data, data["checkpoints"]
    raise SuiteError(f"{path}: expected a list of checkpoints or an object with a "
                     "'checkpoints' list.")


def _int_field(where: str, row: Mapping[str, Any], key: str, *, required: bool,
               default: int | None = None, minimum: int | None = 0) -> int | None:
    """Read an integer field, naming the file and field when it is wrong."""
    if key not in row:
        if required:
            raise SuiteError(f"{where}: missing required field {key!r}.")
        return default
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise SuiteError(f"{where}: field {key!r} must be an integer, got {value!r}.")
    if minimum is not None and value < minimum:
        raise SuiteError(f"{where}: field {key!r} must be >= {minimum}, got {value}.")
    return value


def _str_field(where: str, row: Mapping[str, Any], key: str, *, required: bool
               ) -> str | None:
    if key not in row:
        if required:
            raise SuiteError(f"{where}: missing required field {key!r}.")
        return None
    value = row[key]
    if not isinstance(value, str) or not value.strip():
        raise SuiteError(f"{where}: field {key!r} must be a non-empty string, got {value!r}.")
    return value


def _check_keys(where: str, row: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(row) - allowed)
    if unknown:
        raise SuiteError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; "
                         f"allowed: {', '.join(sorted(allowed))}.")


def _manifest_entry(path: Path, index: int, row: Any) -> _Entry:
    where = f"{path}: checkpoints[{index}]"
    if not isinstance(row, dict):
        raise SuiteError(f"{where}: expected an object, got {row!r}.")
    _check_keys(where, row, {"folder", "name", "step", "tokens", "chat"})
    folder = _str_field(where, row, "folder", required=True)
    assert folder is not None
    chat = row.get("chat", False)
    if not isinstance(chat, bool):
        raise SuiteError(f"{where}: field 'chat' must be true or false, got {chat!r}.")
    step = _int_field(where, row, "step", required=not chat, default=-1,
                      minimum=None if chat else 0)
    assert step is not None
    return _Entry(folder=folder, name=_str_field(where, row, "name", required=False) or folder,
                  step=step, tokens=_int_field(where, row, "tokens", required=False),
                  chat=chat)


def _read_manifest(root: Path) -> tuple[dict[str, Any], list[_Entry]] | None:
    for file_name in MANIFESTS:
        path = root / file_name
        if path.is_file():
            meta, rows = _manifest_rows(path)
            return meta, [_manifest_entry(path, i, row) for i, row in enumerate(rows)]
    return None


# --- folder suites ----------------------------------------------------------------------

def _usable(root: Path, entries: list[_Entry], listed: bool) -> list[_Entry]:
    """Drop entries whose folder is missing or corrupt, warning for each."""
    kept = []
    for entry in entries:
        folder = root / entry.folder
        problem = "listed in the manifest but missing" if listed and not folder.is_dir() \
            else checkpoint_problem(folder)
        if problem:
            _skip(folder, problem)
        else:
            kept.append(entry)
    return kept


def _build_suite(name: str, description: str, entries: list[_Entry], root: Path,
                 where: str) -> Suite:
    """Order entries by step, check names, and turn them into refs."""
    names = [e.name for e in entries]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SuiteError(f"{where}: checkpoint names must be unique; repeated: "
                         f"{', '.join(duplicated)}.")
    chats = [e for e in entries if e.chat]
    if len(chats) > 1:
        chat_names = ", ".join(e.name for e in chats)
        raise SuiteError(f"{where}: at most one chat model, got {chat_names}.")
    regular = sorted((e for e in entries if not e.chat), key=lambda e: (e.step, e.name))
    if not regular:
        raise SuiteError(f"{where}: no usable checkpoint folders (each needs config.json, "
                         "weights and tokenizer files).")

    def ref(entry: _Entry) -> CheckpointRef:
        return CheckpointRef(suite=name, name=entry.name, step=entry.step, tokens=entry.tokens,
                             source=str((root / entry.folder).resolve()), is_chat=entry.chat)

    return Suite(name=name, description=description,
                 checkpoints=tuple(ref(e) for e in regular),
                 chat=ref(chats[0]) if chats else None)


def local_suite(folder: str | Path, *, name: str | None = None) -> Suite:
    """Return the suite of checkpoint subfolders in ``folder`` (see the module docstring).

    Args:
        folder: A folder with one checkpoint per subfolder.
        name: Suite name; defaults to the manifest's ``name`` or ``local-<folder name>``.

    Raises:
        SuiteError: if the folder is missing, the manifest is invalid (naming the file
            and field), or no usable checkpoint remains. Corrupt subfolders only warn
            (:class:`LocalSuiteWarning`) and are skipped.

    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise SuiteError(f"Checkpoint folder {root} does not exist.")
    manifest = _read_manifest(root)
    if manifest is None:
        meta: dict[str, Any] = {}
        subfolders = sorted(p.name for p in root.iterdir()
                            if p.is_dir() and not p.name.startswith("."))
        entries = _usable(root, _entries_from_names(subfolders), listed=False)
    else:
        meta, listed = manifest
        entries = _usable(root, listed, listed=True)
        listed_folders = {e.folder for e in listed}
        for extra in sorted(p for p in root.iterdir() if p.is_dir()
                            and not p.name.startswith(".") and p.name not in listed_folders):
            _skip(extra, "not listed in the manifest")
    suite_name = name or meta.get("name") or f"local-{root.resolve().name}"
    description = meta.get("description") or f"Local checkpoints in {root.resolve()}"
    return _build_suite(str(suite_name), str(description), entries, root, str(root))


# --- TOML suites ------------------------------------------------------------------------

_TOML_LOADING = {"layers", "trust_remote_code"}
_TOML_TOP = {"name", "description", "checkpoints", "chat", *_TOML_LOADING}
_TOML_CKPT = {"name", "source", "revision", "step", "tokens", *_TOML_LOADING}


def _toml_source(where: str, row: Mapping[str, Any], base: Path) -> str:
    """Return a hub id as is, or an existing folder resolved against the TOML's folder."""
    source = _str_field(where, row, "source", required=True)
    assert source is not None
    if not source.startswith(("/", ".", "~")):
        return source
    path = Path(source).expanduser()
    path = path if path.is_absolute() else (base / path)
    if not path.is_dir():
        raise SuiteError(f"{where}: field 'source' points at {path}, which is not a folder.")
    return str(path.resolve())


def _toml_loading(where: str, row: Mapping[str, Any], default: Mapping[str, Any]
                  ) -> dict[str, Any]:
    """Return the ``layers`` and ``trust_remote_code`` of a table (or the suite's)."""
    trust = row.get("trust_remote_code", default.get("trust_remote_code", False))
    if not isinstance(trust, bool):
        raise SuiteError(f"{where}: field 'trust_remote_code' must be true or false, "
                         f"got {trust!r}.")
    layers = _str_field(where, row, "layers", required=False) or default.get("layers")
    return {"layers": layers, "trust_remote_code": trust}


def _toml_ref(path: Path, where: str, row: Any, suite: str, *, chat: bool,
              loading: Mapping[str, Any]) -> CheckpointRef:
    if not isinstance(row, dict):
        raise SuiteError(f"{where}: expected a table, got {row!r}.")
    _check_keys(where, row, _TOML_CKPT)
    source = _toml_source(where, row, path.parent)
    revision = _str_field(where, row, "revision", required=False)
    step = _int_field(where, row, "step", required=not chat, default=-1,
                      minimum=None if chat else 0)
    assert step is not None
    default_name = revision or Path(source).name or source
    name = _str_field(where, row, "name", required=False) or default_name
    return CheckpointRef(suite=suite, name=name, step=step, source=source, revision=revision,
                         tokens=_int_field(where, row, "tokens", required=False),
                         is_chat=chat, extra={"toml": str(path)},
                         **_toml_loading(where, row, loading))


def toml_suite(path: str | Path) -> Suite:
    """Return the suite described by a TOML file (see the module docstring for the format).

    Raises:
        SuiteError: for a missing or unparsable file, or an invalid field, naming the file
            and the field (e.g. ``suite.toml: checkpoints[2]: field 'step' must be ...``).

    """
    file = Path(path).expanduser()
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as error:
        raise SuiteError(f"Cannot read suite file {file}: {error}.") from error
    except tomllib.TOMLDecodeError as error:
        raise SuiteError(f"{file}: not valid TOML ({error}).") from error
    where = str(file)
    _check_keys(where, data, _TOML_TOP)
    name = _str_field(where, data, "name", required=True)
    assert name is not None
    rows = data.get("checkpoints")
    if not isinstance(rows, list) or not rows:
        raise SuiteError(f"{where}: needs at least one [[checkpoints]] table.")
    loading = _toml_loading(where, data, {})
    refs = [_toml_ref(file, f"{where}: checkpoints[{i}]", row, name, chat=False,
                      loading=loading) for i, row in enumerate(rows)]
    chat = (_toml_ref(file, f"{where}: [chat]", data["chat"], name, chat=True,
                      loading=loading) if "chat" in data else None)
    names = [r.name for r in refs] + ([chat.name] if chat else [])
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SuiteError(f"{where}: checkpoint names must be unique; repeated: "
                         f"{', '.join(duplicated)} (set `name` to tell them apart).")
    description = _str_field(where, data, "description", required=False) or f"Suite from {file}"
    return Suite(name=name, description=description,
                 checkpoints=tuple(sorted(refs, key=lambda r: r.step)), chat=chat)
