"""Opt-in timing of a study's parts (extraction, probe fits, bootstrap, …) for profiling.

When the environment variable :data:`TIMINGS_ENV` names a file, every :func:`timed` block
appends one JSON line to it: the part's name, its wall and CPU seconds in this process and
the process id. Worker processes inherit the variable, so one file collects a whole
study's parts; ``python -m bench study`` sets it and sums the parts into its breakdown.
Without the variable a block costs one environment lookup. Timings never enter the study
file: they differ from run to run. Part names nest with ``/`` (``probe/bootstrap`` is
inside ``probe``), so a sum per name never counts a second twice within one name.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TIMINGS_ENV = "TRUSTDYN_TIMINGS"
"""Environment variable naming the JSON-lines file timed parts are appended to."""


@contextlib.contextmanager
def timed(part: str) -> Iterator[None]:
    """Time the block as ``part`` if :data:`TIMINGS_ENV` names a file (see the module).

    Also a decorator: ``@timed("part")`` times every call of the function.
    """
    target = os.environ.get(TIMINGS_ENV)
    if not target:
        yield
        return
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        record = {"part": part, "wall_s": time.perf_counter() - wall,
                  "cpu_s": time.process_time() - cpu, "pid": os.getpid()}
        # One short append per block: O_APPEND keeps lines from several processes whole.
        with open(target, "a", encoding="utf-8") as sink:
            sink.write(json.dumps(record) + "\n")


@dataclass
class PartTotal:
    """One part's timings summed over a file.

    Attributes:
        count: Blocks timed under the name.
        wall_s: Their wall seconds, summed over processes.
        cpu_s: Their CPU seconds (all threads of each process).

    """

    count: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0


def summarise_timings(path: Path) -> dict[str, PartTotal]:
    """Sum a timings file per part name, names in sorted order (a missing file: none)."""
    totals: dict[str, PartTotal] = {}
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    for line in filter(str.strip, lines):
        record = json.loads(line)
        total = totals.setdefault(record["part"], PartTotal())
        total.count += 1
        total.wall_s += float(record["wall_s"])
        total.cpu_s += float(record["cpu_s"])
    return dict(sorted(totals.items()))
