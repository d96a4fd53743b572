"""The beyond-lazy-training variant of gradient descent (Wang, Wu, Lee, Ma, Ge 2020).

Model, loss and the algorithm as implemented here (order ``l >= 3``, ``m`` columns ``u_i`` of
``U`` (d x m), signs ``s_i`` in {+1, -1}, positive scalars ``c_i`` and ``ĉ_i``)::

    T(U)  = sum_i s_i c_i^{l-2} u_i^{(x)l}
    f(U)  = 1/2 ||T(U) - T*||_F^2 + lam * sum_i ĉ_i^{l-2} ||u_i||^l

``c`` and ``ĉ`` are *held fixed in the gradient*: with ``R = T(U) - T*`` (a CP tensor: the model's
components next to the target's with coefficients ``-a``),

    grad_{u_i} f = l s_i c_i^{l-2} R(u_i^{l-1}, I) + lam l ĉ_i^{l-2} ||u_i||^{l-2} u_i,

one batched contraction of the m columns against a CP tensor of rank ``m + r`` per step.
:func:`variant_loss` and :func:`variant_gradient` expose ``f`` and this gradient as plain
functions of ``U`` (the scalars as arguments) so the gradient can be checked against finite
differences.

The algorithm (the paper's Algorithm 1 as read here). ``K`` epochs of ``H`` steps of size ``eta``;
``kappa = sqrt(d (m + K))``:

1. *Initialisation.* Every column is drawn uniformly from the sphere of radius ``delta``
   (so ``||u_i|| = delta`` exactly), ``s_i`` uniform in {+1, -1}, ``c_i = kappa / ||u_i||``,
   ``ĉ_i = 1 / ||u_i||``. The column starts in *vector mode*.
2. *Epoch k = 1..K.* The column of smallest norm is re-drawn as in 1 (new direction, new sign,
   new scalars, vector mode); then ``H`` steps ``U <- U - eta grad f(U)`` follow.
3. *Rescaling* (after every step, columns in vector mode only):
   ``c_i <- c_i ||u_i|| / ||u_i'||`` and ``ĉ_i <- ĉ_i ||u_i|| / ||u_i'||`` (``u_i`` before and
   ``u_i'`` after the step). Hence ``c_i ||u_i|| = kappa`` and ``ĉ_i ||u_i|| = 1`` hold throughout
   vector mode: component i equals ``s_i kappa^{l-2} ||u_i||^2 ū_i^{(x)l}`` and its regulariser
   ``||u_i||^2`` — both 2-homogeneous in ``u_i``, as in a two-layer network whose output weight
   is tied to the norm of its input weights. The gradient sees a fixed ``c_i``, so during vector
   mode a small column moves like a step of the tensor power method amplified by ``kappa^{l-2}``
   (the amplification ``d^{(l-2)/2}`` offsets the ``d^{-(l-2)/2}`` correlation of a random
   direction with the target).
4. *Scalar-mode switch.* The first time (since its last draw) that ``||u_i|| > 2 sqrt(m+K) delta``,
   column i switches to *scalar mode*: from then on ``c_i`` and ``ĉ_i`` are constants (the
   values they had at the switch, after that step's rescaling) and are no longer rescaled. The
   component becomes the ordinary l-homogeneous term ``s_i c_i^{l-2} u_i^{(x)l}`` with a fixed
   scalar; the switch changes neither the model nor the loss (it is continuous). The threshold
   is read as the paper's: ``||P_B U||_F^2 <= (m+K) delta^2`` means the part of a column outside
   the target span is at most ``sqrt(m+K) delta``, so a column that doubles past that has grown
   inside the span, i.e. found a target direction.
5. In both modes ``ĉ_i / c_i = 1 / kappa``, so the regulariser equals
   ``lam / kappa^{l-2} * sum_i |weight_i|`` with ``weight_i = c_i^{l-2} ||u_i||^l``: an l1
   penalty on the component weights, which is what lets it prune spurious components.

``B`` is the orthogonal complement of the span of the target components ``u*_1..u*_r``;
``||P_B U||_F^2`` is the summed squared norm of the columns' projections onto B. It is recorded
after every epoch next to the paper's bound ``(m + K) delta^2`` (``m + K`` columns are drawn in
all, each with norm ``delta``). Targets are meant to have rank ``r << d`` and need not be
orthogonal (:meth:`Target.random_unit`).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Optional

import numpy as np

from ._checks import generator, positive_int, real_array, real_number
from .cp import CPTensor
from .progress import progress_bar
from .sampling import sphere
from .target import Target


def _target_arg(target) -> Target:
    if not isinstance(target, Target):
        raise TypeError(f"target must be a tdflow.Target, got {type(target).__name__}")
    return target


def _parts(target: Target, U, signs, c, c_hat=None):
    U = real_array(U, "U", 2, (target.dim, None))
    m = U.shape[1]
    if m < 1:
        raise ValueError("U must have m >= 1 columns")
    signs = real_array(signs, "signs", 1, (m,))
    if not np.all(np.abs(signs) == 1.0):
        raise ValueError("signs must hold only +1 and -1")
    c = real_array(c, "c", 1, (m,))
    if np.any(c <= 0):
        raise ValueError("c must be > 0")
    if c_hat is not None:
        c_hat = real_array(c_hat, "c_hat", 1, (m,))
        if np.any(c_hat <= 0):
            raise ValueError("c_hat must be > 0")
    return U, signs, c, c_hat


def _model(U, signs, c, order) -> CPTensor:
    # unit directions keep every Gram entry in [-1, 1]; the size goes into the coefficient
    norms = np.linalg.norm(U, axis=0)
    keep = norms > 0
    n = norms[keep]
    with np.errstate(over="ignore", invalid="ignore"):
        # (c ||u||)^{l-2} ||u||^2: in vector mode c ||u|| = kappa exactly, so no overflow there
        weight = signs[keep] * (c[keep] * n) ** (order - 2) * n ** 2
    if not np.all(np.isfinite(weight)):
        raise FloatingPointError("a component weight overflowed (NaN/Inf); try a smaller eta")
    return CPTensor(U[:, keep] / n, weight, order)


def variant_model(target: Target, U, signs, c) -> CPTensor:
    """The model ``T(U) = sum_i s_i c_i^{l-2} u_i^{(x)l}`` as a :class:`CPTensor` (zero columns
    dropped); its order is the target's."""
    target = _target_arg(target)
    U, signs, c, _ = _parts(target, U, signs, c)
    return _model(U, signs, c, target.order)


def variant_loss(target: Target, U, signs, c, c_hat, lam: float = 0.0) -> float:
    """``f(U) = 1/2 ||T(U) - T*||_F^2 + lam sum_i ĉ_i^{l-2} ||u_i||^l`` for the given scalars.

    ``U`` is d x m, ``signs``, ``c``, ``c_hat`` have shape (m,).
    """
    target = _target_arg(target)
    U, signs, c, c_hat = _parts(target, U, signs, c, c_hat)
    lam = real_number(lam, "lam", minimum=0.0)
    R = _model(U, signs, c, target.order) - target.tensor
    norms = np.linalg.norm(U, axis=0)
    return 0.5 * R.inner(R) + lam * float(np.sum(c_hat ** (target.order - 2) * norms ** target.order))


def variant_gradient(target: Target, U, signs, c, c_hat, lam: float = 0.0) -> np.ndarray:
    """The gradient of :func:`variant_loss` in ``U`` with ``c`` and ``c_hat`` held fixed (d x m)."""
    target = _target_arg(target)
    U, signs, c, c_hat = _parts(target, U, signs, c, c_hat)
    lam = real_number(lam, "lam", minimum=0.0)
    return _gradient(target, U, signs, c, c_hat, lam)


def _gradient(target, U, signs, c, c_hat, lam):
    l = target.order
    norms = np.linalg.norm(U, axis=0)
    R = _model(U, signs, c, l) - target.tensor
    safe = np.where(norms > 0, norms, 1.0)
    Ubar = U / safe
    # R(u^{l-1}, I) = ||u||^{l-1} R(ū^{l-1}, I); a zero column has zero gradient
    G = R.contract(Ubar) * (l * signs * (c * norms) ** (l - 2) * norms)
    G += (lam * l * (c_hat * norms) ** (l - 2)) * U
    return G


@dataclasses.dataclass
class VariantState:
    """The algorithm's state: ``U`` (d x m), ``signs``, ``c``, ``c_hat`` (m,), ``scalar_mode``
    (m,) booleans (False: vector mode), ``drawn`` the number of columns drawn so far."""

    U: np.ndarray
    signs: np.ndarray
    c: np.ndarray
    c_hat: np.ndarray
    scalar_mode: np.ndarray
    drawn: int

    def copy(self) -> "VariantState":
        return VariantState(self.U.copy(), self.signs.copy(), self.c.copy(), self.c_hat.copy(),
                            self.scalar_mode.copy(), self.drawn)


@dataclasses.dataclass
class BeyondLazyResult:
    """Records of one run, index 0 = initialisation, index k = after epoch k (arrays (K+1,)).

    ``loss`` the objective f, ``residual_norm`` ``||T - T*||_F``, ``relative_error``
    ``||T - T*||_F / ||T*||_F``, ``proj_B`` ``||P_B U||_F^2``, ``bound`` the paper's
    ``(m + K) delta^2``, ``n_scalar`` the number of columns in scalar mode; ``state`` the final
    state; ``n_steps`` gradient steps, ``work`` multiply-adds of the contractions
    (``2 (m + r) m d`` per step), ``wall_time`` seconds.
    """

    loss: np.ndarray
    residual_norm: np.ndarray
    relative_error: np.ndarray
    proj_B: np.ndarray
    bound: float
    n_scalar: np.ndarray
    state: VariantState
    n_steps: int
    work: float
    wall_time: float
    params: dict

    @property
    def within_bound(self) -> bool:
        """``||P_B U||_F^2 <= (m + K) delta^2`` after every epoch."""
        return bool(np.all(self.proj_B <= self.bound))

    def summary(self) -> str:
        rows = [f"{'epoch':>5}  {'loss':>11}  {'rel.err':>9}  {'|P_B U|^2':>10}  scalar"]
        for k in range(self.loss.size):
            rows.append(f"{k:>5}  {self.loss[k]:11.4e}  {self.relative_error[k]:9.3e}  "
                        f"{self.proj_B[k]:10.3e}  {self.n_scalar[k]:>6}")
        rows.append(f"bound (m+K) delta^2 = {self.bound:.3e}: "
                    f"{'held' if self.within_bound else 'EXCEEDED'}")
        return "\n".join(rows)


class BeyondLazy:
    """The gradient-descent variant of Wang, Wu, Lee, Ma, Ge (2020); see the module docstring.

    Parameters
    ----------
    target : Target
        ``T*``, order ``l >= 3`` (rank ``r << d``; components need not be orthogonal).
    m : int
        Number of columns.
    epochs : int
        ``K``: epochs, each re-drawing the smallest column and then taking ``steps`` steps.
    steps : int
        ``H``: gradient steps per epoch.
    eta : float, optional
        Step size; None picks ``0.3 / (l a_max max(kappa^{l-2}, a_max^{(l-2)/l} c_s^{2(l-2)/l}))``
        with ``c_s = sqrt(d) / (2 delta)`` the scalar a column has at its switch: the inverse of
        the largest relative growth rate per unit step in vector mode and, for a fitted
        component of weight ``a_max``, in scalar mode (0.3 for safety).
    delta : float
        Initialisation norm of every drawn column.
    lam : float
        Regularisation ``lam sum ĉ_i^{l-2} ||u_i||^l``.
    """

    def __init__(self, target: Target, m: int, *, epochs: int = 40, steps: int = 100,
                 eta: Optional[float] = None, delta: float = 1e-3, lam: float = 1e-4):
        self.target = _target_arg(target)
        self.m = positive_int(m, "m")
        self.epochs = positive_int(epochs, "epochs", minimum=0)
        self.steps = positive_int(steps, "steps", minimum=0)
        self.delta = real_number(delta, "delta", minimum=0.0, strict=True)
        self.lam = real_number(lam, "lam", minimum=0.0)
        d, l = self.target.dim, self.target.order
        self.kappa = float(np.sqrt(d * (self.m + self.epochs)))
        self.threshold = 2.0 * np.sqrt(self.m + self.epochs) * self.delta
        if eta is None:
            a_max = max(float(np.max(self.target.a)), 1e-300)
            c_s = np.sqrt(d) / (2.0 * self.delta)
            rate = l * a_max * max(self.kappa ** (l - 2), a_max ** ((l - 2) / l) * c_s ** (2.0 * (l - 2) / l))
            eta = 0.3 / rate
        self.eta = real_number(eta, "eta", minimum=0.0, strict=True)
        Q, _ = np.linalg.qr(self.target.U)
        rank = np.linalg.matrix_rank(self.target.U)
        self._Q = Q[:, :rank]

    @property
    def order(self) -> int:
        return self.target.order

    @property
    def bound(self) -> float:
        """The paper's bound ``(m + K) delta^2`` on ``||P_B U||_F^2``."""
        return (self.m + self.epochs) * self.delta ** 2

    def _draw(self, n, g):
        U = sphere(self.target.dim, n, self.delta, g)
        signs = g.choice(np.array([-1.0, 1.0]), size=n)
        return U, signs

    def init_state(self, rng) -> VariantState:
        """``m`` fresh columns (step 1 of the algorithm); ``rng`` a Generator or a seed."""
        g = generator(rng)
        U, signs = self._draw(self.m, g)
        n = np.linalg.norm(U, axis=0)
        return VariantState(U, signs, self.kappa / n, 1.0 / n, np.zeros(self.m, bool), self.m)

    def _check_state(self, state) -> VariantState:
        if not isinstance(state, VariantState):
            raise TypeError(f"state must be a VariantState, got {type(state).__name__}")
        _parts(self.target, state.U, state.signs, state.c, state.c_hat)
        if state.U.shape[1] != self.m:
            raise ValueError(f"state.U must have shape ({self.target.dim}, {self.m}), got {state.U.shape}")
        mode = np.asarray(state.scalar_mode)
        if mode.dtype != bool or mode.shape != (self.m,):
            raise ValueError(f"state.scalar_mode must be a boolean array of shape ({self.m},)")
        return state

    def model(self, state: VariantState) -> CPTensor:
        """The model tensor of ``state``."""
        self._check_state(state)
        return _model(state.U, state.signs, state.c, self.order)

    def loss(self, state: VariantState) -> float:
        """The objective f at ``state``."""
        self._check_state(state)
        return variant_loss(self.target, state.U, state.signs, state.c, state.c_hat, self.lam)

    def gradient(self, state: VariantState) -> np.ndarray:
        """``grad f`` at ``state`` with the scalars held fixed."""
        self._check_state(state)
        return _gradient(self.target, state.U, state.signs, state.c, state.c_hat, self.lam)

    def proj_B(self, U) -> float:
        """``||P_B U||_F^2``: squared norm of the columns' parts orthogonal to the target span."""
        U = real_array(U, "U", 2, (self.target.dim, None))
        PU = U - self._Q @ (self._Q.T @ U)
        return float(np.sum(PU * PU))

    def rescale(self, state: VariantState, U_new) -> VariantState:
        """Steps 3 and 4: replace ``state.U`` by ``U_new``, rescale the scalars of the columns in
        vector mode by ``||u_i|| / ||u_i'||`` and switch to scalar mode the columns whose new norm
        exceeds ``2 sqrt(m + K) delta``. Returns a new state."""
        self._check_state(state)
        return self._rescale(state, real_array(U_new, "U_new", 2, state.U.shape))

    def _rescale(self, state, U_new):
        old = np.linalg.norm(state.U, axis=0)
        new = np.linalg.norm(U_new, axis=0)
        vector = ~state.scalar_mode & (new > 0)
        ratio = np.ones_like(old)
        ratio[vector] = old[vector] / new[vector]
        switch = ~state.scalar_mode & (new > self.threshold)
        return VariantState(U_new, state.signs.copy(), state.c * ratio, state.c_hat * ratio,
                            state.scalar_mode | switch, state.drawn)

    def step(self, state: VariantState) -> VariantState:
        """One gradient step of size ``eta`` followed by :meth:`rescale`."""
        return self._step(self._check_state(state))

    def _step(self, state):
        with np.errstate(over="ignore", invalid="ignore"):
            G = _gradient(self.target, state.U, state.signs, state.c, state.c_hat, self.lam)
            U_new = state.U - self.eta * G
        if not np.all(np.isfinite(U_new)):
            raise FloatingPointError("the gradient step gave NaN/Inf; try a smaller eta")
        return self._rescale(state, np.asfortranarray(U_new))

    def redraw(self, state: VariantState, rng) -> VariantState:
        """Step 2: re-draw the column of smallest norm (new direction, sign, scalars; vector mode)."""
        self._check_state(state)
        g = generator(rng)
        s = state.copy()
        i = int(np.argmin(np.linalg.norm(s.U, axis=0)))
        u, sign = self._draw(1, g)
        s.U[:, i] = u[:, 0]
        s.signs[i] = sign[0]
        s.c[i] = self.kappa / self.delta
        s.c_hat[i] = 1.0 / self.delta
        s.scalar_mode[i] = False
        s.drawn += 1
        return s

    def run(self, rng, *, state: Optional[VariantState] = None,
            progress: Optional[bool] = None) -> BeyondLazyResult:
        """Run ``K`` epochs from ``state`` (default: :meth:`init_state` with ``rng``).

        ``rng`` (a Generator or an int seed) draws the initial columns and every re-draw, so a
        run is reproducible from its seed. ``progress`` shows a bar over the epochs (default:
        only on a terminal).
        """
        g = generator(rng)
        state = self.init_state(g) if state is None else self._check_state(state).copy()
        d, r = self.target.dim, self.target.rank
        tnorm = self.target.norm
        losses, rnorms, projs, nscal = [], [], [], []

        def record(s):
            R = _model(s.U, s.signs, s.c, self.order) - self.target.tensor
            rn = np.sqrt(max(R.inner(R), 0.0))
            norms = np.linalg.norm(s.U, axis=0)
            reg = self.lam * float(np.sum(s.c_hat ** (self.order - 2) * norms ** self.order))
            losses.append(0.5 * rn ** 2 + reg)
            rnorms.append(rn)
            projs.append(self.proj_B(s.U))
            nscal.append(int(s.scalar_mode.sum()))

        start = time.perf_counter()
        record(state)
        n_steps = 0
        with progress_bar(0, self.epochs, enabled=progress, desc=f"beyond-lazy d={d} m={self.m}") as update:
            for k in range(self.epochs):
                state = self.redraw(state, g)
                for _ in range(self.steps):
                    state = self._step(state)
                    n_steps += 1
                record(state)
                update(k + 1)
        rnorms = np.asarray(rnorms)
        return BeyondLazyResult(
            loss=np.asarray(losses), residual_norm=rnorms,
            relative_error=rnorms / tnorm if tnorm > 0 else rnorms,
            proj_B=np.asarray(projs), bound=self.bound, n_scalar=np.asarray(nscal),
            state=state, n_steps=n_steps, work=2.0 * n_steps * (self.m + r) * self.m * d,
            wall_time=time.perf_counter() - start,
            params=dict(d=d, r=r, order=self.order, m=self.m, epochs=self.epochs,
                        steps=self.steps, eta=self.eta, delta=self.delta, lam=self.lam),
        )
