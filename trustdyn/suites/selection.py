"""Which checkpoints of a suite a study uses: explicit names, a step range, every k-th, log spacing.

A :class:`RevisionSelection` is applied by :func:`select_revisions` to any
:class:`~trustdyn.suites.base.Suite` (built-in, SmolLM2, hub, folder, TOML) in a fixed order:
keep the named ``revisions`` (or the checkpoints whose step lies in ``steps``), then thin
what is left to every ``every``-th or to ``log_spaced`` revisions nearest to log-spaced
steps. Thinning always keeps the last checkpoint (the one a chat model is usually tuned
from), log spacing also the first, and the suite's chat model is never dropped. Names that
match no checkpoint are reported with close matches before any work starts; so is a
selection that keeps nothing. The CLI flags (``--revisions``, ``--steps``, ``--every``,
``--log-spaced``) and a study file's ``[revisions]`` section map onto these fields.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from trustdyn.suites.base import CheckpointRef, Suite, SuiteError

# A step range's open upper end: larger than any optimiser step, still a plain int.
_NO_UPPER_BOUND = 2 ** 62


@dataclass(frozen=True)
class RevisionSelection:
    """Which pre-training checkpoints of a suite to keep (all of them by default).

    Attributes:
        revisions: Explicit checkpoint names or hub revisions (``"step1000"``,
            ``"ckpt_010"``, ``"main"``), kept in step order; ``None`` keeps every
            checkpoint. Naming the chat model is allowed and changes nothing.
        steps: Inclusive ``(first, last)`` optimiser-step range; ``None`` = no bound.
            Cannot be combined with ``revisions``.
        every: Keep every ``every``-th of the selected checkpoints, plus the last one.
        log_spaced: Keep this many checkpoints (at least 2), those nearest to steps spaced
            evenly in ``log(1 + step)`` between the first and last selected checkpoint,
            both of which are always kept; ``None`` = no log thinning.
            Cannot be combined with ``every``.

    """

    revisions: tuple[str, ...] | None = None
    steps: tuple[int, int] | None = None
    every: int = 1
    log_spaced: int | None = None

    def __post_init__(self) -> None:
        if self.revisions is not None:
            _check_revisions(self.revisions)
        if self.steps is not None:
            _check_steps(self.steps)
        _check_positive("every", self.every, minimum=1)
        if self.log_spaced is not None:
            _check_positive("log_spaced", self.log_spaced, minimum=2)
        if self.revisions is not None and self.steps is not None:
            raise SuiteError("Give either revision names or a step range, not both: a named "
                             "revision outside the range would be dropped silently.")
        if self.every != 1 and self.log_spaced is not None:
            raise SuiteError(f"Give either every={self.every} or log_spaced="
                             f"{self.log_spaced}, not both: each one thins the suite.")


def _check_positive(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SuiteError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")


def _check_revisions(revisions: object) -> None:
    if not isinstance(revisions, tuple) or not all(isinstance(r, str) and r.strip()
                                                    for r in revisions):
        raise SuiteError(f"`revisions` must be a tuple of non-empty names, got {revisions!r}.")
    if not revisions:
        raise SuiteError("No revisions selected: `revisions` is empty; name at least one, or "
                         "leave it out to keep every checkpoint.")
    repeated = sorted({r for r in revisions if revisions.count(r) > 1})
    if repeated:
        raise SuiteError(f"`revisions` names {', '.join(repeated)} more than once.")


def _check_steps(steps: object) -> None:
    if (not isinstance(steps, tuple) or len(steps) != 2
            or any(isinstance(s, bool) or not isinstance(s, int) for s in steps)):
        raise SuiteError(f"`steps` must be a (first, last) pair of integers, got {steps!r}.")
    first, last = steps
    if first < 0 or first > last:
        raise SuiteError(f"`steps` must satisfy 0 <= first <= last, got {first}:{last}.")


def parse_revision_list(text: str) -> tuple[str, ...]:
    """Parse ``"a,b,c"`` (the ``--revisions`` flag) into names, ignoring spaces around them.

    Raises:
        SuiteError: if a name is empty (``"a,,b"`` or a trailing comma).

    """
    names = tuple(part.strip() for part in text.split(","))
    if not all(names):
        raise SuiteError(f"--revisions takes comma-separated names (a,b,c), got {text!r} "
                         "with an empty name.")
    return names


def parse_step_range(text: str) -> tuple[int, int]:
    """Parse ``"FIRST:LAST"`` (the ``--steps`` flag; either side may be empty: ``":5000"``).

    An empty ``FIRST`` means 0 and an empty ``LAST`` means no upper bound.

    Raises:
        SuiteError: if the text is not two integers around one colon.

    """
    first, sep, last = text.partition(":")
    try:
        bounds = (int(first) if first.strip() else 0,
                  int(last) if last.strip() else _NO_UPPER_BOUND)
    except ValueError:
        bounds = None
    if not sep or bounds is None:
        raise SuiteError(f"--steps takes FIRST:LAST (integers, e.g. 0:5000 or 1000:), got "
                         f"{text!r}.")
    return bounds


def _unknown_revisions(suite: str, wanted: Sequence[str], known: Sequence[str]) -> SuiteError:
    """Build the error for revision names the suite lacks, with close matches and examples."""
    parts = []
    for name in wanted:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        parts.append(f"{name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    some = [*known[:3], "...", *known[-3:]] if len(known) > 6 else list(known)
    return SuiteError(f"Suite {suite!r} has no revision {' or '.join(parts)}. It has "
                      f"{len(known)}, e.g. {', '.join(some)}.")


def subsample(items: Sequence[CheckpointRef], every: int) -> tuple[CheckpointRef, ...]:
    """Keep every ``every``-th checkpoint, always including the last one."""
    _check_positive("every", every, minimum=1)
    kept = list(items[::every])
    if items and kept[-1] is not items[-1]:
        kept.append(items[-1])
    return tuple(kept)


def log_spaced(items: Sequence[CheckpointRef], count: int) -> tuple[CheckpointRef, ...]:
    """Keep the ``count`` checkpoints nearest to log-spaced steps, first and last included.

    Targets are spaced evenly in ``log(1 + step)`` (so step 0 has a place) from the first
    checkpoint's step to the last one's; each target takes the nearest checkpoint not yet
    taken, so the result has ``min(count, len(items))`` distinct checkpoints, in their
    original order.
    """
    _check_positive("log_spaced", count, minimum=2)
    if len(items) <= count:
        return tuple(items)
    position = [math.log1p(max(ref.step, 0)) for ref in items]
    low, high = min(position), max(position)
    # Endpoints first, so an inner target never takes the first or last checkpoint.
    inner = (low + (high - low) * k / (count - 1) for k in range(1, count - 1))
    taken: set[int] = set()
    for target in (low, high, *inner):
        free = (i for i in range(len(items)) if i not in taken)
        taken.add(min(free, key=lambda i: (abs(position[i] - target), i)))
    return tuple(items[i] for i in sorted(taken))


def _named(suite: Suite, wanted: Sequence[str]) -> tuple[CheckpointRef, ...]:
    """Return the checkpoints named (by name or hub revision) in ``wanted``, in suite order."""
    by_name = {ref.revision: ref for ref in suite.checkpoints if ref.revision}
    by_name |= {ref.name: ref for ref in suite.checkpoints}
    chat = {suite.chat.name} if suite.chat is not None else set()
    unknown = [name for name in wanted if name not in by_name and name not in chat]
    if unknown:
        raise _unknown_revisions(suite.name, unknown, [ref.name for ref in suite.checkpoints])
    chosen = {id(by_name[name]) for name in wanted if name in by_name}
    return tuple(ref for ref in suite.checkpoints if id(ref) in chosen)


def _in_range(suite: Suite, steps: tuple[int, int]) -> tuple[CheckpointRef, ...]:
    first, last = steps
    kept = tuple(ref for ref in suite.checkpoints if first <= ref.step <= last)
    if not kept:
        found = [ref.step for ref in suite.checkpoints]
        shown = f"{min(found)} to {max(found)}" if found else "none"
        upper = "" if last == _NO_UPPER_BOUND else str(last)
        raise SuiteError(f"No checkpoint of suite {suite.name!r} has a step in {first}:{upper} "
                         f"(its steps run from {shown}); widen --steps.")
    return kept


def select_revisions(suite: Suite, selection: RevisionSelection) -> Suite:
    """Return ``suite`` with only the selected pre-training checkpoints (the chat model kept).

    Raises:
        SuiteError: naming every unknown revision (with close matches), or saying why
            the selection keeps no checkpoint.

    """
    refs = suite.checkpoints
    if selection.revisions is not None:
        refs = _named(suite, selection.revisions)
    if selection.steps is not None:
        refs = _in_range(suite, selection.steps)
    if not refs:
        raise SuiteError(f"The revision selection keeps no pre-training checkpoint of suite "
                         f"{suite.name!r} (only its chat model was named); name at least one "
                         "other revision.")
    refs = subsample(refs, selection.every)
    if selection.log_spaced is not None:
        refs = log_spaced(refs, selection.log_spaced)
    return replace(suite, checkpoints=refs)
