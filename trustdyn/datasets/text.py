"""Text cleaning shared by every statement, and question normalisation for matching.

:func:`clean_text` decodes Excel/OpenXML escapes such as ``_x000D_``, HTML entities and
UTF-8 read as cp1252 ("mojibake"), then normalises whitespace while keeping tabs
(TruthfulQA statements are ``Q: …<TAB>A: …``).
"""

from __future__ import annotations

import html
import re

_OPENXML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")
# Sequences that only appear when UTF-8 bytes were decoded as cp1252/latin-1.
_MOJIBAKE_MARKERS = ("Ã", "Â", "â€")
_CURLY_QUOTES = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"'})


def normalise_whitespace(text: str) -> str:
    """Collapse whitespace runs to one space and strip, keeping tabs as field separators.

    TruthfulQA statements separate question and answer with a single tab, so tabs are kept
    (with the spaces around them removed) while newlines, carriage returns, no-break
    spaces and repeated spaces become single spaces.
    """
    return "\t".join(" ".join(part.split()) for part in text.split("\t")).strip()


def _repair_mojibake_run(run: str) -> str:
    """Undo up to three rounds of UTF-8-read-as-cp1252 on one run of non-ASCII characters.

    Correct text almost never survives the round trip (its cp1252 bytes are not valid
    UTF-8), so a run is changed only when it decodes cleanly.
    """
    for _ in range(3):
        try:
            fixed = run.encode("cp1252").decode("utf-8")
        except UnicodeError:
            break
        if fixed == run:
            break
        run = fixed
    return run


def clean_text(text: str) -> str:
    """Return ``text`` with file-format artefacts removed and whitespace normalised.

    Applied identically to every statement (builtin, user file, hub dataset):

    1. OpenXML escapes written by Excel (``_x000D_`` = carriage return) are decoded;
    2. HTML entities (``&amp;``, ``&#8220;``) are unescaped;
    3. mojibake (``ItÃ¢â‚¬â„¢s``) is repaired where it decodes cleanly;
    4. whitespace is normalised by :func:`normalise_whitespace`.
    """
    if "_x" in text:
        text = _OPENXML_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    if "&" in text:
        text = html.unescape(text)
    if any(marker in text for marker in _MOJIBAKE_MARKERS):
        text = _NON_ASCII_RUN.sub(lambda m: _repair_mojibake_run(m.group(0)), text)
    return normalise_whitespace(text)


_BACKSLASH_UNICODE = re.compile(r"\\+u([0-9a-fA-F]{4})")
_BACKSLASH_WHITESPACE = re.compile(r"\\+[nrt]")
_BACKSLASH_QUOTE = re.compile(r"\\+(['\"])")


def unescape_backslashes(text: str) -> str:
    r"""Decode literal backslash escapes left by a ``repr``-style export (opt-in, builtins only).

    ``\n``, ``\r``, ``\t`` (any number of backslashes) become spaces, ``\'``/``\"``
    the bare quote, ``\u2019`` its character, and CSV-doubled quotes ``""`` one quote.
    Not part of :func:`clean_text`: in users' text a backslash may be meant literally.
    """
    text = _BACKSLASH_UNICODE.sub(lambda m: chr(int(m.group(1), 16)), text)
    text = _BACKSLASH_WHITESPACE.sub(" ", text)
    text = _BACKSLASH_QUOTE.sub(lambda m: m.group(1), text)
    return text.replace('""', '"')


def normalise_question(text: str) -> str:
    """Return the matching key for a question: cleaned, case-folded, straight quotes."""
    return " ".join(clean_text(text).translate(_CURLY_QUOTES).casefold().split())


_TRUTHFULQA_STATEMENT = re.compile(r"^Q:\s*(?P<q>.+?)\tA:\s*(?P<a>.+)$", re.DOTALL)


def truthfulqa_parts(statement: str) -> tuple[str, str]:
    """Return ``(question, answer)`` of a cleaned TruthfulQA statement ``Q: …<TAB>A: …``.

    Raises:
        ValueError: The statement is not in that format.

    """
    match = _TRUTHFULQA_STATEMENT.match(statement)
    if match is None:
        raise ValueError("statement is not 'Q: <question><TAB>A: <answer>'")
    return match.group("q").strip(), match.group("a").strip()


def truthfulqa_question(statement: str) -> str:
    """Return the question of a cleaned TruthfulQA statement ``Q: …<TAB>A: …``.

    Raises:
        ValueError: The statement is not in that format.

    """
    return truthfulqa_parts(statement)[0]


def caseless(text: str) -> str:
    """Return ``text`` lower-cased: an SST-2 sentence and its case-flipped copy share it."""
    return text.lower()
