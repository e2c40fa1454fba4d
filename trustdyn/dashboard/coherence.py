"""The Steering lab's coherence evidence: the stored perplexity guard and each answer's perplexity.

Two kinds of evidence sit beside a steered answer. The setting's: what the study's
offline steering evaluation measured on dev for the same vector source, dataset, layer and
direction — the perplexity of held-out passages under the steered model as a multiple of
the unsteered model's, against the evaluation's guard (``ppl_guard``, 1.33 by default) —
read from ``steering_evals`` and converted into the lab's unit of strength through the
applied L2 norm, so "within the guard" here is the evaluation's own verdict. The answer's:
its perplexity under the *unsteered* chat model, beside the unsteered answer's, which
flags replies the model itself finds implausible but is a different measurement from the
guard's and so gets no guard verdict of its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from trustdyn.dashboard.lab import ChatModelSpec, VectorChoice
from trustdyn.schema import RANDOM_SOURCE
from trustdyn.store import Store

_TOLERANCE = 1e-9
"""Relative slack when a lab strength is compared with a stored one (the preselected
strength is the stored applied norm divided back, which may not round-trip exactly)."""

_UNITS = {"target": "the chat model's σ", "source-sigma": "the source checkpoint's σ"}
"""What the evaluation's α is measured in, by ``params.scaling``."""


def lab_alpha(applied_norm: float, lab_scale: float) -> float:
    """Return the lab strength that adds ``applied_norm``: α in units of the lab vector's σ.

    The lab adds ``α · scale · direction`` with the stored vector's own scale (the source
    checkpoint's σ; for the random control, its reference vector's σ), while the
    evaluation's α is in the unit of its ``scaling`` (the chat model's σ by default). The
    applied L2 norm is the same physical strength in both, so it converts one into the
    other.
    """
    return applied_norm / lab_scale


@dataclass(frozen=True)
class GuardStep:
    """One strength the evaluation tried on dev at one layer, in the chosen direction.

    Attributes:
        alpha: ``|α|`` as the evaluation applied it, in the unit of its ``scaling``.
        lab_alpha: The same applied norm as the lab's α (units of the lab vector's σ).
        ratio: Dev perplexity of the held-out passages under this setting divided by the
            unsteered model's (``inf`` when it was not finite).
        passed: ``ratio <= guard``.

    """

    alpha: float
    lab_alpha: float
    ratio: float
    passed: bool


@dataclass(frozen=True)
class Recommendation:
    """The setting the evaluation chose on dev for one vector source (its steering table row).

    Attributes:
        layer: The chosen layer.
        alpha: ``|α|`` in the evaluation's unit.
        lab_alpha: The same applied norm as the lab's α.
        toward: The label the chosen sign steers toward.

    """

    layer: int
    alpha: float
    lab_alpha: float
    toward: int


@dataclass(frozen=True)
class GuardEvidence:
    """What the stored steering evaluation says about one lab vector, dataset and direction.

    Attributes:
        source: The evaluation's ``vector_source`` the lab's choice stands for.
        guard: Largest allowed dev perplexity as a multiple of the unsteered model's.
        scaling: Unit of the evaluation's α (``target`` or ``source-sigma``).
        positions: Where the evaluation added the vector (the lab adds it at ``newest``).
        steps: Per layer the evaluation tried in this direction, its strengths in order.
        recommended: The setting chosen on dev for this source, if one was admissible.
        no_recommendation: Why there is none (empty when there is one).
        caveats: What makes the stored verdicts an approximation for the lab's vector.

    """

    source: str
    guard: float
    scaling: str
    positions: str
    steps: Mapping[int, tuple[GuardStep, ...]]
    recommended: Recommendation | None
    no_recommendation: str = ""
    caveats: tuple[str, ...] = ()

    @property
    def unit(self) -> str:
        """The evaluation's unit of α in words."""
        return _UNITS.get(self.scaling, self.scaling)


@dataclass(frozen=True)
class NoEvaluation:
    """Why the study's steering evaluation says nothing about a lab choice."""

    reason: str


FILE_VECTORS = NoEvaluation("vector files are not part of the study's steering evaluation")
"""The evidence of a vector the lab loaded from a file."""


def guard_evidence(store: Store, spec: ChatModelSpec, choice: VectorChoice, dataset: str,
                   toward: int) -> GuardEvidence | NoEvaluation:
    """Return the stored guard evidence for steering ``spec`` with ``choice`` toward ``toward``.

    The evaluation steered its suite's chat model with that suite's vectors; a lab
    choice maps to its ``vector_source`` (the checkpoint, or ``random`` for the random
    control). Its dev ladder in the chosen direction (positive α = toward label 1) and the
    setting it chose are converted to the lab's unit with :func:`lab_alpha` at each layer.
    """
    if choice.kind == "file":
        return FILE_VECTORS
    if spec.suite is None or spec.checkpoint is None:
        return NoEvaluation(f"the study has no steering evaluation of {spec.label}")
    if choice.suite != spec.suite:
        return NoEvaluation(f"the study's steering evaluation steered {spec.label} with "
                            f"{spec.suite}'s vectors only, not {choice.suite}'s")
    rows = store.steering_guard_rows(spec.suite, spec.checkpoint, dataset)
    if rows.empty:
        return NoEvaluation(f"the study has no steering evaluation of {spec.suite} on "
                            f"{dataset}")
    source = RANDOM_SOURCE if choice.kind == "random" else choice.checkpoint
    own = rows[rows["vector_source"] == source]
    if own.empty:
        used = ", ".join(sorted(set(rows["vector_source"])))
        return NoEvaluation(f"the steering evaluation of {dataset} did not use this vector "
                            f"(it used: {used})")
    vectors = store.steering_vectors(choice.suite, dataset)
    mine = vectors[vectors["checkpoint"] == choice.checkpoint]
    scales = dict(zip(mine["layer"].astype(int).tolist(), mine["scale"].astype(float).tolist(),
                      strict=True))
    guard = float(own["guard"].dropna().iloc[0])
    dev = own[(own["metric"] == "ppl_ratio") & ((own["alpha"] > 0) == (toward == 1))
              & own["layer"].isin(list(scales))]
    steps = {layer: _ladder(dev[dev["layer"] == layer], scales[layer], guard)
             for layer in sorted(set(dev["layer"].astype(int).tolist()))}
    recommended, missing = _recommendation(own[own["metric"] == "gain"], scales)
    positions = _first(own["positions"])
    caveats = []
    if positions not in ("newest", _UNSTATED):
        caveats.append(f"the evaluation added the vector at {positions!r} positions, the lab "
                       "at the prompt's last token and after: a different intervention")
    seed = int(own["seed"].iloc[0])
    if choice.kind == "random" and (choice.checkpoint != spec.checkpoint or seed != 0):
        caveats.append("the lab's random direction is another draw than the evaluation's "
                       "(same norm, different direction)")
    return GuardEvidence(source, guard, _first(own["scaling"]), positions, steps,
                         recommended, missing, tuple(caveats))


_UNSTATED = "unstated"
"""``scaling``/``positions`` of rows whose params do not say (not written by the evaluation)."""


def _first(column: pd.Series) -> str:
    values = column.dropna()
    return str(values.iloc[0]) if len(values) else _UNSTATED


def _recommendation(chosen: pd.DataFrame, scales: Mapping[int, float]
                    ) -> tuple[Recommendation | None, str]:
    """Return the source's chosen setting from its test ``gain`` row, or why there is none."""
    if chosen.empty:
        return None, "the evaluation stored no selection for this vector"
    row = chosen.iloc[0]
    layer = int(row["layer"])
    if layer < 0:
        return None, f"{row['status']} on dev ({row['reason']})"  # over the guard or degenerate
    if layer not in scales or not _finite(row["applied_norm"]):
        return None, f"the lab has no such vector at the chosen layer {layer}"
    return Recommendation(layer, abs(float(row["alpha"])),
                          lab_alpha(float(row["applied_norm"]), scales[layer]),
                          1 if float(row["alpha"]) > 0 else 0), ""


def _ladder(rows: pd.DataFrame, scale: float, guard: float) -> tuple[GuardStep, ...]:
    """Return one layer's dev strengths (``ppl_ratio`` rows in ladder order) as steps."""
    steps = []
    for alpha, norm, ratio in zip(rows["alpha"].tolist(), rows["applied_norm"].tolist(),
                                  rows["value"].tolist(), strict=True):
        value = float(ratio) if _finite(ratio) else math.inf  # a non-finite ratio is NULL
        steps.append(GuardStep(abs(alpha), lab_alpha(norm, scale), value, value <= guard))
    return tuple(steps)


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


Verdict = Literal["within the guard", "beyond the guard", "not measured"]


def guard_verdict(evidence: GuardEvidence, layer: int, alpha: float) -> tuple[Verdict, str]:
    """Return the evaluation's verdict on the lab's setting, and one line saying why.

    Within: no stronger than a strength that passed on dev at this layer and weaker than
    any that failed; beyond: at least as strong as one that failed; otherwise (another
    layer, or between or past the strengths tried) it was not measured. Strengths are
    compared as lab α, i.e. as applied norms.
    """
    steps = evidence.steps.get(layer, ())
    if not steps:
        tried = ", ".join(map(str, sorted(evidence.steps))) or "none in this direction"
        return "not measured", (f"the evaluation did not try this vector at layer {layer} "
                                f"in this direction (layers tried: {tried})")
    failed = [s for s in steps if not s.passed]
    first_fail = min(failed, key=lambda s: s.lab_alpha) if failed else None
    if first_fail is not None and alpha >= first_fail.lab_alpha * (1 - _TOLERANCE):
        return "beyond the guard", (f"at layer {layer}, α {first_fail.lab_alpha:.3g} already "
                                    f"gave ×{first_fail.ratio:.2f} the unsteered perplexity "
                                    f"on dev, over the guard ×{evidence.guard:g}")
    passed = [s.lab_alpha for s in steps if s.passed]
    if passed and alpha <= max(passed) * (1 + _TOLERANCE):
        return "within the guard", (f"at layer {layer}, α up to {max(passed):.3g} kept the "
                                    f"dev perplexity within ×{evidence.guard:g} of the "
                                    "unsteered model's")
    strongest = max(s.lab_alpha for s in steps)
    return "not measured", (f"at layer {layer} the evaluation tried α up to "
                            f"{strongest:.3g}; this strength lies "
                            + ("between one that passed and one that failed"
                               if passed and first_fail is not None
                               else "beyond every strength tried" if passed
                               else "below the strengths tried, which all failed"))


def describe_range(evidence: GuardEvidence, layer: int) -> str:
    """Return one line on the strengths that passed the guard on dev at ``layer``.

    In the lab's unit, with the evaluation's own unit beside it.
    """
    steps = evidence.steps.get(layer, ())
    if not steps:
        tried = ", ".join(map(str, sorted(evidence.steps)))
        return (f"The steering evaluation did not try this vector at layer {layer} in this "
                "direction" + (f"; it tried layers {tried}." if tried else "."))
    passed = [s for s in steps if s.passed]
    tried = ", ".join(f"{s.lab_alpha:.3g}" for s in steps)
    head = f"Steering evaluation, dev, layer {layer}: "
    if not passed:
        return (head + f"no strength passed the perplexity guard (×{evidence.guard:g}); "
                f"tried α {tried}.")
    top = max(passed, key=lambda s: s.lab_alpha)
    low = min(passed, key=lambda s: s.lab_alpha)
    return (head + f"α {low.lab_alpha:.3g} to {top.lab_alpha:.3g} passed the perplexity "
            f"guard (×{evidence.guard:g}); tried α {tried}. In the evaluation's unit "
            f"({evidence.unit}): {low.alpha:g} to {top.alpha:g}.")


def describe_recommendation(evidence: GuardEvidence, alpha_max: float) -> str:
    """Return one line on the evaluation's chosen setting for this vector (or why none)."""
    rec = evidence.recommended
    if rec is None:
        return ("The steering evaluation recommends no setting for this vector: "
                f"{evidence.no_recommendation}.")
    text = (f"The evaluation's recommended setting (chosen on dev): layer {rec.layer}, "
            f"α {rec.lab_alpha:.3g} ({rec.alpha:g} in {evidence.unit}), toward label "
            f"{rec.toward}")
    if rec.lab_alpha > alpha_max:
        text += f"; this is beyond the lab's largest strength {alpha_max:g}"
    return text + "."


def preselection(evidence: GuardEvidence | NoEvaluation, toward: int, layers: Sequence[int],
                 alpha_max: float) -> tuple[int, float] | None:
    """Return the ``(layer, α)`` the lab preselects: the recommended setting, when it fits.

    It fits when it steers in the chosen direction, at a layer the lab offers, with a
    strength the lab accepts.
    """
    if isinstance(evidence, NoEvaluation) or evidence.recommended is None:
        return None
    rec = evidence.recommended
    if rec.toward != toward or rec.layer not in layers or rec.lab_alpha > alpha_max:
        return None
    return rec.layer, rec.lab_alpha


def answer_perplexity(model: Any, tokenizer: Any, messages: Sequence[Mapping[str, str]],
                      answer: str) -> float | None:
    """Return the perplexity of ``answer`` as the reply to ``messages`` under ``model`` as is.

    The prompt is encoded as the lab's generation encodes it and the answer's tokens are
    scored after it, with no steering (the lab's steering is scoped to its generation).
    ``None`` for an answer without tokens.
    """
    import torch

    from trustdyn.generation import encode_prompt

    prompt = encode_prompt(tokenizer, [dict(m) for m in messages])
    ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if not ids:
        return None
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt + ids], device=device)).logits
    # The logits at position t predict token t + 1: the answer's tokens from the last
    # prompt position on.
    logprobs = torch.log_softmax(logits[0, len(prompt) - 1:-1].float(), dim=-1)
    target = torch.tensor(ids, device=device)[:, None]
    return float(torch.exp(-logprobs.gather(1, target).mean()))


def describe_coherence(steered: float | None, unsteered: float | None,
                       verdict: tuple[Verdict, str] | None, no_evaluation: str = "") -> str:
    """Return the coherence line shown under a steered answer.

    Args:
        steered: The steered answer's perplexity under the unsteered model.
        unsteered: The unsteered answer's perplexity under the same model.
        verdict: The evaluation's guard verdict on the setting (:func:`guard_verdict`).
        no_evaluation: Why there is no verdict (when ``verdict`` is ``None``).

    """
    def show(value: float | None) -> str:
        return "— (empty answer)" if value is None else f"{value:.3g}"

    text = (f"Coherence: perplexity {show(steered)} under the unsteered model (unsteered "
            f"answer: {show(unsteered)}"
            + (f"; ×{steered / unsteered:.2f}" if steered is not None and unsteered else "")
            + "). ")
    if verdict is None:
        return text + f"No guard verdict: {no_evaluation}."
    return text + f"Steering evaluation: {verdict[0]} ({verdict[1]})."
