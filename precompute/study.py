"""Study configuration: what the pipeline computes for a suite, and at which sizes.

A :class:`StudyConfig` fixes everything that changes stored numbers (datasets, sample
sizes, split fraction, seeds, bootstrap and permutation counts, extraction settings). It is
stored with the suite in the study file, so every number can be traced back to it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from trustdyn.datasets import BUILTIN_DATASETS, PAPER_DATASETS, UserDataset
from trustdyn.schema import (
    DEVICE_NAMES,
    DTYPE_NAMES,
    EVAL_GRIDS,
    PER_CHECKPOINT_STAGES,
    SCALINGS,
    STEER_POSITIONS,
    Positions,
)
from trustdyn.suites import SMOLLM2_SUITE

INFO_X = {"block0": "output of decoder block 0 at the pooled position",
          "embedding": "token embedding at the pooled position"}
"""The choices of X for I(X;T), as recorded in each row's ``params``."""


@dataclass(frozen=True)
class StudyConfig:
    """Settings of one study over one suite.

    Attributes:
        datasets: Probe datasets to run: builtin names and the names of ``user_datasets``
            (default: every builtin, the paper's five and ``sentences``).
        user_datasets: The user's own datasets among ``datasets`` (file or hub, column
            mapping, card), stored with the config so their provenance is kept.
        n_per_dataset: Rows sampled per dataset (stratified, seeded); ``None`` = all.
        info_n: Rows of that sample used for information estimates (the same rows at
            every checkpoint).
        test_fraction: Share of rows held out for probe evaluation.
        seed: Seed for sampling, splits, probes, bootstraps and permutation nulls.
        batch_size: Extraction batch size.
        max_length: Longest tokenised statement (longer ones keep their end).
        n_bootstrap: Bootstrap replicates for probe confidence intervals.
        n_permutations: Permutations for the information estimators' null.
        n_resamples: Half-samples of statements for the information estimates' standard
            errors.
        info_x: X of I(X;T): ``block0`` (decoder block 0's output at the pooled position,
            the paper's choice: it has seen the whole statement) or ``embedding`` (the
            token embedding there, which is one vector for every statement ending in the
            same token).
        stages: Per-checkpoint stages to run.
        layers: Decoder blocks (0-based) whose probes, information estimates and vectors
            are computed; ``None`` = every block. X of I(X;T) stays block 0 either way.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        dtype: Model dtype for loading checkpoints.
        steer_eval: Grid of the suite-level steering evaluation (``smoke``, ``reduced`` or
            ``full``, see :mod:`trustdyn.evaluation.config`); ``None`` skips it.
        steer_scaling: Unit of the steering strength α (``target`` or ``source-sigma``,
            see :data:`trustdyn.evaluation.SCALINGS`).
        steer_positions: Where a vector is added in the steering evaluation's generation,
            scoring and guard alike (``newest`` or ``all``).
    """

    datasets: tuple[str, ...] = BUILTIN_DATASETS
    user_datasets: tuple[UserDataset, ...] = ()
    n_per_dataset: int | None = 600
    info_n: int = 256
    test_fraction: float = 0.3
    seed: int = 0
    batch_size: int = 64
    max_length: int = 128
    n_bootstrap: int = 1000
    n_permutations: int = 20
    n_resamples: int = 20
    info_x: str = "block0"
    stages: tuple[str, ...] = PER_CHECKPOINT_STAGES
    layers: tuple[int, ...] | None = None
    device: str = "auto"
    dtype: str = "float32"
    steer_eval: str | None = "full"
    steer_scaling: str = "target"
    steer_positions: Positions = "newest"

    def problems(self) -> list[str]:
        """Return one line per field whose value is out of range (empty when all are fine)."""
        found = [f"{name} must be an integer >= {low}, got {getattr(self, name)!r}"
                 for name, low in _MINIMUMS.items() if not _int_at_least(getattr(self, name), low)]
        if self.n_per_dataset is not None and not _int_at_least(self.n_per_dataset, 8):
            found.append(f"n_per_dataset must be an integer >= 8 or omitted (every row), "
                         f"got {self.n_per_dataset!r}")
        if isinstance(self.test_fraction, bool) or not (
                isinstance(self.test_fraction, int | float) and 0 < self.test_fraction < 1):
            found.append(f"test_fraction must be a number between 0 and 1, "
                         f"got {self.test_fraction!r}")
        choices = {"info_x": tuple(INFO_X), "steer_scaling": SCALINGS,
                   "steer_positions": STEER_POSITIONS, "dtype": DTYPE_NAMES}
        if self.device.split(":", 1)[0] not in DEVICE_NAMES:
            found.append(f"device must be one of {', '.join(DEVICE_NAMES)} (or cuda:<index>), "
                         f"got {self.device!r}")
        found += [f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                  for name, allowed in choices.items() if getattr(self, name) not in allowed]
        if self.steer_eval is not None and self.steer_eval not in EVAL_GRIDS:
            found.append(f"steer_eval must be one of {', '.join(EVAL_GRIDS)} or omitted (no "
                         f"steering evaluation), got {self.steer_eval!r}")
        if self.layers is not None and (
                not self.layers or len(set(self.layers)) != len(self.layers)
                or not all(_int_at_least(layer, 0) for layer in self.layers)):
            found.append(f"layers must be distinct block indices >= 0 (or omitted for every "
                         f"block), got {self.layers!r}")
        unknown = [s for s in self.stages if s not in PER_CHECKPOINT_STAGES]
        if unknown or not self.stages:
            found.append(f"stages must be a non-empty subset of "
                         f"{', '.join(PER_CHECKPOINT_STAGES)}, got {list(self.stages)!r}")
        return found

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-ready dict."""
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Return a short hash identifying the settings that change stored numbers."""
        payload = {k: v for k, v in self.to_dict().items() if k not in ("device",)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


PUBLIC_SIZES = StudyConfig(n_per_dataset=None, info_n=512)
"""Sizes of a study on a public suite named without ``--preset``: every row, the full
steering grid (meant for GPUs)."""

# Per-preset sizes: `smoke` keeps tests to seconds, `default` keeps the whole default study
# within 15 minutes on a 2-core laptop and `classroom` within 45 (the reduced steering
# grid on a 12-block model; the full grid there would take hours on two cores).
_PRESET_CONFIGS: dict[str, StudyConfig] = {
    "smoke": StudyConfig(n_per_dataset=80, info_n=48, n_bootstrap=100, n_permutations=5,
                         steer_eval="smoke"),
    "default": StudyConfig(n_per_dataset=600, info_n=256, steer_eval="reduced"),
    "classroom": StudyConfig(n_per_dataset=800, info_n=256, steer_eval="reduced"),
    # SmolLM2-135M-Instruct is ~100x the built-in model: fewer rows keep the default study
    # within budget; its vectors exist for every layer and dataset all the same. Its
    # steering evaluation (chat vector vs random; no pre-training checkpoints) costs ~90
    # CPU-s per sweep, ~40 minutes even on the reduced grid, so the laptop presets leave it
    # to public-suite runs. It keeps the paper's five datasets: `sentences` is the built-in chat
    # model's task, and a sixth dataset would cost it a fifth more time. Every other suite
    # probes all six (the sentences are plain English any model can read).
    "smollm2-smoke": StudyConfig(datasets=PAPER_DATASETS, n_per_dataset=40, info_n=32,
                                 n_bootstrap=100, n_permutations=5, batch_size=16,
                                 steer_eval="smoke"),
    "smollm2-default": StudyConfig(datasets=PAPER_DATASETS, n_per_dataset=200, info_n=128,
                                   batch_size=32, steer_eval=None),
    "smollm2-classroom": StudyConfig(datasets=PAPER_DATASETS, n_per_dataset=400, info_n=256,
                                     batch_size=32, steer_eval=None),
}


_MINIMUMS = {"info_n": 8, "seed": 0, "batch_size": 1, "max_length": 8, "n_bootstrap": 0,
             "n_permutations": 1, "n_resamples": 2}
"""Smallest value each integer field accepts."""


def _int_at_least(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


SIZE_PRESETS: tuple[str, ...] = ("smoke", "default", "classroom")
"""Names of the study sizes a study file's ``[sizes] preset`` or ``--preset`` can take."""


def sizes_for(suite: str, preset: str | None) -> str | None:
    """Return the study sizes that ``--preset`` names for ``suite``.

    SmolLM2-135M-Instruct is ~100× the built-in model, so it has reduced sizes of its own
    (``smollm2-<preset>``); every other suite uses the preset's sizes as they are.
    """
    return f"smollm2-{preset}" if suite == SMOLLM2_SUITE and preset else preset


def study_config(preset: str | None, **overrides: Any) -> StudyConfig:
    """Return the study config for a preset (``None``: :data:`PUBLIC_SIZES`).

    Raises:
        ValueError: ``preset`` names no study sizes (the message lists them).
    """
    if preset is not None and preset not in _PRESET_CONFIGS:
        raise ValueError(f"No study sizes called {preset!r}; use one of "
                         f"{', '.join(SIZE_PRESETS)}.")
    base = PUBLIC_SIZES if preset is None else _PRESET_CONFIGS[preset]
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
