"""Property: random bad arrays fed to the core's entry points (GradientFlow, CPTensor,
DeepLinearFlow) give a clear error or the right answer, never a hang, a crash or NaN.

Each example takes a valid argument and spoils it one way. NaN/Inf, complex, object and string
data and an extra dimension must raise ValueError/TypeError; a copy in another layout, order or
real dtype (C order, strided, int, bool, float32, zeros, tiny values) must give bitwise the
result of the plain float64 Fortran array; a huge (1e300), empty, reduced or shortened argument
may raise ValueError/TypeError/IntegrationError, and otherwise must give a finite result. Every
example runs under a hang guard (tests/isolation.py): a hang aborts the run with tracebacks.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import tdflow
from isolation import hang_guard, hang_report  # noqa: F401 (fixture)

MUST_RAISE = ("nan", "inf", "-inf", "complex", "object", "str", "extra_dim")
SAME = ("c_order", "strided", "int", "bool", "float32", "zero", "tiny")
EITHER = ("huge", "empty", "fewer_dims", "fewer_rows")
ALLOWED = (ValueError, TypeError, tdflow.IntegrationError)


def spoil(base: np.ndarray, kind: str, rng: np.random.Generator):
    """``base`` spoilt one way."""
    x = np.array(base, dtype=float, order="F")
    if kind in ("nan", "inf", "-inf", "huge"):
        flat = x.reshape(-1, order="F")
        flat[rng.integers(flat.size)] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf,
                                         "huge": 1e300}[kind]
        return flat.reshape(x.shape, order="F")
    return {
        "complex": lambda: x + 0j,
        "object": lambda: x.astype(object),
        "str": lambda: x.astype(str),
        "extra_dim": lambda: x[None],
        "c_order": lambda: np.ascontiguousarray(x),
        "strided": lambda: np.repeat(x, 2, axis=-1)[..., ::2],
        "int": lambda: np.round(3 * x).astype(np.int64),
        "bool": lambda: x > 0,
        "float32": lambda: x.astype(np.float32),
        "zero": lambda: np.zeros_like(x),
        "tiny": lambda: x * 1e-300,
        "empty": lambda: x[:0],
        "fewer_dims": lambda: x[0],
        "fewer_rows": lambda: x[:-1],
    }[kind]()


def numbers(result) -> list:
    """The arrays in a result (trajectories: state, times, losses)."""
    if isinstance(result, (list, tuple)):
        return [a for r in result for a in numbers(r)]
    if isinstance(result, tdflow.Trajectory):
        return [result.W, result.t, result.loss, result.directional_residual]
    if isinstance(result, tdflow.LinearTrajectory):
        return [*result.layers, result.t, result.loss]
    return [np.asarray(result, dtype=float)]


def outcome(call):
    try:
        return "ok", numbers(call())
    except ALLOWED as err:
        return "error", err


def check(call, base, kind, rng, report_fd):
    """The property for one entry point `call(argument)` and one spoilt argument."""
    bad = spoil(base, kind, rng)
    with hang_guard(report_fd):
        got, value = outcome(lambda: call(bad))
        if kind in MUST_RAISE:
            assert got == "error" and isinstance(value, (ValueError, TypeError)), (kind, value)
            return
        if got == "ok":
            for a in value:
                assert np.all(np.isfinite(a)), (kind, value)
        if kind in SAME:
            plain = np.asfortranarray(np.asarray(bad, dtype=float))
            want, wvalue = outcome(lambda: call(plain))
            assert got == want, (kind, value, wvalue)
            if got == "ok":
                for a, b in zip(value, wvalue):
                    np.testing.assert_array_equal(a, b)
            else:
                assert type(value) is type(wvalue)


every_kind = pytest.mark.parametrize("kind", MUST_RAISE + SAME + EITHER)
seeds = st.integers(0, 2**32 - 1)


def _flow():
    target = tdflow.Target.random_unit(3, [1.0, 0.5], np.random.default_rng(0))
    return tdflow.GradientFlow(target, lam=0.01)


FLOW = _flow()
FLOW_CALLS = {
    "rhs": FLOW.rhs,
    "loss": FLOW.loss,
    "residual_norm": FLOW.residual_norm,
    "directional_residual": FLOW.directional_residual,
    "integrate rk4": lambda W: FLOW.integrate(W, (0, 0.5), method="rk4", h=0.1, n_records=3),
    "integrate dopri5": lambda W: FLOW.integrate(W, (0, 0.5), n_records=3),
    "integrate dop853": lambda W: FLOW.integrate(W, (0, 0.5), method="dop853", n_records=3),
}


@every_kind
@given(name=st.sampled_from(sorted(FLOW_CALLS)), seed=seeds)
def test_gradient_flow_bad_states(kind, name, seed, hang_report):
    rng = np.random.default_rng(seed)
    base = 0.5 * rng.standard_normal((3, 4))
    check(FLOW_CALLS[name], base, kind, rng, hang_report)


@every_kind
@given(seed=seeds)
def test_integrate_batch_bad_states(kind, seed, hang_report):
    rng = np.random.default_rng(seed)
    base = 0.5 * rng.standard_normal((2, 3, 4))
    check(lambda W0s: FLOW.integrate_batch(W0s, (0, 0.5), n_records=3), base, kind, rng,
          hang_report)


Z0 = np.array([[1.0, 0.2], [0.0, 0.9], [0.3, -0.4]])
C0 = np.array([1.0, -0.5])
V0 = np.array([[0.2, 1.0, -0.3], [0.5, 0.1, 0.8], [-0.1, 0.4, 0.6]])
T0 = tdflow.CPTensor(Z0, C0)


def _weights(Z):
    return np.linspace(1.0, 0.5, np.shape(Z)[-1])


# argument name -> (shape of a valid argument, the call)
CP_CALLS = {
    "CPTensor(Z).norm": ((3, 2), lambda Z: tdflow.CPTensor(Z, _weights(Z)).norm()),
    "CPTensor(c).contract": ((2,), lambda c: tdflow.CPTensor(Z0, c).contract(V0)),
    "contract V": ((3, 3), T0.contract),
    "evaluate V": ((3, 3), T0.evaluate),
    "contract_mixed U": ((3, 3), lambda U: T0.contract_mixed(V0, U)),
    "inner Z": ((3, 4), lambda Z: T0.inner(tdflow.CPTensor(Z, _weights(Z)))),
}


@every_kind
@given(name=st.sampled_from(sorted(CP_CALLS)), seed=seeds)
def test_cp_tensor_bad_arguments(kind, name, seed, hang_report):
    rng = np.random.default_rng(seed)
    shape, call = CP_CALLS[name]
    check(call, rng.standard_normal(shape), kind, rng, hang_report)


LIN = tdflow.DeepLinearFlow(np.array([[2.0, 0.5], [0.0, 1.0], [0.3, -0.2]]), (2,))
LAYERS = LIN.random_layers(0, 0.5)


def _fit(Y):
    """A deep linear flow towards Y, integrated from a fixed start of the matching shape."""
    lin = tdflow.DeepLinearFlow(Y, (2,))
    n0, nL = lin.dims[0], lin.dims[-1]
    return lin.integrate([np.full((n0, 2), 0.3), np.full((2, nL), 0.3)], (0, 0.5), n_records=3)


LIN_CALLS = {
    "Y": _fit,
    "rhs": lambda W: LIN.rhs([W, LAYERS[1]]),
    "integrate": lambda W: LIN.integrate([W, LAYERS[1]], (0, 0.5), n_records=3),
}


@every_kind
@given(name=st.sampled_from(sorted(LIN_CALLS)), seed=seeds)
def test_deep_linear_bad_arguments(kind, name, seed, hang_report):
    rng = np.random.default_rng(seed)
    base = LIN.Y if name == "Y" else LAYERS[0]
    check(LIN_CALLS[name], base, kind, rng, hang_report)
