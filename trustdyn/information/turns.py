"""Phase detection: where I(X;T) turns from fitting (rising) to compression (falling).

Qian et al. (2024, §5) report that, early in pre-training, a layer's I(X;T) first rises then
falls. :func:`detect_turns` locates that turn per (dataset, layer, estimator) from one
estimate per checkpoint and says whether it stands out from the estimator's noise; its
docstring states the rule precisely.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TURN_KEYS: tuple[str, ...] = ("dataset", "layer", "estimator")
TURN_COLUMNS: tuple[str, ...] = (
    *TURN_KEYS, "turn_step", "peak_value", "fall", "final_value", "distinguishable",
    "rise", "sustained_drop", "noise", "threshold", "n_checkpoints",
)
_REQUIRED = ("step", "layer", "dataset", "estimator", "value", "null_std")
_MAD_TO_SD = 1.4826
_TRIM = 5.0


def _smooth(v: np.ndarray) -> np.ndarray:
    """Binomial (¼, ½, ¼) smoothing by index, renormalised at the ends."""
    if v.size < 3:
        return v.copy()
    out = np.empty_like(v)
    out[1:-1] = 0.25 * v[:-2] + 0.5 * v[1:-1] + 0.25 * v[2:]
    out[0] = (2.0 * v[0] + v[1]) / 3.0
    out[-1] = (v[-2] + 2.0 * v[-1]) / 3.0
    return out


def _scatter(v: np.ndarray) -> float:
    """Trimmed RMS of the second-difference pseudo-residuals Δ²v / √6 (see detect_turns)."""
    resid = np.abs(np.diff(v, n=2)) / np.sqrt(6.0)
    robust = _MAD_TO_SD * float(np.median(resid))
    kept = resid[resid <= _TRIM * robust] if robust > 0 else resid
    return float(np.sqrt(np.mean(kept**2)))


def _noise(v: np.ndarray, null_std: np.ndarray) -> float:
    """Noise scale: the larger of the median null std and the curve's own scatter."""
    finite = null_std[np.isfinite(null_std)]
    null_scale = float(np.median(finite)) if finite.size else 0.0
    if v.size < 5:
        return null_scale
    return max(null_scale, _scatter(v))


def _turn_of_series(steps: np.ndarray, v: np.ndarray, null_std: np.ndarray, k: float,
                    smooth: bool) -> dict[str, float | bool | int]:
    """Apply :func:`detect_turns`' rule to one curve (already sorted by step)."""
    m = v.size
    nan = float("nan")
    final = float(v[-1]) if m else nan
    empty: dict[str, float | bool | int] = {
        "turn_step": nan, "peak_value": nan, "fall": nan, "final_value": final,
        "distinguishable": False, "rise": nan, "sustained_drop": nan, "noise": nan,
        "threshold": nan, "n_checkpoints": m,
    }
    if m < 3:
        return empty
    u = _smooth(v) if smooth else v.copy()
    noise = _noise(v, null_std)
    threshold = k * noise
    interior = np.arange(1, m - 1)
    rise = np.array([u[i] - u[:i].min() for i in interior])
    drop = np.array([u[i] - u[i + 1:].mean() for i in interior])
    qualifies = (rise > threshold) & (drop > threshold)
    if qualifies.any():
        best = int(interior[qualifies][np.argmax(u[interior][qualifies])])
    else:
        best = int(np.argmax(u))
    is_interior = 1 <= best <= m - 2
    fall = float(v[best] - v[best + 1:].min()) if best < m - 1 else 0.0
    return {
        "turn_step": float(steps[best]) if is_interior else nan,
        "peak_value": float(v[best]),
        "fall": fall,
        "final_value": final,
        "distinguishable": bool(qualifies.any()),
        "rise": float(rise[best - 1]) if is_interior else nan,
        "sustained_drop": float(drop[best - 1]) if is_interior else nan,
        "noise": noise,
        "threshold": threshold,
        "n_checkpoints": m,
    }


def detect_turns(frame: pd.DataFrame, *, k: float = 3.0, smooth: bool = True) -> pd.DataFrame:
    """Locate the fitting → compression turn of I(X;T) per (dataset, layer, estimator).

    The rule, precisely (m checkpoints ordered by step, raw values v, permutation-null stds s):

    1. *Smoothing* — light, by checkpoint index: binomial weights (¼, ½, ¼), renormalised at
       the two ends, giving u. It damps one-checkpoint noise; a sharp peak keeps its
       checkpoint, while on a near-flat top the maximum of u may move to the top's middle.
    2. *Noise* σ = max(median(s), σ₂). σ₂ is the checkpoint-to-checkpoint scatter of v from
       Gasser et al.'s (1986) pseudo-residuals e_i = Δ²v_i / √6 (white noise of sd σ gives e of
       sd σ; a smooth trend gives e ≈ 0 away from its kinks): σ₂ = RMS of the e_i after
       dropping those beyond 5 robust scales (1.4826 · median|e|), so a sharp peak's kink does
       not inflate it while the estimate stays efficient (the median alone under-estimates
       too often on ~20 points). Used when m ≥ 5. The permutation std alone understates the
       scatter when the estimate itself is noisy across checkpoints.
    3. *Candidates* are interior checkpoints i (1 ≤ i ≤ m − 2) with
       rise_i = u_i − min(u_0..u_{i−1}) > k σ  (there was fitting before it) and
       drop_i = u_i − mean(u_{i+1}..u_{m−1}) > k σ  (the fall after it is *sustained*: on
       average the later values stay below the peak by more than k σ, so a single low point or
       a fall that recovers does not count). Default k = 3.
    4. The *turn* is the candidate with the highest u. With no candidate the turn is not
       distinguishable; the reported turn is then the global maximum of u if it is interior,
       otherwise none (``turn_step`` NaN: the curve peaks at the first checkpoint — any turn
       happened before it — or at the last — no fall yet).

    Reported values are raw: ``peak_value`` = v at the turn, ``fall`` = peak − min of the later
    v, ``final_value`` = v at the last checkpoint.

    Args:
        frame: One row per (checkpoint, dataset, layer, estimator) with columns ``step``,
            ``layer``, ``dataset``, ``estimator``, ``value``, ``null_std`` — I(X;T) values.
            If a ``quantity`` column is present, only ``"I(X;T)"`` rows are used. Rows with
            a missing value are ignored.
        k: Number of noise scales the rise and the sustained drop must each exceed.
        smooth: Apply the light binomial smoothing before locating the peak.

    Returns:
        One row per (dataset, layer, estimator): ``turn_step`` (NaN when there is no interior
        peak), ``peak_value``, ``fall`` (peak − min after), ``final_value``,
        ``distinguishable``, plus ``rise``, ``sustained_drop``, ``noise``, ``threshold`` and
        ``n_checkpoints`` to show why.

    Raises:
        ValueError: on missing columns or a repeated step within one curve.

    """
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(
            f"detect_turns needs columns {list(_REQUIRED)}; missing {missing} "
            "(pass the info_results rows for quantity I(X;T) joined with checkpoint steps)"
        )
    if not k > 0:
        raise ValueError(f"k must be positive; got {k}")
    data = frame
    if "quantity" in data.columns:
        data = data[data["quantity"] == "I(X;T)"]
    data = data[data["value"].notna()]
    rows = []
    for key, group in data.groupby(list(TURN_KEYS), sort=True):
        group = group.sort_values("step")
        steps = group["step"].to_numpy()
        if np.unique(steps).size != steps.size:
            raise ValueError(
                f"detect_turns: repeated steps for {dict(zip(TURN_KEYS, key, strict=True))}; "
                "pass one row per checkpoint (drop the chat model and duplicate checkpoints)"
            )
        result = _turn_of_series(
            steps, group["value"].to_numpy(np.float64),
            group["null_std"].to_numpy(np.float64), k, smooth,
        )
        rows.append({**dict(zip(TURN_KEYS, key, strict=True)), **result})
    return pd.DataFrame(rows, columns=list(TURN_COLUMNS))
