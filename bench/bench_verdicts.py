"""Calibration: the verdicts' false-positive rates on null studies and recall on planted ones.

For each verdict (``separable``: a dataset becomes separable during pre-training; ``turn``:
a fitting → compression turn) it simulates studies of the default study's shape (its
checkpoint schedule and six datasets) with its 8 layers and with 32, writes them through
the study store and runs the same verdict code as the pipeline and the story; for
``helps`` (a steering vector beats the random direction of the same norm) it simulates
steering evaluations of 6 datasets × 8 pre-training vectors on 120 shared test items
through the evaluation's paired bootstrap and :func:`trustdyn.verdicts.helps_verdict`,
with no effect and with a planted rise of 0.10, 0.15 and 0.20 in one vector's share of
right answers:

- null studies, one per noise family (white, random walk, AR(1) with φ = 0.5, 0.8, 0.95,
  a monotone trend): the false-positive rate is the share of datasets the story reports
  (the worst family is the headline; the share of studies reporting any is printed too);
- planted studies: separation rising to +0.15 balanced accuracy at the middle layers from
  checkpoint 8, or a turn 15 noise units high peaking at checkpoint 8 in half the layers
  over white noise: recall is the share of datasets reported;
- turn power: recall of turns 5 to 15 noise units high at the default's 8 layers,
  the least height recalled at ≥ 0.8 being the smallest turn the default study can show.

    python -m bench.bench_verdicts                    # 10 studies per case: ~2 minutes
    python -m bench.bench_verdicts --studies 40       # tighter rates: ~9-12 minutes

Writes ``bench/results/bench_verdicts.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.common import environment, write_result
from trustdyn.testing.planted import (
    DEFAULT_LAYERS,
    NULL_FAMILIES,
    Plan,
    SteeringPlan,
    error_rates,
    helps_rates,
)
from trustdyn.verdicts import ALPHA

PLANTED = {"separation": 0.15, "turn": 15.0}
"""Planted effect per verdict: balanced-accuracy rise, or turn height in noise units."""
VERDICTS = {"separable": "separation", "turn": "turn"}


def calibrate(kind: str, n_studies: int, layers: tuple[int, ...] = (DEFAULT_LAYERS, 32),
              seed: int = 0) -> pd.DataFrame:
    """Return per-plan rates of one verdict: every null family, then the planted effect."""
    plans = [Plan(family, n) for n in layers for family in NULL_FAMILIES]
    plans += [Plan("white", n, effect=PLANTED[kind]) for n in layers]
    with tempfile.TemporaryDirectory() as tmp:
        return error_rates(str(Path(tmp) / f"{kind}.duckdb"), kind, plans, n_studies,
                           seed=seed)


def summarise(rates: pd.DataFrame) -> dict[str, object]:
    """Return the worst null family's rates and the planted recall of one verdict.

    ``false_positive_rate`` is the verdict's own rate (a dataset reported without an
    effect) in the worst family; ``study_false_positive_rate`` the share of null studies
    whose story reports any of its datasets (the level is shared among them).
    """
    null = rates[rates["effect"] == 0].reset_index(drop=True)
    planted = rates[rates["effect"] > 0]
    worst = null.iloc[int(null["per_dataset"].to_numpy().argmax())]
    worst_study = null.iloc[int(null["per_study"].to_numpy().argmax())]
    fpr, recall = float(worst["per_dataset"]), float(planted["per_dataset"].min())
    return {
        "false_positive_rate": fpr,
        "worst_family": f"{worst['family']} ({int(worst['n_layers'])} layers)",
        "study_false_positive_rate": float(worst_study["per_study"]),
        "recall": recall,
        "planted_effect": float(planted["effect"].iloc[0]),
        "bound_met": bool(fpr <= ALPHA and recall >= 0.8),
        "rates": rates.to_dict(orient="records"),
    }


TURN_HEIGHTS = (5.0, 7.5, 10.0, 12.5, 15.0)
"""Planted turn heights (noise units) whose recall bounds the smallest detectable turn."""


def turn_power(n_studies: int, seed: int = 0) -> dict[str, object]:
    """Return the turn verdict's recall per planted height at the default study's shape.

    The planted curve's noise has standard deviation 1 at every checkpoint, so a height
    reads in units of a curve's checkpoint-to-checkpoint noise (for a stored curve, about
    its half-sample standard error); ``smallest_height`` is the least height recalled at
    ≥ 0.8 (``None`` if none is).
    """
    plans = [Plan("white", DEFAULT_LAYERS, effect=height) for height in TURN_HEIGHTS]
    with tempfile.TemporaryDirectory() as tmp:
        rates = error_rates(str(Path(tmp) / "power.duckdb"), "turn", plans, n_studies,
                            seed=seed + 100)
    recall = {f"{e:g}": float(r) for e, r in zip(rates["effect"], rates["per_dataset"],
                                                  strict=True)}
    found = [h for h in TURN_HEIGHTS if recall[f"{h:g}"] >= 0.8]
    return {"layers": DEFAULT_LAYERS, "recall": recall,
            "smallest_height": found[0] if found else None}


HELPS_EFFECTS = (0.10, 0.15, 0.20)
"""Planted rises of one vector's share of right answers over the random direction."""


def calibrate_helps(n_studies: int, seed: int = 0) -> dict[str, object]:
    """Return the helps verdict's false-positive rate and its recall per planted effect.

    Null studies use 4× as many studies as planted ones: the verdict's level is small.
    """
    null = helps_rates(SteeringPlan(), 4 * n_studies, seed=seed)
    recall = {f"{effect:.2f}": helps_rates(SteeringPlan(effect=effect), n_studies,
                                           seed=seed + 1 + k)
              for k, effect in enumerate(HELPS_EFFECTS)}
    fpr = float(null["per_dataset"])
    return {"false_positive_rate": fpr, "study_false_positive_rate": null["per_study"],
            "recall": {effect: r["per_dataset"] for effect, r in recall.items()},
            "plan": dataclasses.asdict(SteeringPlan()), "bound_met": fpr <= ALPHA}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=10,
                        help="simulated studies per family and layer count")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result: dict[str, object] = {"studies": args.studies,
                                 "datasets_per_study": Plan.n_datasets,
                                 "alpha": ALPHA}
    for verdict, kind in VERDICTS.items():
        rates = calibrate(kind, args.studies, seed=args.seed)
        summary = summarise(rates)
        result[verdict] = summary
        print(f"== {verdict}")
        print(rates.to_string(index=False))
        met = "met" if summary["bound_met"] else "NOT met"
        print(f"false-positive rate {summary['false_positive_rate']:.3f} per dataset (worst: "
              f"{summary['worst_family']}), {summary['study_false_positive_rate']:.3f} per "
              f"study; recall {summary['recall']:.3f} at effect "
              f"{summary['planted_effect']:g}: bounds {met}")
    power = turn_power(args.studies, seed=args.seed)
    result["turn_power"] = power
    print(f"turn recall by planted height ({DEFAULT_LAYERS} layers): {power['recall']}; "
          f"smallest height recalled at >= 0.8: {power['smallest_height']}")
    helps = calibrate_helps(args.studies, seed=args.seed)
    result["helps"] = helps
    print(f"== helps\nfalse-positive rate {helps['false_positive_rate']:.3f} per dataset, "
          f"{helps['study_false_positive_rate']:.3f} per study; recall by planted effect "
          f"{helps['recall']}")
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["environment"] = environment()
    write_result("bench_verdicts", result)
    print(f"{result['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
