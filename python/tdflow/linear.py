"""Gradient flow on deep linear models ``L(W_1, ..., W_L) = f(W_1 W_2 ⋯ W_L)``.

Conventions
-----------
Layer ``W_l`` is ``n_{l-1} x n_l`` and the end-to-end matrix is ``W = W_1 W_2 ... W_L``
(``n_0 x n_L``). Two losses are supported:

* matrix factorisation ``f(W) = 1/2 ||Y - W||_F^2`` (``Y`` is ``n_0 x n_L``; ``mu = K = 1``);
* linear regression ``f(W) = 1/2 ||Y - X W||_F^2`` (``X`` is ``N x n_0``, ``Y`` is ``N x n_L``;
  ``mu`` and ``K`` are the extreme eigenvalues of ``X^T X``).

With ``A_l = W_1 ... W_{l-1}``, ``B_l = W_{l+1} ... W_L`` and ``G = grad f(W)``, gradient flow is
``dW_l/dt = -A_l^T G B_l^T``, and the **imbalances**::

    D_l = W_l^T W_l - W_{l+1} W_{l+1}^T        (n_l x n_l, l = 1, ..., L-1)

are conserved exactly (differentiate: both terms have derivative ``-B_l G^T A_{l+1} - A_{l+1}^T G B_l^T``).
This is the transpose convention of Min, Tarmoun, Vidal, Mallada for ``W = U V^T``
(``W_1 = U``, ``W_2 = V^T``, ``D = U^T U - V^T V``).

Along the flow ``d/dt (L - f*) = -||grad L||^2 = -<G, T_W(G)>`` with the positive semidefinite
operator ``T_W(E) = sum_l A_l A_l^T E B_l^T B_l``; ``f`` is mu-strongly convex, hence
``||G||^2 >= 2 mu (f - f*)`` (Polyak-Lojasiewicz), and therefore::

    -d/dt log(L - f*)  >=  2 mu lambda_min(T_W(t)).

:meth:`DeepLinearFlow.rate_bound` lower-bounds ``lambda_min(T_W(t))`` uniformly in time from
the conserved imbalances and the margin of the initialisation, by the theorems of Min, Vidal,
Mallada (2023) implemented in :mod:`tdflow.linear_bounds`; ``2 mu`` times that number bounds the
exponential decay rate of the loss gap.
"""
from __future__ import annotations

import math
import time
from typing import List, Optional, Sequence

import numpy as np

from . import _core
from . import linear_bounds as lb
from .linear_bounds import RateBound
from ._checks import generator, positive_int, real_array, real_number
from .options import SolverOptions
from .progress import progress_bar
from .solution import LinearTrajectory, Status, check_outcome, largest_column_norm, trim_records

__all__ = ["DeepLinearFlow", "LinearTrajectory", "RateBound"]  # LinearTrajectory: tdflow.solution

# DeepLinearFlow.integrate's defaults where they differ from SolverOptions()
SOLVER = dict(rtol=1e-10)


def _singular_value(W: np.ndarray, k: int) -> float:
    """The k-th largest singular value (1-based) of W, 0 when k exceeds min(W.shape)."""
    if k > min(W.shape):
        return 0.0
    return float(np.linalg.svd(W, compute_uv=False)[k - 1])


class DeepLinearFlow:
    """Gradient flow on ``L(W_1, ..., W_L) = f(W_1 W_2 ⋯ W_L)``.

    Parameters
    ----------
    Y : array, shape ``(n_0, n_L)`` or ``(N, n_L)``
        The target of the factorisation ``f = 1/2 ||Y - W||_F^2`` (shape ``(n_0, n_L)``), or
        with ``X`` the responses of the regression ``f = 1/2 ||Y - X W||_F^2`` (``(N, n_L)``).
    hidden : sequence of int
        Hidden widths ``(n_1, ..., n_{L-1})``; ``()`` is a single layer, ``(h,)`` two layers.
    X : array, shape ``(N, n_0)``, optional
        The regression design; without it the loss is the factorisation loss.

    Layers are lists of float64 arrays, ``layers[l-1]`` of shape ``(n_{l-1}, n_l)``. The C++ core
    works on a packed ``P x L`` array (:meth:`pack` / :meth:`unpack`, :attr:`packed_shape`):
    column l holds the column-major entries of ``W_l`` followed by zeros,
    ``P = max_l n_{l-1} n_l``. One column per layer lets the adaptive stepper control each layer's
    error relative to that layer's own norm.

    Attributes: ``dims = (n_0, ..., n_L)``, ``depth`` (L), ``regression``, ``X``, ``Y``, and
    ``mu``, ``K``: the strong-convexity and smoothness constants of f (1 and 1 for the
    factorisation; ``lambda_min(X^T X)``, ``lambda_max(X^T X)`` for the regression).
    """

    def __init__(self, Y, hidden: Sequence[int] = (), *, X=None):
        if isinstance(hidden, (int, np.integer)):
            raise TypeError("hidden must be a sequence of widths, e.g. (h,) for two layers")
        try:
            hidden = [positive_int(h, "hidden width") for h in hidden]
        except TypeError as err:
            raise TypeError(f"hidden must be a sequence of positive integers: {err}") from None
        self.regression = X is not None
        if self.regression:
            self.X = real_array(X, "X", 2)
            if min(self.X.shape) < 1:
                raise ValueError(f"X must be N x n_0 with N, n_0 >= 1, got {self.X.shape}")
            self.Y = real_array(Y, "Y", 2, (self.X.shape[0], None))
            n0 = self.X.shape[1]
        else:
            self.X = None
            self.Y = real_array(Y, "Y", 2)
            n0 = self.Y.shape[0]
        if min(self.Y.shape) < 1:
            raise ValueError(f"Y must have at least one row and column, got {self.Y.shape}")
        self.dims = tuple([n0] + hidden + [self.Y.shape[1]])
        self._core = _core.DeepLinearFlow(list(self.dims), self.Y, self.X)
        if self.regression:
            eig = np.linalg.eigvalsh(self.X.T @ self.X)
            self.mu, self.K = max(float(eig[0]), 0.0), float(eig[-1])
        else:
            self.mu = self.K = 1.0
        self._shapes = [(self.dims[i], self.dims[i + 1]) for i in range(self.depth)]

    def __getstate__(self):
        # the compiled core object does not pickle: rebuild it from the arguments
        return dict(Y=self.Y, hidden=list(self.dims[1:-1]), X=self.X)

    def __setstate__(self, state):
        self.__init__(state["Y"], state["hidden"], X=state["X"])

    @property
    def depth(self) -> int:
        """The number of layers L."""
        return len(self.dims) - 1

    @property
    def W_star(self) -> np.ndarray:
        """The minimiser of f (the minimum-norm least-squares solution for a regression)."""
        return np.array(self._core.W_star)

    @property
    def f_star(self) -> float:
        """``min_W f(W)`` (0 for the factorisation loss)."""
        return float(self._core.f_star)

    @property
    def size(self) -> int:
        """The number of parameters ``sum_l n_{l-1} n_l``."""
        return int(sum(r * c for r, c in self._shapes))

    @property
    def packed_shape(self) -> tuple:
        """``(P, L)``, the shape of a packed state."""
        return (int(self._core.rows), self.depth)

    # -- layers ---------------------------------------------------------------------------
    def _layers(self, layers, name="layers") -> List[np.ndarray]:
        if isinstance(layers, np.ndarray) or not isinstance(layers, (list, tuple)):
            raise TypeError(f"{name} must be a list of {self.depth} arrays of shapes {self._shapes}")
        if len(layers) != self.depth:
            raise ValueError(f"{name} must hold {self.depth} layers of shapes {self._shapes}, got {len(layers)}")
        return [real_array(W, f"{name}[{i}]", 2, s) for i, (W, s) in enumerate(zip(layers, self._shapes))]

    def pack(self, layers) -> np.ndarray:
        """The packed ``P x L`` state (Fortran order): column l is ``vec(W_l)``, zero-padded."""
        theta = np.zeros(self.packed_shape, order="F")
        for l, W in enumerate(self._layers(layers)):
            theta[: W.size, l] = W.ravel(order="F")
        return theta

    def unpack(self, theta) -> List[np.ndarray]:
        """Layers from a packed state of shape :attr:`packed_shape`."""
        theta = real_array(theta, "theta", 2, self.packed_shape)
        return [theta[: r * c, l].reshape((r, c), order="F").copy()
                for l, (r, c) in enumerate(self._shapes)]

    def random_layers(self, rng, scale: float = 1.0) -> List[np.ndarray]:
        """Layers with i.i.d. ``N(0, scale^2)`` entries (``rng``: Generator or integer seed)."""
        rng = generator(rng)
        scale = real_number(scale, "scale", minimum=0.0)
        return [scale * rng.standard_normal(s) for s in self._shapes]

    def product(self, layers) -> np.ndarray:
        """``W = W_1 W_2 ... W_L`` (n_0 x n_L)."""
        layers = self._layers(layers)
        W = layers[0]
        for M in layers[1:]:
            W = W @ M
        return W

    def loss(self, layers) -> float:
        """``f(W_1 ... W_L)``."""
        W = self.product(layers)
        R = self.Y - (self.X @ W if self.regression else W)
        return 0.5 * float(np.sum(R * R))

    def gap(self, layers) -> float:
        """``f(W) - f*``, computed as ``1/2 ||X (W - W*)||^2`` (or ``1/2 ||W - Y||^2``)."""
        E = self.product(layers) - self.W_star
        if self.regression:
            E = self.X @ E
        return 0.5 * float(np.sum(E * E))

    def rhs(self, layers) -> List[np.ndarray]:
        """``-grad L``, layer by layer (computed by the C++ core)."""
        return self.unpack(self._core.rhs(self.pack(layers)))

    def imbalances(self, layers) -> List[np.ndarray]:
        """``D_l = W_l^T W_l - W_{l+1} W_{l+1}^T`` for ``l = 1, ..., L-1`` (each n_l x n_l)."""
        layers = self._layers(layers)
        return [A.T @ A - B @ B.T for A, B in zip(layers[:-1], layers[1:])]

    def _imbalance_scale(self, layers) -> np.ndarray:
        return np.array([np.linalg.norm(A.T @ A) + np.linalg.norm(B @ B.T)
                         for A, B in zip(layers[:-1], layers[1:])])

    def ntk_min_eig(self, layers) -> float:
        """``lambda_min`` of ``T_W(E) = sum_l A_l A_l^T E B_l^T B_l`` (with ``A_1 = I``,
        ``B_L = I``), formed as an ``(n_0 n_L)``-square matrix: for small models only."""
        layers = self._layers(layers)
        n0, nL = self.dims[0], self.dims[-1]
        M = np.zeros((n0 * nL, n0 * nL))
        for l in range(self.depth):
            A = np.eye(n0)
            for W in layers[:l]:
                A = A @ W
            B = np.eye(nL)
            for W in reversed(layers[l + 1:]):
                B = W @ B
            # vec(P E Q) = (Q^T kron P) vec(E), column-major vec
            M += np.kron(B.T @ B, A @ A.T)
        return float(np.linalg.eigvalsh(0.5 * (M + M.T))[0])

    # -- rate bounds ----------------------------------------------------------------------
    def margin(self, layers0, k: Optional[int] = None) -> float:
        """``nu_k = [sigma_k(W*) - sqrt(K/mu) ||W(0) - W*||_F]_+`` (Min, Vidal, Mallada 2023, eq. 10
        and Lemma B.1; ``k`` defaults to min(n_0, n_L), the paper's "margin"): a lower bound on
        ``sigma_k(W(t))`` for all t along the flow from ``layers0``, since f decreases and
        ``mu/2 ||W - W*||^2 <= f(W) - f* <= K/2 ||W - W*||^2``. ``sigma_k = 0`` for k > min(n_0, n_L);
        0 when mu = 0."""
        k = min(self.dims[0], self.dims[-1]) if k is None else positive_int(k, "k")
        return self._margin(self.product(layers0), k)

    def _margin(self, W, k: int) -> float:  # margin() from the product W of validated layers
        if self.mu <= 0:
            return 0.0
        dist = float(np.linalg.norm(W - self.W_star))
        return max(_singular_value(self.W_star, k) - math.sqrt(self.K / self.mu) * dist, 0.0)

    def rate_bound(self, layers, *, at_state: bool = False) -> RateBound:
        """The tightest proven lower bound on the decay rate of ``L(t) - f*`` along the flow.

        ``rate = gamma * alpha`` with ``gamma = 2 mu`` (f is mu-strongly convex, so PL holds with
        ``gamma = 2 mu``; Min, Vidal, Mallada 2023 ("MVM") eqs. 5-7) and ``alpha <= lambda_min(T_W(t))``
        for every t. Each statement below that applies is evaluated (``candidates``: name ->
        alpha); the largest is returned, ``kind`` names it and ``statement`` cites it. The
        definitions and the statements are the functions of :mod:`tdflow.linear_bounds`.

        * ``"single-layer"`` (L = 1): T is the identity, ``alpha = 1``.
        * ``"two-layer"`` (L = 2, any widths): MVM Theorem 1 / Lemma 3 (slides: Proposition 2),
          :func:`~tdflow.linear_bounds.two_layer_alpha`, in the version that holds (1/2 x the
          slides' pairing of Delta_+ with sigma_m). For scalars it is ``sqrt(d^2 + 4 w^2)``.
        * ``"scalar-multilayer"`` (all widths 1, L >= 3): the slides' Proposition 1 (Theorem 3
          on the sorted layers, Lemma I.2); it is never below the two statements that follow.
        * ``"three-layer"`` (L = 3, any widths): MVM Theorem 2 / Corollary 1,
          ``Delta*(D21, D23)`` (:func:`~tdflow.linear_bounds.three_layer_alpha`).
        * ``"deep-unimodal"`` (L >= 3, unimodal imbalance, Definition 3): MVM Theorem 3,
          the product of the cumulative imbalances; ``"deep-unimodal-homogeneous"`` when every
          ``D_l = d_l I``: Theorem 3's ``sqrt(prod^2 + (L sigma_min^(2-2/L))^2)`` (Corollary 2).

        Singular values of ``W(t)`` enter through the margins ``nu_k`` of :meth:`margin`
        (uniform in t) or, with ``at_state=True``, through ``sigma_k(W)`` of ``layers`` itself (a
        bound on the instantaneous rate at that state only). Unimodality and homogeneity are
        checked up to ``1e-12 (||W_l||_F^2 + ||W_{l+1}||_F^2)`` (rounding of D_l). Deeper matrix
        models without unimodal imbalance raise ValueError: the paper proves no bound there.
        The bound tdflow had before (extreme eigenvalues of D, its own statement) is gone: on
        random draws it never exceeded Theorem 1.
        """
        layers = self._layers(layers)
        n, m = self.dims[0], self.dims[-1]
        def overflow() -> ValueError:  # built only when raised: it scans every layer
            return ValueError(f"layers: the product, the imbalances or the bounds' squares of them "
                              f"overflow float64 (largest entry "
                              f"{max(float(np.abs(M).max()) for M in layers):.3g}); no rate bound "
                              f"can be computed")
        with np.errstate(over="ignore", invalid="ignore"):
            W, Ds = self.product(layers), self.imbalances(layers)
            scales = [float(np.sum(A * A) + np.sum(B * B)) for A, B in zip(layers[:-1], layers[1:])]
        if not (np.all(np.isfinite(W)) and all(np.all(np.isfinite(D)) for D in Ds)
                and np.all(np.isfinite(scales))):
            raise overflow()

        def sigma(k: int) -> float:
            return _singular_value(W, k) if at_state else self._margin(W, k)

        try:
            with np.errstate(over="ignore", invalid="ignore"):
                cands, info = self._bound_candidates(layers, Ds, scales, sigma)
        except OverflowError:  # a Python float power past 1e308
            raise overflow() from None
        if not cands:
            raise ValueError(
                f"no rate bound of Min, Vidal, Mallada applies to dims {self.dims}: with L >= 4 "
                f"matrix layers Theorem 3 needs unimodal imbalances (D_l >= 0 for l < l*, <= 0 after)")
        cands = {k: a for k, a in cands.items() if math.isfinite(a)}  # squares of D past 1e154
        if not cands:
            raise overflow()
        kind = max(cands, key=cands.get)  # the first of the largest, in the order above
        alpha = max(cands[kind], 0.0)
        return RateBound(2 * self.mu * alpha, alpha, self.mu, self.K, sigma(min(n, m)), kind,
                         info, lb.FORMULAS[kind], lb.STATEMENTS[kind], cands)

    def _bound_candidates(self, layers, Ds, scales, sigma):
        """alpha of every statement that applies (see :meth:`rate_bound`), and the quantities."""
        L, n, m = self.depth, self.dims[0], self.dims[-1]
        cands, info = {}, {}
        if L == 1:
            cands["single-layer"] = 1.0
        elif L == 2:
            D = Ds[0]
            s_n, s_m = sigma(n), sigma(m)
            cands["two-layer"] = lb.two_layer_alpha(D, n, m, s_n, s_m)
            info.update(delta_plus=lb.delta_plus(D, n), delta_minus=lb.delta_minus(D, m),
                        delta_gap=lb.delta_gap(D, n, m), sigma_n=s_n, sigma_m=s_m)
        else:
            scalar = all(dim == 1 for dim in self.dims)
            if scalar:  # Theorem 3 on the sorted layers: the deep-unimodal statement adds nothing
                w = [float(M[0, 0]) for M in layers]
                cands["scalar-multilayer"] = lb.scalar_alpha(w, sigma(1))
                info.update(cumulative_sorted=lb.scalar_cumulative_imbalance(w))
            if L == 3:
                deltas = lb.three_layer_deltas(-Ds[0], Ds[1], n, m)
                cands["three-layer"] = lb.delta_star(*deltas)
                info.update(zip(("Delta21", "Delta21_2", "Delta23", "Delta23_2"), deltas))
            stars = [] if scalar else lb.unimodal_indices(Ds, 1e-12, scales)
            if stars:
                homogeneous = lb.is_homogeneous(Ds, 1e-12, scales)
                s_min = sigma(max(n, m)) if homogeneous else None  # sigma_k = 0 past min(n, m)
                alphas = [lb.deep_unimodal_alpha(Ds, ls, n, m, s_min) for ls in stars]
                best = int(np.argmax(alphas))
                cands["deep-unimodal-homogeneous" if homogeneous else "deep-unimodal"] = alphas[best]
                info.update(l_star=stars[best],
                            cumulative=lb.cumulative_imbalance(Ds, stars[best], n, m))
        return cands, info

    # -- integration ----------------------------------------------------------------------
    def integrate(self, layers0, t_span: Sequence[float] = (0.0, 1.0), *,
                  options: Optional[SolverOptions] = None, save_products: bool = True,
                  save_imbalances: bool = True, save_states: bool = False,
                  progress: Optional[bool] = None, **solver) -> LinearTrajectory:
        """Integrate ``dW_l/dt = -dL/dW_l`` from ``layers0`` over ``t_span = (t0, t1)``.

        ``options`` (a :class:`SolverOptions`) and the solver keywords as in
        :meth:`GradientFlow.integrate`, with ``rtol = 1e-10`` by default (:data:`SOLVER`):
        ``"dopri5"`` (adaptive Dormand-Prince 5(4), error ``<~ atol + rtol ||W_l||`` for each
        layer; ``h`` = first step, None: automatic), ``"dop853"`` (order 8, same control),
        ``"tsit5"`` (Tsitouras 5(4), same control), or fixed-step ``"rk4"`` / ``"euler"`` with
        step ``h`` (required). Records the loss, the gap
        ``f - f*``, ``||grad L||^2`` and, by default, the product ``W(t)`` and the imbalances
        ``D_l(t)``. As in SciPy's ``solve_ivp`` the run covers all of ``t_span`` even when
        ``t_eval`` ends earlier (the final layers are those of ``t1``).

        Raises IntegrationError on NaN/Inf or a collapsed adaptive step (the partial trajectory
        is ``err.trajectory``); a KeyboardInterrupt carries it too.
        """
        opts = SolverOptions.resolve(options, solver, SOLVER, where="integrate")
        layers0 = self._layers(layers0, "layers0")
        theta0 = self.pack(layers0)
        t0, t1, t_eval, n_rec = opts.grid(t_span)

        start = time.perf_counter()
        with progress_bar(t0, t1, enabled=progress, desc=f"{opts.method} linear L={self.depth}") as update:
            raw = self._core.integrate(
                theta0, t0, t_eval, *opts.stepping(), bool(save_products), bool(save_imbalances),
                bool(save_states), update, 0.1,
            )
        trim_records(raw, n_rec)
        with np.errstate(over="ignore", invalid="ignore"):  # inf for a start that overflows
            scale = self._imbalance_scale(layers0)
        imbalances = None
        if save_imbalances:
            flat, imbalances, k = raw["imbalances"], [], 0
            for nl in self.dims[1:-1]:
                block = flat[:, k:k + nl * nl]
                imbalances.append(block.reshape(-1, nl, nl).transpose(0, 2, 1).copy())
                k += nl * nl
        traj = LinearTrajectory(
            t=raw["t"], loss=raw["loss"], gap=raw["gap"], grad_norm_sq=raw["grad_norm_sq"],
            layers=self.unpack(raw["theta"]), f_star=self.f_star,
            imbalance_scale=scale, products=raw.get("products"),
            imbalances=imbalances, states=raw.get("states"), status=Status(raw["status"]),
            t_final=raw["t_final"], method=opts.method, n_steps=raw["n_steps"], n_rhs=raw["n_rhs"],
            n_rejected=raw["n_rejected"], wall_time=time.perf_counter() - start,
        )
        check_outcome(traj, raw["error"], **self._diagnosis(traj, raw))
        return traj

    def _diagnosis(self, traj: LinearTrajectory, raw: dict) -> dict:
        """What check_outcome says about a run that failed in the core (NaN/Inf, tiny step)."""
        if raw.get("error") is not None or traj.status not in (Status.NON_FINITE, Status.STEP_TOO_SMALL):
            return {}
        overflows = False
        if traj.status == Status.NON_FINITE:
            try:
                self._core.rhs(raw["theta"])
            except ValueError:
                overflows = True
        return dict(h_last=raw.get("h_last"), rhs_overflows=overflows,
                    size=f"largest layer norm {largest_column_norm(raw['theta']):.3g}",
                    growth=f"it grows like ||W_l||^{2 * self.depth - 1}")
