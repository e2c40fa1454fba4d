"""Provenance helpers: content hashes and the code version stamped on every stored number."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

import torch

from trustdyn import __version__
from trustdyn.paths import IN_CHECKOUT, REPO_ROOT


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_state_dict(state: dict[str, torch.Tensor]) -> str:
    """Return a sha256 over tensor names, dtypes, shapes and raw bytes, in sorted name order.

    Independent of file layout, so a checkpoint saved twice (or converted between formats
    without changing values) hashes the same, and duplicated public checkpoints are found.
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous().reshape(-1)
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


@functools.cache
def code_version() -> str:
    """Return ``<package version>+<git short hash>[.dirty]`` or the package version alone."""
    if not IN_CHECKOUT:
        # An installed package's folder may sit inside someone else's git repository.
        return __version__
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+{rev}{'.dirty' if dirty else ''}"
