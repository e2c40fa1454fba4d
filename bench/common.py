"""Shared benchmark helpers: environment capture, timing, thread limits, JSON results.

Benchmarks are plain scripts that print ratios against a baseline measured in the same
process on the same data; they never assert on time. Each saves what it measured, with the
environment it ran in (CPU, threads, library versions, load average — timings on a shared
machine mean little without the load), to ``bench/results/<name>.json``.

Typical use::

    from bench.common import environment, median_time, write_result

    seconds, result = median_time(lambda: work(), repeats=3)
    write_result("my_bench", {"seconds": seconds})
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
T = TypeVar("T")


def cpu_model() -> str:
    """Return the CPU model name (from /proc/cpuinfo on Linux, else ``platform``)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        return str(__import__(module).__version__)
    except (ImportError, AttributeError):
        return None


def environment() -> dict[str, Any]:
    """Return what timings depend on: CPU, cores, threads, load and library versions."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    env: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m_5m_15m": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    for module in ("transformers", "sklearn", "scipy"):
        env[module] = _version(module)
    with contextlib.suppress(Exception):
        from trustdyn.provenance import code_version

        env["code_version"] = code_version()
    return env


def contention_note() -> str:
    """Return a one-line note on machine load, to print next to timings."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    cores = os.cpu_count() or 1
    busy = "under contention" if load > 0.75 * cores else "on a quiet machine"
    return f"load average {load:.1f} on {cores} cores ({busy}); read ratios, not seconds"


def median_time(fn: Callable[[], T], *, repeats: int = 1, warmup: int = 0) -> tuple[float, T]:
    """Run ``fn`` ``warmup + repeats`` times; return (median timed seconds, last result)."""
    result: T
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def interleaved_medians(methods: dict[str, Callable[[], Any]], repeats: int = 1
                        ) -> tuple[dict[str, float], dict[str, Any]]:
    """Time several methods in interleaved rounds; return (median seconds, last results).

    Round-robin order means a burst of load from other processes hits every method rather
    than whichever happened to run then, which matters on a shared machine.
    """
    times: dict[str, list[float]] = {name: [] for name in methods}
    results: dict[str, Any] = {}
    for _ in range(max(1, repeats)):
        for name, fn in methods.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}, results


def matmul_peak_gflops(size: int = 2048, repeats: int = 3, dtype: torch.dtype = torch.float32
                       ) -> float:
    """Measure this machine's dense matmul rate (best of ``repeats``) in GFLOP/s.

    The best rather than the median run, because the point is the attainable ceiling that
    other timings are compared with.
    """
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen, dtype=dtype)
    b = torch.randn(size, size, generator=gen, dtype=dtype)
    torch.matmul(a, b)  # warm-up: thread pool and allocator
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


@contextlib.contextmanager
def thread_limit(threads: int | None) -> Iterator[None]:
    """Limit torch, BLAS and OpenMP pools to ``threads`` for the block (None: unchanged).

    Uses ``threadpoolctl`` (a scikit-learn dependency) for the native pools when present.
    """
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            yield
        else:
            with threadpool_limits(limits=threads):
                yield
    finally:
        torch.set_num_threads(previous)


def ratio(baseline_s: float, ours_s: float) -> float:
    """Return how many times faster ``ours`` is than the baseline (inf if ours took 0 s)."""
    return baseline_s / ours_s if ours_s > 0 else math.inf


def _jsonable(value: Any) -> Any:
    """Convert numpy/torch scalars and arrays, tuples and paths for ``json.dumps``."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray | torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_result(name: str, payload: dict[str, Any], directory: Path | None = None) -> Path:
    """Write ``payload`` plus environment and timestamp to ``<directory>/<name>.json``.

    Written to a temporary file and renamed, so an interrupted run never leaves a
    truncated result behind.

    Returns:
        The path written.
    """
    out_dir = directory or RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    document = {
        "benchmark": name,
        "timestamp_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment(),
        "results": payload,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_jsonable(document), indent=2) + "\n")
    tmp.replace(path)
    return path
