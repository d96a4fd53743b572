"""Algorithm 1 of Wang, Wu, Lee, Ma, Ge (2020), "Beyond Lazy Training for Over-parameterized
Tensor Decomposition" (``papers/wang-wu-lee-ma-ge-2020-beyond-lazy.md``), as printed.

Names: the paper's signs ``a_i`` are ``signs`` here (tdflow's ``a`` are the target's weights);
``K`` = ``epochs``, ``H`` = ``steps``, ``η`` = ``eta``, ``δ`` = ``delta``, ``λ`` = ``lam``;
``kappa = sqrt(d (m + K))`` (tdflow's name for the paper's factor). Order ``l >= 3``.

Model and loss (Section 4)::

    T = sum_i a_i c_i^{l-2} u_i^{(x)l}
    f(U, C, Ĉ, A) = 1/2 ||sum_i a_i c_i^{l-2} u_i^{(x)l} - T*||_F^2 + λ sum_i ĉ_i^{l-2} ||u_i||^l

"when taking the gradient over U, we treat c_i's and ĉ_i's as constants": with ``R = T - T*``
(a CP tensor: the model's components next to the target's with coefficients ``-a*``),
``grad_{u_i} f = l a_i c_i^{l-2} R(u_i^{l-1}, I) + λ l ĉ_i^{l-2} ||u_i||^{l-2} u_i``, one batched
contraction in the C++ core (:meth:`CPTensor.contract`) per step. The model, the objective and
its gradient are :mod:`tdflow.variant`; this module runs the algorithm.

Algorithm 1 (quoted): "For each i ∈ [m], initialize u_i i.i.d. from δ Unif(S^{d-1}); initialize
a_i i.i.d. from Unif{1, −1}; initialize c_i as √(d(m+K))/‖u_i‖ and ĉ_i as 1/‖u_i‖. for epoch
k := 1 to K do: Let u_j be any vector with the smallest ℓ2 norm among all columns of U.
Re-initialize u_j from δ Unif(S^{d-1}), re-initialize a_j from Unif{1, −1} and set
c_j = √(d(m+K))/‖u_j‖, ĉ_j = 1/‖u_j‖. for iteration t := 1 to H do: U' ← U − η ∇_U f(U, C̄).
for i := 1 to m do: c_i' ← (‖u_i‖/‖u_i'‖) c_i; ĉ_i' ← (‖u_i‖/‖u_i'‖) ĉ_i. if ‖u_i‖ ≤ 2√(m+K) δ
< ‖u_i'‖ holds for the first time since it was (re)-initialized then c_i' ← c_i'/√(d(m+K)).
▷ Scalar Mode Switch. U ← U', C ← C', Ĉ ← Ĉ." The last assignment is read as ``Ĉ ← Ĉ'``: the
text above it says "we update each c_i and ĉ_i using the updated value of u_i". ``K`` is the
number of epochs ("Input: number of epochs K"), so ``m + K`` columns are drawn in all.

Consequences, checked at every step by :meth:`BeyondLazy.run` (``invariant_error``):
``ĉ_i ||u_i|| = 1`` always, and ``c_i ||u_i|| = kappa`` before the switch and ``= 1`` after it
("c_i will be equal to ĉ_i afterwards"). So component i is ``a_i kappa^{l-2} ||u_i||^2
ū_i^{(x)l}`` before its switch and ``a_i ||u_i||^2 ū_i^{(x)l}`` after, and its regulariser is
``λ ||u_i||^2``: the model is 2-homogeneous in every column in both modes. The switch divides
that column's component by ``kappa^{l-2}`` (Lemma 2's sketch counts it among the ways f can rise).
A column that lands exactly on 0 keeps its scalars (the ratio ``||u_i||/||u_i'||`` is undefined).

Lemma 5: "||P_B U||_F^2 ≤ (m+K) δ^2 throughout the algorithm", B the orthogonal complement of
S = span{u*_i}. :meth:`BeyondLazy.run` evaluates ``||P_B U||_F^2`` after the initialisation,
after every re-draw and after every step, and reports the largest value of each epoch.
Targets need not be orthogonal (:meth:`Target.random_unit`).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Optional

import numpy as np

from ._checks import generator, positive_int, real_array, real_number
from .cp import CPTensor
from .display import Summarised
from .progress import progress_bar
from .sampling import sphere
from .target import Target
from .variant import (VariantState, check_parts, grad_u, loss_and_residual, model_tensor,
                      target_arg, variant_loss)
from .variant import variant_gradient, variant_model  # noqa: F401  (importable from here too)


@dataclasses.dataclass(repr=False)
class BeyondLazyResult(Summarised):
    """Records of one run, index 0 = initialisation, index k = epoch k (arrays (K+1,)).

    At the end of each epoch: ``loss`` f, ``residual_norm`` ``||T - T*||_F``,
    ``relative_error`` ``||T - T*||_F / ||T*||_F``, ``proj_B`` ``||P_B U||_F^2``, ``n_scalar``
    the columns in scalar mode. Over each epoch (its re-draw and every step): ``proj_B_max`` the
    largest ``||P_B U||_F^2`` (Lemma 5), ``n_switches`` scalar-mode switches. ``bound`` Lemma 5's
    ``(m + K) delta^2``; ``invariant_error`` the largest relative deviation, over every step of
    the run, of ``ĉ_i ||u_i||`` from 1 and of ``c_i ||u_i||`` from ``kappa`` (before the switch)
    or 1 (after); ``state`` the final state; ``n_steps`` gradient steps, ``work`` multiply-adds
    of the contractions (``2 (m + r) m d`` a step), ``wall_time`` seconds.
    """

    loss: np.ndarray
    residual_norm: np.ndarray
    relative_error: np.ndarray
    proj_B: np.ndarray
    proj_B_max: np.ndarray
    bound: float
    n_scalar: np.ndarray
    n_switches: np.ndarray
    invariant_error: float
    state: VariantState
    n_steps: int
    work: float
    wall_time: float
    params: dict

    @property
    def worst_proj_B(self) -> float:
        """The largest ``||P_B U||_F^2`` seen at any step of the run."""
        return float(np.max(self.proj_B_max))

    @property
    def within_bound(self) -> bool:
        """Lemma 5, ``||P_B U||_F^2 <= (m + K) delta^2``, held at every step."""
        return self.worst_proj_B <= self.bound

    def _summary(self) -> list:
        return [("epochs", self.loss.size - 1), ("loss", self.loss[-1]),
                ("relative_error", self.relative_error[-1]), ("worst_proj_B", self.worst_proj_B),
                ("bound", self.bound), ("within_bound", self.within_bound),
                ("n_scalar", self.n_scalar[-1]), ("invariant_error", self.invariant_error),
                ("n_steps", self.n_steps), ("work", self.work), ("wall_time", self.wall_time)]

    def summary(self) -> str:
        rows = [f"{'epoch':>5}  {'loss':>11}  {'rel.err':>9}  {'|P_B U|^2':>10}  {'max':>10}  "
                f"scalar  switches"]
        for k in range(self.loss.size):
            rows.append(f"{k:>5}  {self.loss[k]:11.4e}  {self.relative_error[k]:9.3e}  "
                        f"{self.proj_B[k]:10.3e}  {self.proj_B_max[k]:10.3e}  {self.n_scalar[k]:>6}  "
                        f"{self.n_switches[k]:>8}")
        rows.append(f"Lemma 5: max over every step of |P_B U|_F^2 = {self.worst_proj_B:.3e} "
                    f"{'<=' if self.within_bound else '>'} (m+K) delta^2 = {self.bound:.3e} "
                    f"({'held' if self.within_bound else 'EXCEEDED'})")
        rows.append(f"invariants c_i|u_i| in {{kappa, 1}}, ĉ_i|u_i| = 1: worst relative "
                    f"deviation {self.invariant_error:.1e}")
        return "\n".join(rows)


class BeyondLazy:
    """Algorithm 1 of Wang, Wu, Lee, Ma, Ge (2020); see the module docstring.

    Parameters
    ----------
    target : Target
        ``T*``, order ``l >= 3`` (rank ``r << d``; components need not be orthogonal).
    m : int
        Number of columns.
    epochs : int
        ``K``: epochs, each re-initialising the smallest column and then taking ``steps`` steps.
    steps : int
        ``H``: gradient steps per epoch.
    eta : float, optional
        Step size ``η``. None: tdflow's practical choice (Theorem 3 only says
        ``η = poly(ε, 1/d)``), ``0.3 / (l max(||T*||_F, l kappa^{2(l-2)} θ^2))`` with
        ``θ = 2 sqrt(m+K) δ`` the switch threshold: 0.3 over the largest curvature of f along
        a column's own direction, ``l^2 (c_i ||u_i||)^{2(l-2)} ||u_i||^2`` (the Gauss-Newton
        term; with ``c_i ||u_i|| = 1`` after the switch and a component ``||u_i||^2`` of order
        ``||T*||_F``, with ``c_i ||u_i|| = kappa`` and ``||u_i|| <= θ`` before). Measured with
        ``epochs=20, steps=100``, seed 3, targets of ``tdflow compare`` (r = 2, λ = 1e-4, whose
        bias leaves a relative error of about λ): relative error 1e-4 to 2.4e-4 for l = 3
        (d = 8, 30, 60; m = 3 to 80), 1.2e-4 to 4.2e-3 for l = 4, d = 6 (m = 3 to 24); too slow
        for l = 4, d = 20 (0.61 at m = 10) and l = 5, d = 8 (1.0), where δ = 1e-3 makes the
        columns heavy before their switch. ``||P_B U||_F^2`` stayed below Lemma 5's bound in all
        of these (at most 0.77 of it).
    delta : float
        ``δ``: norm of every (re)initialised column.
    lam : float
        ``λ`` of the regulariser ``λ sum ĉ_i^{l-2} ||u_i||^l``.
    """

    def __init__(self, target: Target, m: int, *, epochs: int = 40, steps: int = 100,
                 eta: Optional[float] = None, delta: float = 1e-3, lam: float = 1e-4):
        self.target = target_arg(target)
        self.m = positive_int(m, "m")
        self.epochs = positive_int(epochs, "epochs", minimum=0)
        self.steps = positive_int(steps, "steps", minimum=0)
        self.delta = real_number(delta, "delta", minimum=0.0, strict=True)
        self.lam = real_number(lam, "lam", minimum=0.0)
        d, l = self.target.dim, self.target.order
        self.kappa = math.sqrt(d * (self.m + self.epochs))
        self.threshold = 2.0 * math.sqrt(self.m + self.epochs) * self.delta
        if eta is None:
            try:
                heavy = l * self.kappa ** (2 * (l - 2)) * self.threshold ** 2
            except OverflowError:
                raise ValueError("the automatic eta underflows (kappa^{2(l-2)} overflows); pass eta") from None
            eta = 0.3 / (l * max(self.target.norm, heavy, 1e-300))
        self.eta = real_number(eta, "eta", minimum=0.0, strict=True)
        Q, _ = np.linalg.qr(self.target.U)
        self._Q = Q[:, :np.linalg.matrix_rank(self.target.U)]

    @classmethod
    def theory(cls, target: Target, eps: float, *, c_m: float = 1.0, c_lam: float = 1.0,
               c_K: float = 1.0, c_H: float = 1.0, m: Optional[int] = None,
               delta: Optional[float] = None, eta: Optional[float] = None) -> "BeyondLazy":
        """Theorem 3's parameter choices, each hidden constant a keyword (default 1).

        Theorem 3 (quoted): "Given any target accuracy ε > 0, there exists
        m = O(r^{2.5l}/ε^5 · log(d/ε)), λ = O(ε/r^{0.5l}), δ = poly(ε, 1/d), η = poly(ε, 1/d),
        H = poly(1/ε, d) such that with probability at least 0.99, our algorithm finds a tensor T
        satisfying ||T − T*||_F ≤ ε within K = O(r^{2l}/ε^4 · log(d/ε)) epochs." Section 5 fixes
        the orders: "m = Θ(r^{2.5l}/ε^5 · log(d/ε)), λ = Θ(ε/r^{0.5l})" and "ηH =
        Θ(r^{0.5l}/ε · log(d/ε))". Hence (``L = log(d/ε)``, natural log)::

            m   = ceil(c_m · r^{2.5 l} / ε^5 · L)      (or the m given)
            λ   = c_lam · ε / r^{0.5 l}
            K   = ceil(c_K · r^{2 l} / ε^4 · L)
            H   = ceil(c_H · r^{0.5 l} / ε · L / η)

        δ and η: the printed text gives only "poly(ε, 1/d)" (its exponents are in the appendix,
        which ``papers/`` does not hold), so they are arguments; None takes tdflow's choice, not
        the paper's: η the practical rule of :class:`BeyondLazy`, and ``δ = ε^2 sqrt(λ) /
        (l sqrt(m + K))``, so that the part of T outside ``S^{(x)l}`` carried by switched columns,
        at most ``l ||P_B U||_F (sum ||u_i||^2)^{1/2}``, is at most ε² by Lemma 5 and
        ``λ sum ||u_i||^2 <= f <= 1``. Theorem 3 takes ``||T*||_F = 1`` ("Without loss of
        generality"); other targets are refused.

        Example: ``d = 10, r = 2, l = 3, ε = 0.1`` gives m = 83 362 485, λ = 0.035355,
        K = 2 947 309, δ = 6.746e-08, η = 2.458e-05, H = 5 299 618: 1.6e13 steps of
        ``2 (m + r) m d`` = 1.4e17 multiply-adds each. The theorem's scales are far from
        runnable; the constructor's defaults are tdflow's practical ones.
        """
        target = target_arg(target)
        eps = real_number(eps, "eps", minimum=0.0, strict=True)
        if eps >= 1.0:
            raise ValueError(f"eps must be < ||T*||_F = 1 (Theorem 3), got {eps}")
        tnorm = target.norm
        if abs(tnorm - 1.0) > 1e-8:
            raise ValueError(f"Theorem 3 assumes ||T*||_F = 1, got {tnorm:.6g}; "
                             "divide the target's weights a by its norm")
        consts = {"c_m": c_m, "c_lam": c_lam, "c_K": c_K, "c_H": c_H}
        for name, value in consts.items():
            real_number(value, name, minimum=0.0, strict=True)
        d, r, l = target.dim, target.rank, target.order
        L = math.log(d / eps)
        try:
            m = positive_int(m, "m") if m is not None else math.ceil(c_m * r ** (2.5 * l) / eps ** 5 * L)
            K = max(math.ceil(c_K * r ** (2 * l) / eps ** 4 * L), 1)
        except (ZeroDivisionError, OverflowError):
            raise ValueError(f"eps = {eps} is too small: Theorem 3's m or K overflows") from None
        lam = c_lam * eps / r ** (0.5 * l)
        if delta is None:
            delta = eps ** 2 * math.sqrt(lam) / (l * math.sqrt(m + K))
        probe = cls(target, m, epochs=K, steps=1, eta=eta, delta=delta, lam=lam)
        H = max(math.ceil(c_H * r ** (0.5 * l) / eps * L / probe.eta), 1)
        return cls(target, m, epochs=K, steps=H, eta=probe.eta, delta=delta, lam=lam)

    @property
    def order(self) -> int:
        return self.target.order

    @property
    def bound(self) -> float:
        """Lemma 5's bound ``(m + K) delta^2`` on ``||P_B U||_F^2``."""
        return (self.m + self.epochs) * self.delta ** 2

    def _draw(self, n, g):
        U = sphere(self.target.dim, n, self.delta, g)
        signs = g.choice(np.array([-1.0, 1.0]), size=n)
        return U, signs

    def init_state(self, rng) -> VariantState:
        """Algorithm 1's initialisation; ``rng`` a Generator or a seed."""
        g = generator(rng)
        U, signs = self._draw(self.m, g)
        n = np.linalg.norm(U, axis=0)
        return VariantState(U, signs, self.kappa / n, 1.0 / n, np.zeros(self.m, bool), self.m)

    def _check_state(self, state) -> VariantState:
        if not isinstance(state, VariantState):
            raise TypeError(f"state must be a VariantState, got {type(state).__name__}")
        check_parts(self.target, state.U, state.signs, state.c, state.c_hat)
        if state.U.shape[1] != self.m:
            raise ValueError(f"state.U must have shape ({self.target.dim}, {self.m}), got {state.U.shape}")
        mode = np.asarray(state.scalar_mode)
        if mode.dtype != bool or mode.shape != (self.m,):
            raise ValueError(f"state.scalar_mode must be a boolean array of shape ({self.m},)")
        return state

    def model(self, state: VariantState) -> CPTensor:
        """The model tensor of ``state``."""
        self._check_state(state)
        return model_tensor(state.U, state.signs, state.c, self.order)

    def loss(self, state: VariantState) -> float:
        """The objective f at ``state``."""
        self._check_state(state)
        return variant_loss(self.target, state.U, state.signs, state.c, state.c_hat, self.lam)

    def gradient(self, state: VariantState) -> np.ndarray:
        """``∇_U f`` at ``state`` with the scalars held fixed."""
        self._check_state(state)
        return grad_u(self.target, state.U, state.signs, state.c, state.c_hat, self.lam)

    def proj_B(self, U) -> float:
        """``||P_B U||_F^2``: squared norm of the columns' parts orthogonal to span{u*_i}."""
        U = real_array(U, "U", 2, (self.target.dim, None))
        return self._proj_B(U)

    def _proj_B(self, U):
        PU = U - self._Q @ (self._Q.T @ U)
        return float(np.vdot(PU, PU))

    def rescale(self, state: VariantState, U_new) -> VariantState:
        """The inner loop of Algorithm 1 after ``U'``: ``c_i' = (||u_i||/||u_i'||) c_i`` and
        ``ĉ_i' = (||u_i||/||u_i'||) ĉ_i`` for every column, then the scalar-mode switch
        ``c_i' <- c_i' / sqrt(d (m+K))`` for the columns where ``||u_i|| <= 2 sqrt(m+K) δ <
        ||u_i'||`` holds for the first time since their (re)initialisation. Returns a new state."""
        self._check_state(state)
        return self._rescale(state, real_array(U_new, "U_new", 2, state.U.shape))[0]

    def _rescale(self, state, U_new, old=None):
        """(new state, ||u_i'||); ``old`` the norms of ``state.U`` when known."""
        old = np.linalg.norm(state.U, axis=0) if old is None else old
        new = np.linalg.norm(U_new, axis=0)
        ratio = np.divide(old, new, out=np.ones_like(old), where=new > 0)
        c, c_hat = state.c * ratio, state.c_hat * ratio
        switch = ~state.scalar_mode & (old <= self.threshold) & (self.threshold < new)
        c[switch] /= self.kappa
        return VariantState(U_new, state.signs.copy(), c, c_hat, state.scalar_mode | switch,
                            state.drawn), new

    def step(self, state: VariantState) -> VariantState:
        """One iteration: ``U' = U - η ∇_U f(U, C̄)``, then :meth:`rescale`."""
        return self._step(self._check_state(state))[0]

    def _step(self, state, norms=None):
        with np.errstate(over="ignore", invalid="ignore"):
            G = grad_u(self.target, state.U, state.signs, state.c, state.c_hat, self.lam)
            U_new = state.U - self.eta * G
        if not np.all(np.isfinite(U_new)):
            raise FloatingPointError("the gradient step gave NaN/Inf; try a smaller eta")
        return self._rescale(state, np.asfortranarray(U_new), norms)

    def redraw(self, state: VariantState, rng) -> VariantState:
        """The start of an epoch: the first column of smallest norm is re-initialised from
        ``δ Unif(S^{d-1})`` with a new sign, ``c_j = sqrt(d(m+K))/||u_j||``, ``ĉ_j = 1/||u_j||``,
        and its switch is re-armed."""
        self._check_state(state)
        g = generator(rng)
        s = state.copy()
        j = int(np.argmin(np.linalg.norm(s.U, axis=0)))
        u, sign = self._draw(1, g)
        s.U[:, j] = u[:, 0]
        s.signs[j] = sign[0]
        n = float(np.linalg.norm(s.U[:, j]))
        s.c[j] = self.kappa / n
        s.c_hat[j] = 1.0 / n
        s.scalar_mode[j] = False
        s.drawn += 1
        return s

    def invariant_error(self, state: VariantState) -> float:
        """The largest relative deviation of ``ĉ_i ||u_i||`` from 1 and of ``c_i ||u_i||`` from
        ``kappa`` (before the column's switch) or 1 (after), over the nonzero columns."""
        self._check_state(state)
        return self._invariant_error(state, np.linalg.norm(state.U, axis=0))

    def _invariant_error(self, s, n):
        cn = s.c * n
        cn[~s.scalar_mode] /= self.kappa
        err = np.maximum(np.abs(cn - 1.0), np.abs(s.c_hat * n - 1.0))
        return float(err.max() if n.all() else np.max(err[n > 0], initial=0.0))

    def run(self, rng, *, state: Optional[VariantState] = None,
            progress: Optional[bool] = None) -> BeyondLazyResult:
        """Run ``K`` epochs from ``state`` (default: :meth:`init_state` with ``rng``).

        ``rng`` (a Generator or an int seed) draws the initial columns and every re-draw, so a
        run is reproducible from its seed. Lemma 5's ``||P_B U||_F^2`` and the invariants of the
        scalars are evaluated after every step. ``progress`` shows a bar over the epochs
        (default: only on a terminal).
        """
        g = generator(rng)
        state = self.init_state(g) if state is None else self._check_state(state).copy()
        d, r = self.target.dim, self.target.rank
        rec = {k: [] for k in ("loss", "rn", "proj", "proj_max", "nscal", "nswitch")}

        def record(s, proj_max, nswitch):
            f, rn = loss_and_residual(self.target, s.U, s.signs, s.c, s.c_hat, self.lam)
            for key, value in zip(rec, (f, rn, self._proj_B(s.U), proj_max,
                                        int(s.scalar_mode.sum()), nswitch)):
                rec[key].append(value)

        start = time.perf_counter()
        inv = self._invariant_error(state, np.linalg.norm(state.U, axis=0))
        record(state, self._proj_B(state.U), 0)
        n_steps = 0
        with progress_bar(0, self.epochs, enabled=progress, desc=f"beyond-lazy d={d} m={self.m}") as update:
            for k in range(self.epochs):
                state = self.redraw(state, g)
                proj_max, nswitch = self._proj_B(state.U), 0
                norms = np.linalg.norm(state.U, axis=0)
                for _ in range(self.steps):
                    before = state.scalar_mode
                    state, norms = self._step(state, norms)
                    n_steps += 1
                    nswitch += int(np.count_nonzero(state.scalar_mode & ~before))
                    proj_max = max(proj_max, self._proj_B(state.U))
                    inv = max(inv, self._invariant_error(state, norms))
                record(state, proj_max, nswitch)
                update(k + 1)
        rn = np.asarray(rec["rn"])
        tnorm = self.target.norm
        return BeyondLazyResult(
            loss=np.asarray(rec["loss"]), residual_norm=rn,
            relative_error=rn / tnorm if tnorm > 0 else rn, proj_B=np.asarray(rec["proj"]),
            proj_B_max=np.asarray(rec["proj_max"]), bound=self.bound,
            n_scalar=np.asarray(rec["nscal"]), n_switches=np.asarray(rec["nswitch"]),
            invariant_error=inv, state=state, n_steps=n_steps,
            work=2.0 * n_steps * (self.m + r) * self.m * d, wall_time=time.perf_counter() - start,
            params=dict(d=d, r=r, order=self.order, m=self.m, epochs=self.epochs,
                        steps=self.steps, eta=self.eta, delta=self.delta, lam=self.lam),
        )
