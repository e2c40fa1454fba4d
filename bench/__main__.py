"""Run every benchmark, one fresh interpreter each, results to ``bench/results/*.json``.

    python -m bench                    # all CPU benchmarks (~20 minutes on 2 cores)
    python -m bench extraction probes  # a selection
    python -m bench --list

``amber_plan`` needs a CUDA GPU with ~30 GB free and is skipped without one; ``study``
runs the whole default study (~11 minutes). Each benchmark prints its own ratios; this
runner only sequences them, so one failing benchmark does not stop the others.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch

from bench.common import RESULTS_DIR

# name -> extra arguments that make it write its JSON into bench/results.
BENCHMARKS: dict[str, list[str]] = {
    "extraction": [],
    "probes": [],
    "pretrain": [],
    "information": ["--json", str(RESULTS_DIR / "bench_information.json")],
    "steering": ["--json", str(RESULTS_DIR / "bench_steering.json")],
    "dashboard": ["--json", str(RESULTS_DIR / "bench_dashboard.json")],
    "verdicts": [],
    "study": [],
    "amber_plan": [],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(BENCHMARKS)}")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(BENCHMARKS))
        return 0
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; see --list")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in args.names or list(BENCHMARKS):
        if name == "amber_plan" and not torch.cuda.is_available():
            print(f"== {name}: skipped (needs a CUDA GPU)")
            continue
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", f"bench.bench_{name}", *BENCHMARKS[name]])
        print(f"== {name}: exit {done.returncode} after {time.perf_counter() - start:.0f} s",
              flush=True)
        if done.returncode:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
