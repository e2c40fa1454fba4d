"""The worker pool (threads and bars per worker, workers that end with their parent) and
the low-priority background job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from functools import partial
from pathlib import Path

import pytest
import torch
from transformers.utils import logging as hf_logging

from precompute.processes import in_background, worker_pool
from trustdyn.paths import REPO_ROOT


def _threads_and_bars() -> tuple[int, bool]:
    return torch.get_num_threads(), hf_logging.is_progress_bar_enabled()


def test_workers_share_the_threads_and_draw_no_transformers_bars() -> None:
    share = max(1, torch.get_num_threads() // 2)
    with worker_pool(2) as pool:
        assert [pool.submit(_threads_and_bars).result() for _ in range(2)] == [(share, False)] * 2


def _record(path: Path) -> None:
    path.write_text(f"{os.getpid()} {os.nice(0) if hasattr(os, 'nice') else 0} "
                    f"{torch.get_num_threads()}", encoding="utf-8")


def _fail() -> None:
    raise RuntimeError("this job fails")


@pytest.mark.skipif(not hasattr(os, "nice"), reason="niceness exists on POSIX systems only")
def test_a_background_job_runs_elsewhere_at_the_lowest_priority_on_one_thread(
        tmp_path: Path) -> None:
    out = tmp_path / "job.txt"
    with in_background(partial(_record, out)) as process:
        process.join(timeout=120)
    assert process.exitcode == 0
    pid, niceness, threads = map(int, out.read_text(encoding="utf-8").split())
    assert pid != os.getpid() and niceness == 19 and threads == 1


def test_a_failing_background_job_exits_1_and_prints_nothing(
        capfd: pytest.CaptureFixture[str]) -> None:
    with in_background(_fail) as process:
        process.join(timeout=120)
    assert process.exitcode == 1
    assert "this job fails" not in capfd.readouterr().err


def test_leaving_the_block_stops_a_running_background_job() -> None:
    start = time.monotonic()
    with in_background(partial(time.sleep, 120)) as process:
        assert process.is_alive()
    assert not process.is_alive() and process.exitcode is not None
    assert time.monotonic() - start < 60


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        worker_pool(0)


_PARENT = textwrap.dedent("""
    import os, time
    from precompute.processes import worker_pool

    def own_pid(_):
        return os.getpid()

    def sleep(_):
        time.sleep(120)

    if __name__ == "__main__":
        pool = worker_pool(2)
        pids = set(pool.map(own_pid, range(8)))
        for i in range(2):
            pool.submit(sleep, i)
        print(" ".join(map(str, sorted(pids))), flush=True)
        time.sleep(120)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet reaped by its new parent) counts as ended.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc to tell ended processes")
def test_workers_end_when_their_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(_PARENT, encoding="utf-8")
    parent = subprocess.Popen([sys.executable, str(script)], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert parent.stdout is not None
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert pids and all(_alive(pid) for pid in pids)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids), "a worker outlived its killed parent"
