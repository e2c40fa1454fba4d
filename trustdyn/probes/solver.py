"""The probe's solver: scikit-learn's L2 logistic regression for every layer at once, in torch.

:func:`fit_logistic_batched` minimises exactly ``LogisticRegression()``'s objective,
(1/n) Σᵢ log(1 + exp(-ỹᵢ (w·xᵢ + b))) + ||w||² / (2 C n) with an unpenalised intercept, on
standardised features for a batch of layers and label columns in one L-BFGS run, with
sklearn's stopping rule (max |gradient| ≤ ``tol``); each iteration is two batched matrix
products and the line search works on logits, so it costs no pass over the features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

ESTIMATOR = "logistic_regression"

SOLVER = "lbfgs-batched-torch"

STANDARDISATION = "train-split mean and std (ddof=0); constant features scaled by 1"

_LBFGS_MEMORY = 10  # correction pairs kept, as scipy's L-BFGS-B default (maxcor=10)

_ARMIJO_C1 = 1e-4

_MAX_BACKTRACKS = 30

_LINE_NEWTON_STEPS = 3  # 1-D Newton steps of the line search (cheap: no feature passes)

@dataclass(frozen=True)
class LogisticFit:
    """Batched logistic-regression solutions on standardised features.

    Attributes:
        weights: ``[L, K, d]`` one weight vector per layer and label column.
        bias: ``[L, K]`` unpenalised intercepts.
        n_iter: ``[L, K]`` iterations each problem ran.
        converged: ``[L, K]`` whether each met the gradient tolerance.

    """

    weights: torch.Tensor
    bias: torch.Tensor
    n_iter: torch.Tensor
    converged: torch.Tensor

def standardise(x_train: torch.Tensor, x_test: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standardise per layer and feature with training statistics only.

    Like sklearn's ``StandardScaler``: population std (ddof=0), and features that are
    constant on the training split get scale 1 instead of a division by ~0.

    Returns:
        ``(xs_train [L, n, d], xs_test [L, m, d], scale [L, d])``, float32.

    """
    x_train = x_train.to(torch.float32)
    var, mean = torch.var_mean(x_train, dim=1, correction=0, keepdim=True)  # [L, 1, d]
    scale = var.sqrt()
    constant = scale <= 1e-7 * mean.abs().clamp_min(1.0)
    scale = torch.where(constant, torch.ones_like(scale), scale)
    xs_train = (x_train - mean).div_(scale)  # in place: one [L, n, d] temporary, not two
    xs_test = (x_test.to(torch.float32) - mean).div_(scale)
    return xs_train, xs_test, scale[:, 0]

def raw_directions(weights_std: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Map ``[L, d]`` weights on standardised features to unit vectors in raw space.

    A probe ``w·(x - μ)/σ`` is linear in ``x`` with weights ``w/σ``.
    """
    raw = weights_std / scale
    return raw / raw.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(raw.dtype).tiny)

def _mean_log_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Return ``[L, K]`` mean log-loss of logits ``z [L, K, n]``, accumulated in float64.

    float64 accumulation lets the line search see decreases below float32 resolution near
    the optimum.
    """
    return (F.softplus(z) - y * z).mean(dim=-1, dtype=torch.float64)

def _penalty(w: torch.Tensor, lam: float) -> torch.Tensor:
    """Return ``[L, K]`` ``lam/2 ||w||²`` in float64."""
    return 0.5 * lam * (w * w).sum(dim=-1, dtype=torch.float64)

def _gradient(z: torch.Tensor, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
              lam: float) -> torch.Tensor:
    """Return ``[L, K, d + 1]`` gradient of the objective at ``theta`` (one pass over ``x``).

    Args:
        z: ``[L, K, n]`` logits at ``theta``.
        theta: ``[L, K, d + 1]`` weights with the intercept last.
        x: ``[L, n, d]`` standardised features.
        y: ``[K, n]`` 0/1 labels.
        lam: ``1 / (C n)``.

    """
    residual = (torch.sigmoid(z) - y) / z.shape[-1]  # [L, K, n]
    grad_w = torch.bmm(residual, x) + lam * theta[..., :-1]  # [L, K, d]
    return torch.cat([grad_w, residual.sum(dim=-1, keepdim=True)], dim=-1)

def _logits(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Return ``[L, K, n]`` logits ``x w + b`` for ``theta [L, K, d + 1]`` (one pass)."""
    return torch.bmm(theta[..., :-1], x.transpose(1, 2)) + theta[..., -1:]

def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-problem inner product over the last axis: ``[L, K, p] × [L, K, p] → [L, K, 1]``."""
    return (a * b).sum(dim=-1, keepdim=True)

@dataclass(frozen=True)
class _Pair:
    """One L-BFGS correction pair with the scalars the two-loop recursion needs of it.

    ``rho`` and ``gamma`` depend on the pair alone, so they are computed once when it
    is made rather than in every later iteration that uses it (the solver's cost is
    mostly the number of small tensor operations per iteration).
    """

    s: torch.Tensor  # [l, K, d + 1] step
    y: torch.Tensor  # [l, K, d + 1] gradient change
    rho: torch.Tensor  # [l, K, 1] 1 / sᵀy, or 0 where sᵀy ≤ 0 (the pair acts as identity)
    gamma: torch.Tensor  # [l, K, 1] sᵀy / yᵀy (initial Hessian scale), or 1 where sᵀy ≤ 0

    @classmethod
    def of(cls, s: torch.Tensor, y: torch.Tensor) -> _Pair:
        """Make the pair ``(s, y)`` with its scalars."""
        sy = _dot(s, y)
        rho = torch.where(sy > 0, 1.0 / sy.clamp_min(1e-30), torch.zeros_like(sy))
        gamma = torch.where(sy > 0, sy / _dot(y, y).clamp_min(1e-30), torch.ones_like(sy))
        return cls(s, y, rho, gamma)

    def take(self, rows: torch.Tensor) -> _Pair:
        """Return the pair restricted to ``rows`` of the layer axis."""
        return _Pair(self.s[rows], self.y[rows], self.rho[rows], self.gamma[rows])

def _lbfgs_direction(grad: torch.Tensor, history: list[_Pair]) -> torch.Tensor:
    """Two-loop recursion, batched over problems; pairs with ``sᵀy ≤ 0`` act as identity."""
    q = grad.clone()
    alphas = []
    for pair in reversed(history):
        alpha = pair.rho * _dot(pair.s, q)
        q -= alpha * pair.y
        alphas.append(alpha)
    if history:
        q *= history[-1].gamma
    else:
        # First step: steepest descent of unit length (curvature still unknown).
        q /= q.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    for pair, alpha in zip(history, reversed(alphas), strict=True):
        q += pair.s * (alpha - pair.rho * _dot(pair.y, q))
    return -q

@dataclass(frozen=True)
class _Ray:
    """The objective restricted to the ray ``theta + t · direction``, per problem.

    Logits are linear in ``t`` (``z + t u``), so once ``u = X · direction`` is known every
    trial step costs ``[L, K, n]`` element-wise work and no pass over the features.
    """

    z: torch.Tensor  # [L, K, n] logits at t = 0
    u: torch.Tensor  # [L, K, n] change of logits per unit step
    w: torch.Tensor  # [L, K, d] weights at t = 0
    dw: torch.Tensor  # [L, K, d] weight direction
    y: torch.Tensor  # [K, n]
    lam: float

    def value(self, t: torch.Tensor) -> torch.Tensor:
        """Return ``[L, K]`` objective at steps ``t [L, K]``."""
        step = t[..., None].to(self.z.dtype)
        return (_mean_log_loss(self.z + step * self.u, self.y)
                + _penalty(self.w + step * self.dw, self.lam))

    def derivatives(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return first and second derivatives ``[L, K]`` of the objective in ``t``."""
        step = t[..., None].to(self.z.dtype)
        p = torch.sigmoid(self.z + step * self.u)
        w = self.w + step * self.dw
        first = ((p - self.y) * self.u).mean(dim=-1, dtype=torch.float64) + self.lam * (
            w * self.dw).sum(dim=-1, dtype=torch.float64)
        second = (p * (1 - p) * self.u * self.u).mean(dim=-1, dtype=torch.float64) + (
            self.lam * (self.dw * self.dw).sum(dim=-1, dtype=torch.float64))
        return first, second

def _line_search(ray: _Ray, f: torch.Tensor, slope: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Near-exact line search along each problem's ray, then an Armijo safeguard.

    A few Newton steps on the (convex) 1-D objective from ``t = 1`` find its minimiser
    cheaply (no feature passes); if the result does not satisfy Armijo's sufficient
    decrease, steps are halved from 1 until one does.

    Args:
        ray: The objective along the search directions.
        f: ``[L, K]`` objective at ``t = 0``.
        slope: ``[L, K]`` directional derivative at ``t = 0`` (negative for descent).

    Returns:
        ``(step [L, K], f_new [L, K])``; step 0 where no decrease was found.

    """
    t = torch.ones_like(f)
    for _ in range(_LINE_NEWTON_STEPS):
        first, second = ray.derivatives(t)
        # Stay in (0, 4t]: logistic tails are flat, so an unguarded Newton step can overshoot.
        t = torch.clamp(t - first / second.clamp_min(1e-30), min=1e-3 * t, max=4 * t)
    f_new = ray.value(t)
    ok = f_new <= f + _ARMIJO_C1 * t * slope
    fallback = torch.ones_like(f)
    for _ in range(_MAX_BACKTRACKS):
        if bool(ok.all()):
            break
        f_try = ray.value(fallback)
        accept = ~ok & (f_try <= f + _ARMIJO_C1 * fallback * slope)
        t = torch.where(accept, fallback, t)
        f_new = torch.where(accept, f_try, f_new)
        ok |= accept
        fallback = fallback * 0.5
    return torch.where(ok, t, torch.zeros_like(t)), torch.where(ok, f_new, f)

@dataclass
class _LbfgsState:
    """The solver's working set: the layers still being optimised and their L-BFGS state.

    Finished layers are dropped from it (see :meth:`subset`) so that late iterations,
    where only a few slow layers are still running, stop paying passes over the others.
    """

    layers: torch.Tensor  # [l] indices of these rows in the full layer axis
    x: torch.Tensor  # [l, n, d]
    theta: torch.Tensor  # [l, K, d + 1]
    z: torch.Tensor  # [l, K, n]
    f: torch.Tensor  # [l, K] float64
    grad: torch.Tensor  # [l, K, d + 1]
    n_iter: torch.Tensor  # [l, K]
    active: torch.Tensor  # [l, K] bool
    history: list[_Pair]

    def subset(self, rows: torch.Tensor) -> _LbfgsState:
        """Return the state restricted to ``rows`` of the layer axis (copies ``x``)."""
        return _LbfgsState(
            layers=self.layers[rows], x=self.x[rows], theta=self.theta[rows], z=self.z[rows],
            f=self.f[rows], grad=self.grad[rows], n_iter=self.n_iter[rows],
            active=self.active[rows], history=[pair.take(rows) for pair in self.history],
        )

    def write_into(self, theta: torch.Tensor, n_iter: torch.Tensor, grad_max: torch.Tensor
                   ) -> None:
        """Copy this working set's results into the full-size output tensors."""
        theta[self.layers] = self.theta
        n_iter[self.layers] = self.n_iter
        grad_max[self.layers] = self.grad.abs().amax(dim=-1)

def _lbfgs_step(state: _LbfgsState, y: torch.Tensor, lam: float, tol: float) -> None:
    """Advance every active problem by one L-BFGS iteration (two passes over ``x``)."""
    active = state.active[..., None]
    direction = _lbfgs_direction(state.grad, state.history) * active
    ray = _Ray(z=state.z, u=_logits(direction, state.x), w=state.theta[..., :-1],
               dw=direction[..., :-1], y=y, lam=lam)
    step, state.f = _line_search(ray, state.f,
                                 _dot(state.grad, direction)[..., 0].to(torch.float64))
    step_ = step[..., None].to(state.x.dtype)
    state.theta = state.theta + step_ * direction
    state.z = state.z + step_ * ray.u
    new_grad = _gradient(state.z, state.theta, state.x, y, lam)
    # Finished problems contribute zero pairs, which the two-loop treats as identity.
    state.history.append(_Pair.of(step_ * direction, (new_grad - state.grad) * active))
    del state.history[:-_LBFGS_MEMORY]
    state.n_iter += state.active.long()
    state.grad = new_grad
    # A problem whose line search found no decrease cannot progress in float32: stop it.
    state.active = state.active & (step > 0) & (new_grad.abs().amax(dim=-1) > tol)

def fit_logistic_batched(x: torch.Tensor, y: torch.Tensor, *, C: float = 1.0,  # noqa: N803
                         max_iter: int = 200, tol: float = 1e-4) -> LogisticFit:
    """Solve L × K L2-logistic regressions sharing features per layer with batched L-BFGS.

    Each iteration makes exactly two passes over ``x`` (logit change along the direction,
    gradient at the new point); the line search works on logits and needs none. Layers
    whose problems have all finished are dropped from the working set once they are at
    least a quarter of it.

    Args:
        x: ``[L, n, d]`` standardised float32 features.
        y: ``[K, n]`` 0/1 labels; column k defines problem (ℓ, k) on every layer ℓ.
        C: Inverse regularisation strength (sklearn's convention).
        max_iter: Iteration cap per problem.
        tol: Gradient max-norm tolerance of the mean-scaled objective.

    Returns:
        A :class:`LogisticFit`.

    """
    n_layers, n, d = x.shape
    lam = 1.0 / (C * n)
    y = y.to(x.dtype)
    theta = torch.zeros((n_layers, y.shape[0], d + 1), dtype=x.dtype, device=x.device)
    z = _logits(theta, x)  # [L, K, n]
    grad = _gradient(z, theta, x, y, lam)
    state = _LbfgsState(
        layers=torch.arange(n_layers, device=x.device), x=x, theta=theta, z=z,
        f=_mean_log_loss(z, y) + _penalty(theta[..., :-1], lam), grad=grad,
        n_iter=torch.zeros((n_layers, y.shape[0]), dtype=torch.long, device=x.device),
        active=grad.abs().amax(dim=-1) > tol, history=[],
    )
    out_theta, out_iter = theta.clone(), state.n_iter.clone()
    out_grad_max = torch.zeros(state.n_iter.shape, dtype=x.dtype, device=x.device)
    for _ in range(max_iter):
        running = state.active.any(dim=-1)  # [l]
        if not bool(running.any()):
            break
        if int(running.sum()) <= 0.75 * len(running):
            state.write_into(out_theta, out_iter, out_grad_max)
            state = state.subset(running.nonzero()[:, 0])
        _lbfgs_step(state, y, lam, tol)
    state.write_into(out_theta, out_iter, out_grad_max)
    return LogisticFit(weights=out_theta[..., :-1].contiguous(),
                       bias=out_theta[..., -1].contiguous(), n_iter=out_iter,
                       converged=out_grad_max <= tol)
